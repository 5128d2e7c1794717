//! Nothing acknowledged is silently lost or overlaid, end to end on the real broker process with
//! every service a process of its own:
//! - one control id under several message types (A04, A11, A28 of one sender) is three messages;
//! - a control id reused for different content is kept and flagged; only the same message
//!   (same identity and same content) is skipped as a resend, and every skip is counted;
//! - FHIR bodies that share identifier values, or reuse one `Bundle.identifier` for different
//!   content, each make their events; only a re-serialised resend is skipped;
//! - the HL7 explicit null `""` is never an identifier: two patients of one facility whose PID-2
//!   is `""` stay two enterprise patients.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BrokerKind, Pipeline, hl7_event_ids};
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, IdentityLink, MatchedEvent, RawMessage};
use sluice_normalise::mapping::RawPosition;
use std::collections::HashSet;
use std::time::Duration;

fn hl7(lines: &[&str]) -> Vec<u8> {
    lines.join("\r").into_bytes()
}

fn adt(trigger: &str, control_id: &str, time: &str, pid: &str) -> Vec<u8> {
    hl7(&[
        &format!("MSH|^~\\&|PROBEAPP|PROBEFAC|SLUICE|SLUICE|{time}||ADT^{trigger}|{control_id}|P|2.5"),
        "EVN||20240301120000",
        pid,
        "PV1|1|O",
    ])
}

async fn send_expect_aa(p: &Pipeline, msgs: &[Vec<u8>]) {
    let acks = common::send_all(p.mllp_port, msgs).await;
    assert!(acks.iter().all(|(code, _)| code == "AA"), "{acks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_control_id_under_three_message_types_is_three_messages_and_reuse_is_flagged() {
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let pid = "PID|1||P3003^^^PROBEAUTH^MR||Testperson^Gamma||19800101|F";
    // a register, a cancel admit and an A28, all with the control id MSG00001 and the same body
    let types = [
        adt("A04^ADT_A01", "MSG00001", "20240301120000", pid),
        adt("A11^ADT_A09", "MSG00001", "20240301120000", pid),
        adt("A28^ADT_A05", "MSG00001", "20240301120000", pid),
    ];
    // the same control id and type again with different content: a reuse, kept and flagged
    let first = adt("A08^ADT_A01", "MSG00002", "20240301130000", pid);
    let reused = adt(
        "A08^ADT_A01",
        "MSG00002",
        "20240301130000",
        "PID|1||P3003^^^PROBEAUTH^MR||Testperson^Gamma^Q||19800101|F",
    );
    // a true resend of `first`: a new send time and CRLF line endings, nothing else
    let resend = String::from_utf8(adt("A08^ADT_A01", "MSG00002", "20240301130500", pid))
        .unwrap()
        .replace('\r', "\r\n")
        .into_bytes();
    let mut all: Vec<Vec<u8>> = types.to_vec();
    all.extend([first.clone(), reused.clone()]);
    send_expect_aa(&p, &all).await;
    send_expect_aa(&p, std::slice::from_ref(&resend)).await;

    let expected = hl7_event_ids(&all);
    assert_eq!(expected.len(), 5, "five different messages, five event ids");
    assert!(hl7_event_ids(std::slice::from_ref(&resend)).is_subset(&expected));
    let routed = p.wait_routed(&expected, Duration::from_secs(60)).await;
    routed.assert_exactly_once(&expected);

    let events: Vec<ClinicalEvent> = p.decoded(names::NORMALISED).await;
    let triggers: HashSet<&str> = events.iter().map(|e| e.trigger_event.as_str()).collect();
    assert_eq!(triggers, ["A04", "A11", "A28", "A08"].into());
    let flagged: Vec<&ClinicalEvent> = events.iter().filter(|e| e.control_id_reused).collect();
    assert_eq!(flagged.len(), 1, "exactly the reused control id is flagged");
    assert_eq!(
        flagged[0].event_id,
        sluice_model::ids::hl7_event_id(&sluice_hl7::Message::parse(&reused))
    );
    assert!(flagged[0].warnings.contains(&"control_id_reused".to_owned()));
    assert!(events.iter().all(|e| !e.identity_key.is_empty() && !e.content_digest.is_empty()));

    let resends = p
        .metric("normalise", r#"sluice_normalise_resends_skipped_total{source="hl7v2"}"#)
        .await;
    let reuses = p
        .metric("normalise", r#"sluice_normalise_control_id_reused_total{source="hl7v2"}"#)
        .await;
    assert_eq!((resends, reuses), (1.0, 1.0), "every skip and every reuse is counted");
    let logs = p.logs();
    assert!(logs.contains("control id reused for different content"), "the reuse is logged");
    assert!(!logs.contains("Testperson") && !logs.contains("P3003"), "no patient data in logs");
}

fn fhir_events(body: &str) -> Vec<ClinicalEvent> {
    let raw = RawMessage {
        payload: body.as_bytes().to_vec(),
        ..Default::default()
    };
    sluice_normalise::fhir_in::map_body(&raw, &RawPosition::default()).unwrap()
}

/// An Immunization and a DocumentReference about different patients (neither in the body) that
/// share an identifier value: two messages.
const IMMUNIZATION: &str = r#"{"resourceType": "Immunization", "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.3.6.1.4.1.21367.2005.3.7.1234"}],
  "status": "completed", "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
  "patient": {"reference": "Patient/example-a"}, "occurrenceDateTime": "2024-03-01T10:00:00Z"}"#;
const DOCUMENT: &str = r#"{"resourceType": "DocumentReference", "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.3.6.1.4.1.21367.2005.3.7.1234"}],
  "status": "current", "subject": {"reference": "Patient/example-b"},
  "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}"#;

fn message_bundle(glucose: &str, reorder: bool) -> String {
    let patient = r#"{"fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}]}}"#;
    let obs = format!(
        r#"{{"fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002", "resource": {{"resourceType": "Observation", "status": "final",
        "code": {{"text": "Glucose"}}, "subject": {{"reference": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"}},
        "valueQuantity": {{"value": {glucose}, "unit": "mmol/L"}}}}}}"#
    );
    let entries = if reorder {
        format!("{obs}, {patient}")
    } else {
        format!("{patient}, {obs}")
    };
    format!(
        r#"{{"resourceType": "Bundle", "type": "collection", "identifier": {{"system": "urn:sluice:test", "value": "BUNDLE-1"}},
        "entry": [{entries}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fhir_bodies_sharing_identifiers_each_make_their_events_and_only_a_resend_is_skipped() {
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let base = format!("http://127.0.0.1:{}/fhir", p.fhir_port);
    let client = common::http_with(common::SENDER_TOKEN);
    let first = message_bundle("5.5", false);
    let reused = message_bundle("9.1", false);
    // the same message as `first`, entries in another order and re-serialised
    let resend = serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&message_bundle("5.5", true)).unwrap()).unwrap();
    let mut expected = HashSet::new();
    for body in [IMMUNIZATION, DOCUMENT, &first, &reused, &resend] {
        let r = client
            .post(&base)
            .header("content-type", "application/fhir+json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        expected.extend(fhir_events(body).into_iter().map(|e| e.event_id));
    }
    assert_eq!(
        expected.len(),
        4,
        "the resend has the same event id as the first, nothing else does"
    );
    let routed = p.wait_routed(&expected, Duration::from_secs(60)).await;
    routed.assert_exactly_once(&expected);

    let events: Vec<ClinicalEvent> = p.decoded(names::NORMALISED).await;
    assert_eq!(events.len(), 4);
    let flagged: Vec<&ClinicalEvent> = events.iter().filter(|e| e.control_id_reused).collect();
    assert_eq!(flagged.len(), 1, "the Bundle.identifier reused for other content is flagged");
    assert!(flagged[0].observations[0].values.contains(&"9.1".to_owned()));
    assert_eq!(
        p.metric("normalise", r#"sluice_normalise_resends_skipped_total{source="fhir"}"#)
            .await,
        1.0
    );
    assert_eq!(
        p.metric("normalise", r#"sluice_normalise_control_id_reused_total{source="fhir"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_explicit_null_is_never_an_identifier_so_two_patients_stay_two() {
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let a = adt(
        "A04^ADT_A01",
        "NULL0001",
        "20240301120000",
        "PID|1|\"\"|P1001^^^PROBEAUTH^MR||Testperson^Delta||19700101|F",
    );
    let b = adt(
        "A04^ADT_A01",
        "NULL0002",
        "20240301120100",
        "PID|1|\"\"|P2002^^^PROBEAUTH^MR||Otherperson^Epsilon||19851231|M",
    );
    let msgs = vec![a, b];
    send_expect_aa(&p, &msgs).await;
    let expected = hl7_event_ids(&msgs);
    let routed = p.wait_routed(&expected, Duration::from_secs(60)).await;
    routed.assert_exactly_once(&expected);

    let matched: Vec<MatchedEvent> = p.decoded(names::MATCHED).await;
    assert_eq!(matched.len(), 2);
    let ids: HashSet<Option<String>> = matched.iter().map(|m| m.enterprise_id.clone()).collect();
    assert_eq!(ids.len(), 2, "two different patients were linked to one enterprise id");
    assert!(matched.iter().all(|m| m.enterprise_id.is_some()));
    for m in &matched {
        let patient = m.event.patient.as_ref().unwrap();
        assert!(
            patient.identifiers.iter().all(|i| i.value != "\"\""),
            "an explicit null became an identifier"
        );
        assert!(
            m.event.explicit_nulls.iter().any(|n| n.segment == "PID" && n.field == 2),
            "the null's delete meaning travels"
        );
    }
    let links: Vec<IdentityLink> = p.decoded(names::LINKS).await;
    assert!(links.iter().all(|l| !l.key.contains("\"\"")), "an explicit null became a match key");
}
