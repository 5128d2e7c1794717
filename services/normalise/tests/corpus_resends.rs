//! The shared corpus through one normaliser, in manifest order: how many inputs are skipped as
//! resends and how many are flagged as a reused control id, and a check that every skip is a
//! true resend (the same message but for MSH-7 and line endings; for FHIR, the same resources).
//! Prints the figures; runs on any corpus with the documented layout.

#![allow(clippy::unwrap_used)]

use sluice_model::schemas::RecordType;
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, RawMessage};
use sluice_normalise::Normaliser;
use sluice_normalise::dedup::Seen;
use sluice_registry::{RegistryClient, SchemaStore};
use sluice_runtime::processor::{Context, Input, Outcome, Processor};
use std::collections::HashMap;
use std::sync::Arc;

async fn store() -> Arc<SchemaStore> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(sluice_registry::server::serve(listener, std::future::pending::<()>()));
    let store = SchemaStore::new(RegistryClient::new(&format!("http://{addr}"), None).unwrap()).unwrap();
    for (topic, record) in [
        (names::RAW, RecordType::RawMessage),
        (names::FHIR_RAW, RecordType::RawMessage),
        (names::NORMALISED, RecordType::ClinicalEvent),
        (names::SEEN, RecordType::SeenEvent),
        (names::FHIR, RecordType::FhirBundle),
    ] {
        store.register(topic, record).await.unwrap();
    }
    Arc::new(store)
}

/// An HL7 v2 message as a resend may differ from it: MSH-7 blanked, segments joined by CR.
fn resend_form(m: &[u8]) -> Vec<u8> {
    let msg = sluice_hl7::Message::parse(m);
    let mut out = Vec::new();
    for (i, seg) in msg.segments().enumerate() {
        if i == 0 {
            for (n, f) in seg.fields() {
                if n != 7 {
                    out.extend_from_slice(f.raw());
                }
                out.push(b'|');
            }
        } else {
            out.extend_from_slice(seg.raw());
        }
        out.push(b'\r');
    }
    out
}

#[tokio::test]
async fn corpus_resends_and_reused_control_ids_are_counted_and_every_skip_is_a_true_resend() {
    let Some(hl7_files) = sluice_hl7::corpus::hl7v2_files() else {
        return;
    };
    let fhir_files = sluice_hl7::corpus::fhir_files().unwrap_or_default();
    let store = store().await;
    let mut n = Normaliser::new(store.clone(), Seen::default());
    // the first input each event id came from, in the form a resend may differ from it
    let mut first: HashMap<String, Vec<u8>> = HashMap::new();
    let (mut inputs, mut skipped, mut reused) = (0, 0, 0);
    let mut by_topic: std::collections::BTreeMap<(String, &str), usize> = std::collections::BTreeMap::new();
    let mut offset = 0i64;
    let mut feed = |topic: &str, payload: &[u8], form: Vec<u8>| {
        let raw = RawMessage {
            raw_id: sluice_model::ids::sha256_hex(payload),
            payload: payload.to_vec(),
            ..Default::default()
        };
        let value = store.encode(topic, &raw).unwrap();
        offset += 1;
        let input = Input {
            topic,
            partition: 0,
            offset,
            key: None,
            value: &value,
            replay: false,
        };
        let out = n.process(&input, &Context { now_micros: 1 });
        n.committed();
        inputs += 1;
        match out {
            Outcome::Emit(outputs) => {
                for o in outputs.iter().filter(|o| o.topic == names::NORMALISED) {
                    let ev: ClinicalEvent = store.decode(&o.value).unwrap();
                    reused += usize::from(ev.control_id_reused);
                    if ev.control_id_reused {
                        *by_topic.entry((topic.to_owned(), "reused")).or_default() += 1;
                    }
                    first.entry(ev.event_id).or_insert_with(|| form.clone());
                }
            }
            Outcome::Skip(_) => {
                skipped += 1;
                *by_topic.entry((topic.to_owned(), "skipped")).or_default() += 1;
                // a skip is a true resend: an earlier input was the same message
                assert!(
                    first.values().any(|f| *f == form),
                    "a skipped input was not a resend of any earlier one"
                );
            }
            Outcome::Reject { .. } | Outcome::Retry { .. } => {}
        }
    };
    for f in &hl7_files {
        for m in sluice_hl7::split_messages(&std::fs::read(f).unwrap()) {
            feed(names::RAW, m, resend_form(m));
        }
    }
    for f in &fhir_files {
        let body = std::fs::read(f).unwrap();
        // the resend form of a FHIR body: its events' content digest (re-serialisation aside)
        let form = sluice_mapping::fhir_in::map_body(
            &RawMessage {
                payload: body.clone(),
                ..Default::default()
            },
            &Default::default(),
        )
        .map(|evs| evs.first().map(|e| e.content_digest.clone().into_bytes()).unwrap_or_default())
        .unwrap_or_default();
        feed(names::FHIR_RAW, &body, form);
    }
    println!("{inputs} corpus inputs: {skipped} skipped as resends, {reused} events flagged control_id_reused; by topic {by_topic:?}");
}
