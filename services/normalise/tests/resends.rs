//! Property tests of the one de-duplication rule, through the normalise processor itself (with
//! the embedded schema registry): pairs of *different* messages that share a control id, a
//! message type or identifiers, HL7 v2 and FHIR, always both come out; only the same message
//! (same identity and content, resent with a new send time, other line endings, re-serialised or
//! reordered) is skipped; and a control id reused for other content is flagged, never dropped.

#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_model::schemas::RecordType;
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, RawMessage};
use sluice_normalise::Normaliser;
use sluice_normalise::dedup::Seen;
use sluice_registry::{RegistryClient, SchemaStore};
use sluice_runtime::processor::{Context, Input, Outcome, Processor};
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

/// Feeds one raw payload through the processor and commits; returns the events it emitted.
fn feed(n: &mut Normaliser, store: &SchemaStore, topic: &str, offset: i64, payload: &[u8]) -> Vec<ClinicalEvent> {
    let raw = RawMessage {
        raw_id: sluice_model::ids::sha256_hex(payload),
        payload: payload.to_vec(),
        ..Default::default()
    };
    let value = store.encode(topic, &raw).unwrap();
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
    match out {
        Outcome::Emit(outputs) => outputs
            .iter()
            .filter(|o| o.topic == names::NORMALISED)
            .map(|o| store.decode::<ClinicalEvent>(&o.value).unwrap())
            .collect(),
        Outcome::Skip(_) => Vec::new(),
        other => panic!("unexpected outcome {other:?}"),
    }
}

const TRIGGERS: [&str; 8] = ["A01", "A04", "A08", "A11", "A28", "A31", "A03", "A13"];

fn hl7(sender: &str, control_id: &str, trigger: &str, time: &str, mrn: u32, family: &str, eol: &str) -> Vec<u8> {
    [
        format!("MSH|^~\\&|{sender}|RTH|EPR|RTH|{time}||ADT^{trigger}|{control_id}|P|2.5"),
        "EVN||20240301120000".to_owned(),
        format!("PID|1||M{mrn}^^^RTH^MR||{family}^Test||19700101|F"),
        "PV1|1|I".to_owned(),
    ]
    .join(eol)
    .into_bytes()
}

#[tokio::test]
async fn different_hl7_messages_sharing_a_control_id_all_come_out_and_only_resends_are_skipped() {
    let store = store().await;
    let mut rng = StdRng::seed_from_u64(8);
    let mut n = Normaliser::new(store.clone(), Seen::default());
    let mut offset = 0;
    let mut judged = 0;
    for case in 0..300 {
        // a control id of its own per case (across cases one would legitimately be a reuse)
        let control_id = &format!("MSG{case:05}");
        let sender = ["PAS", "LIMS"][rng.random_range(0..2)];
        let (t1, t2) = (TRIGGERS[rng.random_range(0..8)], TRIGGERS[rng.random_range(0..8)]);
        let mrn = rng.random_range(1..1_000_000);
        let first = hl7(sender, control_id, t1, "20240301120000", mrn, "Alpha", "\r");
        // another message under the same control id: another type, or other content
        let kind = rng.random_range(0..3);
        let other = match kind {
            0 => hl7(sender, control_id, t2, "20240301120000", mrn, "Alpha", "\r"),
            1 => hl7(sender, control_id, t1, "20240301120000", mrn + 1, "Alpha", "\r"),
            _ => hl7(sender, control_id, t1, "20240301120000", mrn, "Beta", "\r"),
        };
        if other == first {
            continue;
        }
        // the same message as `first`, resent with a new send time and CRLF endings
        let resend = hl7(sender, control_id, t1, "20240302000000", mrn, "Alpha", "\r\n");
        let a = feed(&mut n, &store, names::RAW, offset, &first);
        let b = feed(&mut n, &store, names::RAW, offset + 1, &other);
        let c = feed(&mut n, &store, names::RAW, offset + 2, &resend);
        offset += 3;
        assert_eq!(a.len(), 1, "case {case}: a new message was dropped");
        assert_eq!(b.len(), 1, "case {case}: a different message under one control id was dropped");
        assert!(c.is_empty(), "case {case}: a resend of the same message made an event");
        assert_ne!(a[0].event_id, b[0].event_id);
        // the same sender, control id and type with other content is a reuse; another type is
        // another message altogether
        assert_eq!(b[0].control_id_reused, t1 == t2 || kind != 0, "case {case}: reuse flag");
        judged += 1;
    }
    assert!(judged > 250);
}

fn patient_entry(nhs: &str) -> String {
    format!(
        r#"{{"fullUrl": "urn:uuid:{nhs}", "resource": {{"resourceType": "Patient", "identifier": [{{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "{nhs}"}}]}}}}"#
    )
}

fn obs_entry(nhs: &str, value: f64) -> String {
    format!(
        r#"{{"resource": {{"resourceType": "Observation", "status": "final", "code": {{"text": "Glucose"}}, "subject": {{"reference": "urn:uuid:{nhs}"}}, "valueQuantity": {{"value": {value}, "unit": "mmol/L"}}}}}}"#
    )
}

fn bundle(identifier: &str, entries: &[String], timestamp: &str) -> String {
    format!(
        r#"{{"resourceType": "Bundle", "type": "message", "identifier": {{"system": "urn:test", "value": "{identifier}"}}, "timestamp": "{timestamp}", "entry": [{}]}}"#,
        entries.join(",")
    )
}

#[tokio::test]
async fn different_fhir_bodies_sharing_identifiers_all_come_out_and_only_resends_are_skipped() {
    let store = store().await;
    let mut rng = StdRng::seed_from_u64(9);
    let mut n = Normaliser::new(store.clone(), Seen::default());
    let nhs = ["9434765919", "9434765870", "3982597919", "9074833780"];
    let mut offset = 0;
    for case in 0..200 {
        let identifier = format!("B{case}");
        let who = nhs[rng.random_range(0..nhs.len())];
        let v1 = f64::from(rng.random_range(30..90)) / 10.0;
        let entries = vec![patient_entry(who), obs_entry(who, v1)];
        let first = bundle(&identifier, &entries, "2024-03-01T10:00:00Z");
        // the same Bundle.identifier, other content
        let other = bundle(&identifier, &[patient_entry(who), obs_entry(who, v1 + 0.1)], "2024-03-01T10:00:00Z");
        // the same message: entries reordered, a new timestamp, re-serialised
        let mut reordered = entries.clone();
        reordered.reverse();
        let resend: serde_json::Value = serde_json::from_str(&bundle(&identifier, &reordered, "2024-03-02T00:00:00Z")).unwrap();
        let resend = serde_json::to_string_pretty(&resend).unwrap();
        let a = feed(&mut n, &store, names::FHIR_RAW, offset, first.as_bytes());
        let b = feed(&mut n, &store, names::FHIR_RAW, offset + 1, other.as_bytes());
        let c = feed(&mut n, &store, names::FHIR_RAW, offset + 2, resend.as_bytes());
        offset += 3;
        assert_eq!(a.len(), 1, "case {case}: a new body was dropped");
        assert_eq!(b.len(), 1, "case {case}: another body under one Bundle.identifier was dropped");
        assert!(b[0].control_id_reused, "case {case}: the reused identifier is not flagged");
        assert!(!a[0].control_id_reused);
        assert!(c.is_empty(), "case {case}: a reordered, re-serialised resend made an event");
    }
    // resources of different types and patients sharing an identifier value, none resolvable
    let shared = r#""identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}]"#;
    let imm = format!(
        r#"{{"resourceType": "Immunization", {shared}, "status": "completed", "vaccineCode": {{"text": "x"}}, "patient": {{"reference": "Patient/a"}}, "occurrenceDateTime": "2024-01-01"}}"#
    );
    let doc = format!(
        r#"{{"resourceType": "DocumentReference", {shared}, "status": "current", "subject": {{"reference": "Patient/b"}}, "content": [{{"attachment": {{"data": "eA=="}}}}]}}"#
    );
    assert_eq!(feed(&mut n, &store, names::FHIR_RAW, offset, imm.as_bytes()).len(), 1);
    assert_eq!(feed(&mut n, &store, names::FHIR_RAW, offset + 1, doc.as_bytes()).len(), 1);
    // and in one Bundle, unresolved resources about different patients are never one event
    let both = format!(
        r#"{{"resourceType": "Bundle", "type": "collection", "entry": [{{"resource": {imm}}}, {{"resource": {doc}}}, {{"resource": {}}}]}}"#,
        imm.replace("Patient/a", "Patient/c")
    );
    let evs = feed(&mut n, &store, names::FHIR_RAW, offset + 2, both.as_bytes());
    assert_eq!(evs.len(), 3, "three unresolved patients, three events held apart");
    assert!(evs.iter().all(|e| e.patient.is_none()));
}
