//! FHIR R4 in, end to end on the real broker process: Bundles and resources POSTed over HTTP to
//! ingest (JSON and XML) are accepted with 202 only once durably in `fhir.raw.v1`, normalise into
//! canonical events (one per patient) and their FHIR Bundles, are matched and routed exactly
//! once; a resend of the same message (re-serialised) makes no second event; bodies that are not
//! FHIR get 400/415 with an OperationOutcome and are kept in `deadletter.ingest.v1`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BrokerKind, Pipeline};
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, DeadLetter, FhirBundle, RawMessage};
use sluice_normalise::mapping::RawPosition;
use std::collections::HashSet;
use std::time::Duration;

const RESULTS_BUNDLE: &str = r#"{
  "resourceType": "Bundle", "type": "transaction",
  "identifier": {"system": "urn:oid:2.16.840.1.113883.2.1.3.2.4.18.1", "value": "LAB-MSG-0001"},
  "timestamp": "2024-07-01T10:15:00+01:00",
  "entry": [
    {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": {"resourceType": "Patient",
      "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "3982597919"}],
      "name": [{"family": "Testpatient", "given": ["Alpha"]}], "birthDate": "1970-01-01", "gender": "female"},
     "request": {"method": "POST", "url": "Patient"}},
    {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222", "resource": {"resourceType": "Patient",
      "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9074833780"}],
      "name": [{"family": "Testpatient", "given": ["Beta"]}]},
     "request": {"method": "POST", "url": "Patient"}},
    {"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333", "resource": {"resourceType": "Observation",
      "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
      "effectiveDateTime": "2024-07-01T09:30:00+01:00",
      "valueQuantity": {"value": 4.2, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
      "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.3}}]},
     "request": {"method": "POST", "url": "Observation"}},
    {"fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444", "resource": {"resourceType": "DiagnosticReport",
      "status": "final", "code": {"text": "Urea and electrolytes"},
      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
      "result": [{"reference": "urn:uuid:33333333-3333-4333-8333-333333333333"}]},
     "request": {"method": "POST", "url": "DiagnosticReport"}},
    {"fullUrl": "urn:uuid:55555555-5555-4555-8555-555555555555", "resource": {"resourceType": "AllergyIntolerance",
      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
      "category": ["medication"], "criticality": "high", "code": {"text": "Penicillin"},
      "patient": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"}},
     "request": {"method": "POST", "url": "AllergyIntolerance"}}
  ]
}"#;

const IMMUNISATION_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="collection"/>
  <entry>
    <fullUrl value="urn:uuid:66666666-6666-4666-8666-666666666666"/>
    <resource>
      <Patient>
        <identifier><system value="https://fhir.nhs.uk/Id/nhs-number"/><value value="8762328603"/></identifier>
      </Patient>
    </resource>
  </entry>
  <entry>
    <resource>
      <Immunization>
        <status value="completed"/>
        <vaccineCode><coding><system value="http://snomed.info/sct"/><code value="39114911000001105"/></coding></vaccineCode>
        <patient><reference value="urn:uuid:66666666-6666-4666-8666-666666666666"/></patient>
        <occurrenceDateTime value="2024-06-30T11:00:00+01:00"/>
        <lotNumber value="LOT-1"/>
      </Immunization>
    </resource>
  </entry>
</Bundle>"#;

const ORDER: &str = r#"{"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
  "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]}, "value": "ORD-9"}],
  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "26604007", "display": "Full blood count"}]},
  "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "1290404798"}},
  "authoredOn": "2024-07-02T08:00:00Z"}"#;

/// A result for a patient the body does not contain, and a transaction DELETE: the result must be
/// held for review (never routed without a patient) and the DELETE must travel.
const ORPHAN: &str = r#"{"resourceType": "Bundle", "type": "transaction", "entry": [
  {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Glucose"},
    "subject": {"reference": "Patient/held-elsewhere"}, "valueQuantity": {"value": 5.5, "unit": "mmol/L"}}},
  {"request": {"method": "DELETE", "url": "Observation/wrong-result-1"}}
]}"#;

const REQUESTS_ONLY: &str =
    r#"{"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient?identifier=x"}}]}"#;

fn expected_events(body: &str) -> Vec<ClinicalEvent> {
    let raw = RawMessage {
        payload: body.as_bytes().to_vec(),
        ..Default::default()
    };
    sluice_normalise::fhir_in::map_body(&raw, &RawPosition::default()).unwrap()
}

async fn post(client: &reqwest::Client, url: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    let r = client
        .post(url)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn reason(outcome: &serde_json::Value) -> &str {
    outcome["issue"][0]["details"]["coding"][0]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fhir_bundles_and_resources_flow_through_exactly_once() {
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let base = format!("http://127.0.0.1:{}/fhir", p.fhir_port);
    let client = common::http_with(common::SENDER_TOKEN);

    // the capability statement says what the endpoint takes
    let meta: serde_json::Value = client.get(format!("{base}/metadata")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["fhirVersion"], "4.0.1");

    let mut expected = HashSet::new();
    for (url, content_type, body, events) in [
        (base.clone(), "application/fhir+json", RESULTS_BUNDLE, 2),
        (base.clone(), "application/fhir+xml", IMMUNISATION_XML, 1),
        (format!("{base}/ServiceRequest"), "application/fhir+json; charset=utf-8", ORDER, 1),
        (base.clone(), "application/fhir+json", ORPHAN, 1),
    ] {
        let (status, outcome) = post(&client, &url, content_type, body).await;
        assert_eq!(status, 202, "{outcome}");
        assert_eq!(reason(&outcome), "accepted");
        let evs = expected_events(body);
        assert_eq!(evs.len(), events);
        expected.extend(evs.into_iter().map(|e| e.event_id));
    }
    // the first Bundle's patient A, now in HL7 v2 over MLLP: one person, one enterprise id
    let hl7 = b"MSH|^~\\&|LIMS|RTH|EPR|RTH|20240702101500+0100||ORU^R01^ORU_R01|XF1|P|2.5.1\r\
PID|1||LAB42^^^RTH^MR~3982597919^^^NHS^NH||TESTPATIENT^ALPHA||19700101|F\r\
OBR|1|PL9|FL9|2951-2^Sodium^LN|||20240702093000+0100||||||||||||||||||F\r\
OBX|1|NM|2951-2^Sodium^LN||139|mmol/L^mmol/L^UCUM|133-146|N|||F|||20240702093000+0100\r"
        .to_vec();
    let acks = common::send_all(p.mllp_port, std::slice::from_ref(&hl7)).await;
    assert_eq!(acks[0].0, "AA");
    let hl7_event = sluice_model::ids::hl7_event_id(&sluice_hl7::Message::parse(&hl7));
    expected.insert(hl7_event.clone());

    // the same message again, re-serialised: accepted, but no second event
    // (sent with the command line's `sluice send --fhir`)
    let resend = serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(RESULTS_BUNDLE).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resend.json");
    std::fs::write(&file, resend).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["send", "--fhir", &base])
        .env("SLUICE_SENDER_TOKEN", common::SENDER_TOKEN)
        .arg(&file)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("202 accepted") && printed.contains("1 accepted, 0 not accepted"),
        "{printed}"
    );

    // not FHIR: refused with a bounded reason, and kept
    let (status, outcome) = post(&client, &base, "application/fhir+json", "{\"resourceType\": ").await;
    assert_eq!((status, reason(&outcome)), (400, "fhir_not_json"));
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let (status, outcome) = post(&client, &format!("{base}/Observation"), "application/fhir+json", ORDER).await;
    assert_eq!((status, reason(&outcome)), (400, "fhir_type_mismatch"));
    let (status, outcome) = post(&client, &base, "application/fhir+json", REQUESTS_ONLY).await;
    assert_eq!((status, reason(&outcome)), (400, "fhir_empty_bundle"));
    let (status, outcome) = post(&client, &base, "text/plain", RESULTS_BUNDLE).await;
    assert_eq!((status, reason(&outcome)), (415, "unsupported_media_type"));
    assert!(!outcome.to_string().contains("3982597919"), "an answer never echoes the body");

    let routed = p.wait_routed(&expected, Duration::from_secs(90)).await;
    routed.assert_exactly_once(&expected);
    assert_eq!(routed.seen.len(), 6);
    let orphan = expected_events(ORPHAN).remove(0).event_id;
    assert_eq!(
        routed.seen[&orphan],
        [names::REVIEW],
        "a result whose patient is not named is held for review, never routed"
    );

    let store = p.store();
    let mut events = Vec::new();
    for (_, _, _, v) in p.read_all(names::NORMALISED) {
        store.prefetch(&v).await.unwrap();
        events.push(store.decode::<ClinicalEvent>(&v).unwrap());
    }
    assert_eq!(events.len(), 6, "five from FHIR and one from HL7 v2; the resend made none");
    events.retain(|e| e.event_id != hl7_event);
    assert!(
        events
            .iter()
            .all(|e| e.message_type == "FHIR" && e.source.raw_topic == names::FHIR_RAW)
    );
    let by_kind = |k: &str| events.iter().filter(|e| e.kind == k).count();
    assert_eq!(
        (by_kind("result"), by_kind("adt"), by_kind("immunisation"), by_kind("order")),
        (2, 1, 1, 1)
    );
    let held = events.iter().find(|e| e.event_id == orphan).unwrap();
    assert!(held.patient.is_none() && held.warnings.contains(&"fhir_patient_unresolved".to_owned()));
    assert!(
        held.fhir_resources
            .iter()
            .any(|r| r.resource_type == "Bundle.entry" && r.json.contains("DELETE")),
        "the DELETE request travels"
    );
    let result = events.iter().find(|e| e.kind == "result" && e.patient.is_some()).unwrap();
    assert_eq!(result.observations[0].units_ucum.as_deref(), Some("mmol/L"));
    assert_eq!(result.observations[0].order_index, Some(0), "the report names its result");
    assert!(result.fhir_resources.iter().all(|r| r.json.contains("resourceType")));
    let order = events.iter().find(|e| e.kind == "order").unwrap();
    assert_eq!(order.patient.as_ref().unwrap().identifiers[0].nhs_number_valid, Some(true));
    assert_eq!(order.orders[0].placer_order_number.as_deref(), Some("ORD-9"));

    let mut epi = std::collections::HashMap::new();
    for (_, _, _, v) in p.read_all(names::MATCHED) {
        store.prefetch(&v).await.unwrap();
        let m: sluice_model::MatchedEvent = store.decode(&v).unwrap();
        epi.insert(m.event.event_id.clone(), m.enterprise_id.clone());
    }
    let patient_a = events
        .iter()
        .find(|e| e.patient.as_ref().is_some_and(|p| p.identifiers[0].value == "3982597919"))
        .unwrap();
    assert!(epi[&hl7_event].is_some());
    assert_eq!(
        epi[&hl7_event], epi[&patient_a.event_id],
        "the patient sent as FHIR and as HL7 v2 is one enterprise patient"
    );

    let mut bundles = HashSet::new();
    for (_, _, _, v) in p.read_all(names::FHIR) {
        store.prefetch(&v).await.unwrap();
        bundles.insert(store.decode::<FhirBundle>(&v).unwrap().event_id);
    }
    assert_eq!(bundles, expected, "one FHIR Bundle per event, whatever it came in as");

    let mut reasons: Vec<String> = Vec::new();
    for (_, _, _, v) in p.read_all(names::DL_INGEST) {
        store.prefetch(&v).await.unwrap();
        reasons.push(store.decode::<DeadLetter>(&v).unwrap().reason_code);
    }
    reasons.sort();
    assert_eq!(
        reasons,
        ["fhir_empty_bundle", "fhir_not_json", "fhir_type_mismatch", "unsupported_media_type"]
    );
    assert_eq!(p.read_all(names::FHIR_RAW).len(), 5, "every accepted body is kept as received");

    let metrics = reqwest::get(p.metrics_url("ingest")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"sluice_ingest_messages_total{listener="fhir",result="accepted"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sluice_ingest_messages_total{listener="fhir",result="rejected"} 4"#));
    assert!(!p.logs().contains("3982597919"), "no NHS number in any log");
}
