use super::*;

fn raw(body: &str) -> RawMessage {
    RawMessage {
        raw_id: sluice_model::ids::sha256_hex(body.as_bytes()),
        transport: "http".into(),
        listener: "fhir".into(),
        payload: body.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn map(body: &str) -> Vec<ClinicalEvent> {
    map_body(&raw(body), &RawPosition::default()).expect("maps")
}

const TWO_PATIENTS: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[
  {"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"943 476 5919"}]}},
  {"fullUrl":"urn:uuid:b","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765918"}]}},
  {"fullUrl":"urn:uuid:o1","resource":{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2823-3"}]},
    "subject":{"reference":"urn:uuid:a"},"valueQuantity":{"value":5.1,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},
    "effectiveDateTime":"2024-07-01T09:30:00+01:00"}},
  {"fullUrl":"urn:uuid:o2","resource":{"resourceType":"Observation","status":"corrected","code":{"text":"Sodium"},
    "subject":{"reference":"urn:uuid:b"},"valueQuantity":{"value":140,"unit":"mmol/L"}}},
  {"fullUrl":"urn:uuid:o3","resource":{"resourceType":"Observation","status":"final","code":{"text":"Orphan"},
    "subject":{"reference":"Patient/elsewhere"},"valueString":"x"}},
  {"fullUrl":"urn:uuid:pr","resource":{"resourceType":"Practitioner","name":[{"family":"Green"}]}}
]}"#;

#[test]
fn a_bundle_splits_by_patient_and_never_files_an_orphan_against_one() {
    let evs = map(TWO_PATIENTS);
    assert_eq!(evs.len(), 3, "two patients and one event for the unresolved result");
    let a = &evs[0];
    let id = &a.patient.as_ref().expect("patient").identifiers[0];
    assert_eq!((id.value.as_str(), id.nhs_number_valid), ("9434765919", Some(true)));
    assert_eq!(a.observations.len(), 1);
    let o = &a.observations[0];
    assert_eq!(o.values, ["5.1"]);
    assert_eq!(o.units_ucum.as_deref(), Some("mmol/L"));
    assert_eq!(o.status.as_deref(), Some("final"));
    assert_eq!(o.result_status.as_deref(), Some("F"));
    let t = o.observation_time.as_ref().expect("time");
    assert_eq!((t.offset_minutes, t.precision.as_str()), (Some(60), "second"));
    assert_eq!(a.kind, "result");
    assert_eq!(a.message_type, "FHIR");
    let b = &evs[1];
    assert_eq!(b.patient.as_ref().expect("patient").identifiers[0].nhs_number_valid, Some(false));
    assert!(b.warnings.contains(&"nhs_number_invalid".to_owned()));
    assert_eq!(b.observations[0].status.as_deref(), Some("corrected"));
    let orphan = &evs[2];
    assert!(orphan.patient.is_none());
    assert!(orphan.warnings.contains(&"fhir_patient_unresolved".to_owned()));
    assert_eq!(orphan.observations.len(), 1);
    // every resource travels; the practitioner with every event
    for ev in &evs {
        assert!(ev.fhir_resources.iter().any(|r| r.resource_type == "Practitioner" && !r.mapped));
    }
    let ids: std::collections::HashSet<&str> = evs.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn event_ids_survive_reformatting_and_follow_bundle_identifier() {
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(TWO_PATIENTS).expect("json")).expect("pretty");
    assert_eq!(map(TWO_PATIENTS)[0].event_id, map(&pretty)[0].event_id);
    let with_id = |ts: &str| {
        format!(
            r#"{{"resourceType":"Bundle","type":"message","identifier":{{"system":"urn:x","value":"m1"}},"timestamp":"{ts}",
            "entry":[{{"resource":{{"resourceType":"Patient","id":"p"}}}}]}}"#
        )
    };
    assert_eq!(
        map(&with_id("2024-01-01T00:00:00Z"))[0].event_id,
        map(&with_id("2024-01-01T00:05:00Z"))[0].event_id,
        "a resend with a new timestamp is the same message"
    );
    // a resend with its entries in another order: the same events
    let mut tree: Value = serde_json::from_str(TWO_PATIENTS).expect("json");
    if let Some(entries) = tree["entry"].as_array_mut() {
        entries.reverse();
    }
    let ids = |evs: Vec<ClinicalEvent>| evs.into_iter().map(|e| e.event_id).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(ids(map(TWO_PATIENTS)), ids(map(&tree.to_string())));
}

#[test]
fn logical_references_and_merges() {
    let body = r#"{"resourceType":"AllergyIntolerance","clinicalStatus":{"coding":[{"code":"active"}]},
      "category":["medication"],"criticality":"high","code":{"text":"Penicillin"},
      "patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}},
      "reaction":[{"manifestation":[{"text":"Rash"}]}]}"#;
    let ev = &map(body)[0];
    assert_eq!(ev.patient.as_ref().expect("logical patient").identifiers[0].value, "9434765919");
    assert_eq!(ev.allergies[0].reactions, ["Rash"]);
    assert_eq!(ev.kind, "adt");
    let merge = r#"{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],
      "link":[{"type":"replaces","other":{"identifier":{"system":"urn:mrn","value":"OLD1","type":{"coding":[{"code":"MR"}]}}}},
              {"type":"seealso","other":{"identifier":{"system":"urn:mrn","value":"OTHER"}}}]}"#;
    let m = map(merge)[0].merge.clone().expect("merge");
    assert_eq!(m.kind, "patient_merge");
    assert_eq!(m.prior_identifiers.len(), 1, "only `replaces` is a merge");
}

#[test]
fn bad_bodies_are_rejected_with_codes() {
    let code = |b: &str| map_body(&raw(b), &RawPosition::default()).err().map(|r| r.code);
    assert_eq!(code("{"), Some("fhir_not_json"));
    assert_eq!(
        code(r#"{"resourceType":"Bundle","type":"batch","entry":[]}"#),
        Some("fhir_empty_bundle")
    );
}
