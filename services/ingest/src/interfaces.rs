//! Per-interface metrics: how much each feed sends and when it last sent, so an SRE can see a
//! feed that has gone quiet.
//!
//! An interface is a sending application and facility (MSH-3 and MSH-4, their first component):
//! system codes, not patient data. Label values are bounded twice over: each is cut to
//! [`MAX_LABEL_CHARS`] characters of `A-Z a-z 0-9 . _ -` (anything else becomes `_`, nothing at
//! all `unknown`), and at most `interfaces.max_labelled` pairs get labels of their own; later
//! ones are counted under `other`/`other`. Configured interfaces (`expected_quiet_secs`) are
//! labelled first. FHIR intake is one interface, `fhir`/`<listener>`.

use serde::{Deserialize, Serialize};
use sluice_runtime::telemetry;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// The longest label value.
pub const MAX_LABEL_CHARS: usize = 40;
/// The label pair of interfaces past the cap.
pub const OTHER: &str = "other";
/// The value of an empty or missing MSH-3 or MSH-4.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterfacesConfig {
    /// At most this many (application, facility) pairs get labels of their own; later ones are
    /// counted under `other`/`other`.
    pub max_labelled: usize,
    /// `APPLICATION^FACILITY` → the longest silence that is normal for that feed, in seconds.
    /// Exported as `sluice_ingest_interface_expected_quiet_seconds`; the `SluiceFeedQuiet` alert
    /// fires when a feed has been silent for longer. In an environment variable:
    /// `SLUICE_INTERFACES__EXPECTED_QUIET_SECS='{"PAS^RGT01"=900,"LAB^RGT01"=300}'`.
    pub expected_quiet_secs: BTreeMap<String, u64>,
}

impl Default for InterfacesConfig {
    fn default() -> Self {
        InterfacesConfig {
            max_labelled: 200,
            expected_quiet_secs: BTreeMap::new(),
        }
    }
}

impl InterfacesConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_labelled == 0 {
            anyhow::bail!("configuration field interfaces.max_labelled is invalid: must be at least 1");
        }
        if self.expected_quiet_secs.len() > self.max_labelled {
            anyhow::bail!("configuration field interfaces.expected_quiet_secs is invalid: more interfaces than interfaces.max_labelled");
        }
        for (key, secs) in &self.expected_quiet_secs {
            let well_formed = key
                .split_once('^')
                .is_some_and(|(a, f)| label(a.as_bytes()) == a && label(f.as_bytes()) == f && a != UNKNOWN);
            if !well_formed {
                anyhow::bail!(
                    "configuration field interfaces.expected_quiet_secs is invalid: keys are APPLICATION^FACILITY, each up to {MAX_LABEL_CHARS} of A-Z a-z 0-9 . _ -"
                );
            }
            if *secs == 0 {
                anyhow::bail!("configuration field interfaces.expected_quiet_secs is invalid: seconds must be at least 1");
            }
        }
        Ok(())
    }
}

/// One label value from a raw MSH-3 or MSH-4 first component.
pub fn label(raw: &[u8]) -> String {
    let s: String = raw
        .iter()
        .take(MAX_LABEL_CHARS)
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => char::from(*b),
            _ => '_',
        })
        .collect();
    if s.is_empty() { UNKNOWN.to_owned() } else { s }
}

pub struct Metrics {
    pub messages: prometheus::IntCounterVec,
    pub last_message: prometheus::IntGaugeVec,
    pub expected_quiet: prometheus::IntGaugeVec,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        messages: telemetry::counter(
            "sluice_ingest_interface_messages_total",
            "messages received per interface (sending application and facility, MSH-3/MSH-4; capped, past the cap `other`), by result (accepted, rejected, failed)",
            &["sending_application", "sending_facility", "result"],
        ),
        last_message: telemetry::gauge(
            "sluice_ingest_interface_last_message_timestamp_seconds",
            "when the interface last sent a message (Unix seconds; for a configured interface not heard from since start-up, the start-up time)",
            &["sending_application", "sending_facility"],
        ),
        expected_quiet: telemetry::gauge(
            "sluice_ingest_interface_expected_quiet_seconds",
            "the longest normal silence of a configured interface (interfaces.expected_quiet_secs): SluiceFeedQuiet fires past it",
            &["sending_application", "sending_facility"],
        ),
    })
}

/// The interfaces one ingest process has labelled.
pub struct Interfaces {
    max: usize,
    labelled: Mutex<HashSet<(String, String)>>,
}

impl Interfaces {
    /// Labels the configured interfaces first and exports their expected silence; their last
    /// message counts from now (a feed that never sends after a restart still alerts).
    pub fn new(cfg: &InterfacesConfig) -> Interfaces {
        let m = metrics();
        let now = now_secs();
        let mut labelled = HashSet::new();
        for (key, secs) in &cfg.expected_quiet_secs {
            if let Some((a, f)) = key.split_once('^') {
                m.expected_quiet
                    .with_label_values(&[a, f])
                    .set(i64::try_from(*secs).unwrap_or(i64::MAX));
                m.last_message.with_label_values(&[a, f]).set(now);
                labelled.insert((a.to_owned(), f.to_owned()));
            }
        }
        Interfaces {
            max: cfg.max_labelled,
            labelled: Mutex::new(labelled),
        }
    }

    /// The label pair of an interface: its own while there is room, else `other`/`other`.
    pub fn labels(&self, application: &[u8], facility: &[u8]) -> (String, String) {
        let pair = (label(application), label(facility));
        let mut known = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        if known.contains(&pair) {
            return pair;
        }
        if known.len() < self.max {
            known.insert(pair.clone());
            return pair;
        }
        (OTHER.to_owned(), OTHER.to_owned())
    }

    /// Counts one message of an interface (labels from [`Interfaces::labels`]).
    pub fn seen(&self, (application, facility): &(String, String), result: &str) {
        let m = metrics();
        m.messages.with_label_values(&[application, facility, result]).inc();
        m.last_message.with_label_values(&[application, facility]).set(now_secs());
    }
}

fn now_secs() -> i64 {
    sluice_runtime::now_micros() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_in_length_characters_and_number() {
        assert_eq!(label(b"PAS"), "PAS");
        assert_eq!(label(b""), UNKNOWN);
        assert_eq!(label(b"A B/C\xff"), "A_B_C_");
        assert_eq!(label(&[b'x'; 100]).len(), MAX_LABEL_CHARS);
        let cfg = InterfacesConfig {
            max_labelled: 3,
            expected_quiet_secs: [("PAS^RGT01".to_owned(), 900)].into(),
        };
        cfg.validate().expect("valid");
        let ifs = Interfaces::new(&cfg);
        assert_eq!(ifs.labels(b"LAB", b"RGT01"), ("LAB".into(), "RGT01".into()));
        assert_eq!(ifs.labels(b"RAD", b"RGT01"), ("RAD".into(), "RGT01".into()));
        // the configured one had the first place; the cap is reached
        assert_eq!(ifs.labels(b"PAS", b"RGT01"), ("PAS".into(), "RGT01".into()));
        assert_eq!(ifs.labels(b"NEW", b"RGT01"), (OTHER.into(), OTHER.into()));
        assert_eq!(
            ifs.labels(b"LAB", b"RGT01"),
            ("LAB".into(), "RGT01".into()),
            "known ones keep theirs"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail decides the closure's type
    fn expected_silences_can_be_given_in_one_variable_as_the_chart_does() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_INTERFACES__EXPECTED_QUIET_SECS", r#"{"PAS^RGT01"=900,"LAB^rgt-2"=60}"#);
            jail.set_env("SLUICE_INTERFACES__MAX_LABELLED", "50");
            let c: crate::Config = sluice_runtime::config::load(None).expect("loads");
            assert_eq!(c.interfaces.max_labelled, 50);
            assert_eq!(
                c.interfaces.expected_quiet_secs,
                [("LAB^rgt-2".to_owned(), 60), ("PAS^RGT01".to_owned(), 900)].into()
            );
            c.interfaces.validate().expect("valid");
            Ok(())
        });
    }

    #[test]
    fn configured_interfaces_are_checked() {
        for bad in ["PAS", "PAS^RG T", "^RGT01", "PAS^RGT01^X"] {
            let cfg = InterfacesConfig {
                expected_quiet_secs: [(bad.to_owned(), 60)].into(),
                ..Default::default()
            };
            assert!(cfg.validate().is_err(), "{bad} was accepted");
        }
        let zero = InterfacesConfig {
            expected_quiet_secs: [("PAS^RGT01".to_owned(), 0)].into(),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }
}
