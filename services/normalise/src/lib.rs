//! normalise: raw HL7 v2 (`hl7v2.raw.v1`) and raw FHIR R4 (`fhir.raw.v1`) to canonical clinical
//! events (`clinical.normalised.v1`), each also as a FHIR R4 Bundle (`fhir.bundles.v1`).
//!
//! Guarantees: a message whose event id was already normalised (a resend after a lost ACK, a
//! replay) is skipped, because every event id produced is also written to the compacted
//! `normalise.seen.v1` in the same transaction, and that topic is read back at start-up. A
//! message that cannot be normalised goes to `deadletter.normalise.v1` with a bounded code.

// the mappers live in sluice-mapping; these are the paths the workspace knows them by
pub use sluice_mapping::fhir_in;
pub use sluice_mapping::fhir_out as fhir;
pub use sluice_mapping::v2 as mapping;
pub use sluice_mapping::v2::results;

use serde::{Deserialize, Serialize};
use sluice_hl7::Message;
use sluice_model::topology::names;
use sluice_model::{RawMessage, SeenEvent};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
use std::collections::HashSet;
use std::sync::Arc;

pub const SERVICE: &str = "normalise";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
}

pub struct Normaliser {
    store: Arc<SchemaStore>,
    seen: HashSet<String>,
    pending: HashSet<String>,
}

impl Normaliser {
    pub fn new(store: Arc<SchemaStore>, seen: HashSet<String>) -> Normaliser {
        Normaliser {
            store,
            seen,
            pending: HashSet::new(),
        }
    }

    fn reject(code: &'static str, detail: String) -> Outcome {
        Outcome::Reject { code, detail }
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
        let events = if input.topic == names::FHIR_RAW {
            match fhir_in::map_body(&raw, &pos) {
                Ok(evs) => evs.into_iter().map(|ev| (fhir_in::source_patient_key(&ev), ev)).collect(),
                Err(r) => return Self::reject(r.code, r.detail),
            }
        } else {
            let msg = Message::parse(&raw.payload);
            if let Some(p) = msg.fatal_problem() {
                return Self::reject(p.code.as_str(), p.to_string());
            }
            vec![(sluice_model::ids::source_patient_key(&msg), mapping::map_message(&msg, &raw, &pos))]
        };
        let mut outputs = Vec::new();
        let mut ids = Vec::new();
        for (key, event) in events {
            if self.seen.contains(&event.event_id) || self.pending.contains(&event.event_id) {
                continue;
            }
            let seen = SeenEvent {
                event_id: event.event_id.clone(),
                raw_id: raw.raw_id.clone(),
                first_seen_at: ctx.now_micros,
            };
            let fhir = sluice_model::FhirBundle {
                event_id: event.event_id.clone(),
                kind: event.kind.clone(),
                fhir_version: "4.0.1".into(),
                bundle: crate::fhir::bundle(&event).to_string(),
            };
            let (Ok(ev_bytes), Ok(seen_bytes), Ok(fhir_bytes)) = (
                self.store.encode(names::NORMALISED, &event),
                self.store.encode(names::SEEN, &seen),
                self.store.encode(names::FHIR, &fhir),
            ) else {
                return Self::reject("avro_encode_failed", "canonical event could not be encoded".into());
            };
            ids.push(event.event_id.clone());
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
        if outputs.is_empty() {
            return Outcome::Skip("duplicate_event");
        }
        self.pending.extend(ids);
        Outcome::Emit(outputs)
    }

    fn committed(&mut self) {
        self.seen.extend(self.pending.drain());
    }

    fn aborted(&mut self) {
        self.pending.clear();
    }
}

/// Reads the event ids already normalised back from `normalise.seen.v1`.
pub fn load_seen(cfg: &RuntimeConfig) -> anyhow::Result<HashSet<String>> {
    let mut seen = HashSet::new();
    let mut bad = 0u64;
    sluice_runtime::state::read_topic(&cfg.kafka, names::SEEN, |key, value| match (key, value) {
        (Some(k), Some(_)) => {
            seen.insert(String::from_utf8_lossy(k).into_owned());
        }
        _ => bad += 1,
    })?;
    if bad > 0 {
        tracing::warn!(records = bad, "seen-event records without key or value ignored");
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
        move |store, _| {
            let seen = load_seen(&rt)?;
            Ok(Normaliser::new(store, seen))
        },
    )
    .await
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}
