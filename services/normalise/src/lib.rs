//! normalise: raw HL7 v2 (`hl7v2.raw.v1`) and raw FHIR R4 (`fhir.raw.v1`) to canonical clinical
//! events (`clinical.normalised.v1`), each also as a FHIR R4 Bundle (`fhir.bundles.v1`).
//!
//! Guarantees: a message already normalised (a resend after a lost ACK, a replay) is skipped only
//! when it is the same message, same identity and same content (see [`dedup`]); a control id
//! reused for different content is kept as its own event and flagged. Every event id produced is
//! also written to the compacted `normalise.seen.v1` in the same transaction, and that topic is
//! read back at start-up. A message that cannot be normalised goes to `deadletter.normalise.v1`
//! with a bounded code.

// the mappers live in sluice-mapping; these are the paths the workspace knows them by
pub use sluice_mapping::fhir_in;
pub use sluice_mapping::fhir_out as fhir;
pub use sluice_mapping::v2 as mapping;
pub use sluice_mapping::v2::results;

pub mod dedup;
pub mod metrics;

use dedup::{Seen, Verdict};
use serde::{Deserialize, Serialize};
use sluice_hl7::Message;
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, RawMessage, SeenEvent};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
use std::sync::Arc;

pub const SERVICE: &str = "normalise";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
}

pub struct Normaliser {
    store: Arc<SchemaStore>,
    /// Where to read the seen-events again when partitions move here from another instance.
    reload: Option<(RuntimeConfig, tokio::runtime::Handle)>,
    seen: Seen,
    pending: Seen,
    /// What the open transaction skipped or flagged, logged and counted once it commits.
    tally: Vec<Note>,
}

/// A skip or a flag of the open transaction: its kind, source format and the event id involved.
#[derive(Debug, Clone)]
struct Note {
    verdict: Verdict,
    source: &'static str,
    event_id: String,
    raw_id: String,
}

impl Normaliser {
    pub fn new(store: Arc<SchemaStore>, seen: Seen) -> Normaliser {
        Normaliser {
            store,
            reload: None,
            seen,
            pending: Seen::default(),
            tally: Vec::new(),
        }
    }

    /// Reads `normalise.seen.v1` again whenever the group gives this instance partitions after
    /// a rebalance: another instance may have normalised (and recorded) messages of those
    /// partitions since this one started, and a resend of one of them must still be skipped.
    pub fn reloading_from(mut self, cfg: RuntimeConfig, handle: tokio::runtime::Handle) -> Normaliser {
        self.reload = Some((cfg, handle));
        self
    }

    fn reject(code: &'static str, detail: String) -> Outcome {
        Outcome::Reject { code, detail }
    }

    /// The events of one raw record with their Kafka keys, or why it cannot be normalised.
    fn events_of(raw: &RawMessage, pos: &mapping::RawPosition, fhir: bool) -> Result<Vec<(Vec<u8>, ClinicalEvent)>, Outcome> {
        if fhir {
            return match fhir_in::map_body(raw, pos) {
                Ok(evs) => Ok(evs.into_iter().map(|ev| (fhir_in::source_patient_key(&ev), ev)).collect()),
                Err(r) => Err(Self::reject(r.code, r.detail)),
            };
        }
        let msg = Message::parse(&raw.payload);
        if let Some(p) = msg.fatal_problem() {
            return Err(Self::reject(p.code.as_str(), p.to_string()));
        }
        // one event per patient: the first keyed as the message (so its order with the patient's
        // other messages holds), each further patient by its own identifier
        let first_key = sluice_model::ids::source_patient_key(&msg);
        Ok(mapping::map_message(&msg, raw, pos)
            .into_iter()
            .enumerate()
            .map(|(n, ev)| {
                let key = if n == 0 {
                    first_key.clone()
                } else {
                    fhir_in::source_patient_key(&ev)
                };
                (key, ev)
            })
            .collect())
    }
}

impl Processor for Normaliser {
    fn process(&mut self, input: &Input<'_>, ctx: &Context) -> Outcome {
        let raw: RawMessage = match self.store.decode(input.value) {
            Ok(r) => r,
            Err(e) => return Self::reject(e.code(), "raw record could not be decoded".into()),
        };
        let pos = mapping::RawPosition {
            topic: input.topic.to_owned(),
            partition: input.partition,
            offset: input.offset,
            replay: input.replay,
        };
        let fhir = input.topic == names::FHIR_RAW;
        let source = if fhir { "fhir" } else { "hl7v2" };
        let events = match Self::events_of(&raw, &pos, fhir) {
            Ok(evs) => evs,
            Err(rejected) => return rejected,
        };
        let mut outputs = Vec::new();
        let mut opened = Seen::default();
        let mut notes = Vec::new();
        for (key, mut event) in events {
            let verdict = self
                .seen
                .verdict(&self.pending, &event.event_id, &event.identity_key, &event.content_digest);
            let verdict = match verdict {
                Verdict::New => opened.verdict(&Seen::default(), &event.event_id, &event.identity_key, &event.content_digest),
                v => v,
            };
            let note = |verdict| Note {
                verdict,
                source,
                event_id: event.event_id.clone(),
                raw_id: raw.raw_id.clone(),
            };
            match verdict {
                Verdict::Resend => {
                    notes.push(note(Verdict::Resend));
                    continue;
                }
                Verdict::ControlIdReused => {
                    notes.push(note(Verdict::ControlIdReused));
                    event.control_id_reused = true;
                    event.warnings.push("control_id_reused".into());
                }
                Verdict::New => {}
            }
            opened.insert(&event.event_id, &event.identity_key, &event.content_digest);
            let seen = SeenEvent {
                event_id: event.event_id.clone(),
                raw_id: raw.raw_id.clone(),
                first_seen_at: ctx.now_micros,
                identity_key: event.identity_key.clone(),
                content_digest: event.content_digest.clone(),
                raw_topic: input.topic.to_owned(),
                raw_partition: input.partition,
                raw_offset: input.offset,
            };
            let Ok(bundle) = crate::fhir::bundle_json(&event) else {
                return Self::reject("fhir_encode_failed", "fhir bundle could not be serialised".into());
            };
            let fhir = sluice_model::FhirBundle {
                event_id: event.event_id.clone(),
                kind: event.kind.clone(),
                fhir_version: "4.0.1".into(),
                bundle,
            };
            let (Ok(ev_bytes), Ok(seen_bytes), Ok(fhir_bytes)) = (
                self.store.encode(names::NORMALISED, &event),
                self.store.encode(names::SEEN, &seen),
                self.store.encode(names::FHIR, &fhir),
            ) else {
                return Self::reject("avro_encode_failed", "canonical event could not be encoded".into());
            };
            outputs.push(Output {
                topic: names::NORMALISED.into(),
                key: key.clone(),
                value: ev_bytes,
            });
            outputs.push(Output {
                topic: names::FHIR.into(),
                key,
                value: fhir_bytes,
            });
            outputs.push(Output {
                topic: names::SEEN.into(),
                key: event.event_id.into_bytes(),
                value: seen_bytes,
            });
        }
        self.tally.extend(notes);
        if outputs.is_empty() {
            return Outcome::Skip("resend");
        }
        self.pending.absorb(opened);
        Outcome::Emit(outputs)
    }

    fn committed(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.seen.absorb(pending);
        let m = metrics::metrics();
        for n in self.tally.drain(..) {
            match n.verdict {
                Verdict::Resend => {
                    m.resends.with_label_values(&[n.source]).inc();
                    tracing::info!(event_id = %n.event_id, raw_id = %n.raw_id, source = n.source, "resend skipped: same message as an event already normalised");
                }
                Verdict::ControlIdReused => {
                    m.control_id_reused.with_label_values(&[n.source]).inc();
                    tracing::warn!(event_id = %n.event_id, raw_id = %n.raw_id, source = n.source, "control id reused for different content: kept as its own event and flagged");
                }
                Verdict::New => {}
            }
        }
    }

    fn reassigned(&mut self) -> anyhow::Result<()> {
        if let Some((cfg, handle)) = &self.reload {
            self.seen = load_seen(cfg, &self.store, handle)?;
            self.pending = Seen::default();
        }
        Ok(())
    }

    fn aborted(&mut self) {
        self.pending = Seen::default();
        self.tally.clear();
    }
}

/// Reads the event ids already normalised back from `normalise.seen.v1`, keeping only those
/// that committed work produced (see [`Seen::trusts`]).
pub fn load_seen(cfg: &RuntimeConfig, store: &SchemaStore, handle: &tokio::runtime::Handle) -> anyhow::Result<Seen> {
    let mut records = Vec::new();
    let mut bad = 0u64;
    sluice_runtime::state::read_topic(&cfg.kafka, names::SEEN, |key, value| match (key, value) {
        (Some(_), Some(v)) if handle.block_on(store.prefetch(v)).is_ok() => match store.decode::<SeenEvent>(v) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        },
        _ => bad += 1,
    })?;
    if bad > 0 {
        anyhow::bail!("{bad} seen-event records could not be read: refusing to de-duplicate on partial state");
    }
    let inputs = [names::RAW, names::FHIR_RAW];
    let committed = sluice_runtime::state::committed_offsets(&cfg.kafka, &sluice_runtime::group_id(SERVICE), &inputs)?;
    let mut seen = Seen::default();
    let mut untrusted = 0u64;
    for r in &records {
        if Seen::trusts(r, &committed) {
            seen.insert(&r.event_id, &r.identity_key, &r.content_digest);
        } else {
            untrusted += 1;
        }
    }
    if untrusted > 0 {
        tracing::warn!(
            records = untrusted,
            "seen-event records from transactions that never committed ignored"
        );
    }
    tracing::info!(events = seen.len(), "de-duplication state loaded");
    Ok(seen)
}

pub async fn run(cfg: Config, shutdown: Shutdown, health: Health) -> anyhow::Result<()> {
    let rt = cfg.runtime.clone();
    sluice_runtime::stage::run_stage(
        SERVICE,
        vec![names::RAW.into(), names::FHIR_RAW.into()],
        cfg.runtime,
        shutdown,
        health,
        move |store, handle| {
            let seen = load_seen(&rt, &store, &handle)?;
            Ok(Normaliser::new(store, seen).reloading_from(rt.clone(), handle))
        },
    )
    .await
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}
