//! FHIR in over the public corpus: every FHIR R4 example (international JSON, NHS UK Core XML,
//! converters' expected Bundles) normalises, no resource is lost (each travels whole in
//! `fhir_resources` of an event), the resource types the model maps show up in the event's
//! fields, and NHS numbers are recognised with their check digit.

#![allow(clippy::unwrap_used)]

use sluice_mapping::RawPosition;
use sluice_mapping::fhir_in::map_body;
use sluice_model::{ClinicalEvent, RawMessage};
use std::collections::BTreeMap;

/// Corpus files that are not FHIR R4 resources at all, with why.
const NOT_R4_RESOURCES: &[(&str, &str)] = &[
    // the converter's custom-JSON input sample (arbitrary JSON for its Liquid templates)
    ("SampleData/FHIR/ExamplePatient.json", "custom JSON, no resourceType"),
    // the converter's API request envelopes (an HL7 v2 message or an STU3 resource in a JSON wrapper)
    ("Messages/HL7v2/Request/ADT_A01.json", "API request wrapper around HL7 v2 text"),
    ("Messages/FHIR/Request/FHIR_STU3.json", "API request wrapper around STU3"),
    ("Messages/FHIR/Request/FHIR_Bundle.json", "API request wrapper"),
    ("Response/Expected_Response_FHIR_Bundle.json", "API response wrapper"),
    ("Response/Expected_Response_FHIR_STU3.json", "API response wrapper"),
    ("Response/Expected_Response_ADT_A01.json", "API response wrapper"),
];

fn events(bytes: &[u8]) -> Result<Vec<ClinicalEvent>, &'static str> {
    let raw = RawMessage {
        raw_id: sluice_model::ids::sha256_hex(bytes),
        transport: "http".into(),
        payload: bytes.to_vec(),
        ..Default::default()
    };
    map_body(&raw, &RawPosition::default()).map_err(|r| r.code)
}

/// One file's events: every resource of the body travels whole in some event (counted by type
/// in `by_type`), and each resource of a mapped type is mapped exactly once. Returns the number
/// of valid NHS numbers recognised.
fn check_events(name: &str, bytes: &[u8], evs: &[ClinicalEvent], by_type: &mut BTreeMap<String, usize>) -> usize {
    let mut nhs_valid = 0;
    let (_, tree) = sluice_fhir::parse(bytes).unwrap();
    let sent = sluice_fhir::resources(&tree);
    // every resource of the body travels whole in some event
    for (_, r) in &sent {
        let t = sluice_fhir::resource_type(r).unwrap();
        let json = r.to_string();
        assert!(
            evs.iter()
                .any(|e| e.fhir_resources.iter().any(|x| x.json == json && x.resource_type == t)),
            "{name}: a {t} travels in no event"
        );
        *by_type.entry(t.to_owned()).or_default() += 1;
    }
    // each resource of a mapped type is mapped exactly once, into one event
    let count = |types: &[&str]| {
        sent.iter()
            .filter(|(_, r)| types.contains(&sluice_fhir::resource_type(r).unwrap()))
            .count()
    };
    let sum = |f: fn(&ClinicalEvent) -> usize| evs.iter().map(f).sum::<usize>();
    assert_eq!(sum(|e| e.observations.len()), count(&["Observation"]), "{name}: observations");
    assert_eq!(sum(|e| e.allergies.len()), count(&["AllergyIntolerance"]), "{name}: allergies");
    assert_eq!(sum(|e| e.immunisations.len()), count(&["Immunization"]), "{name}: immunisations");
    assert_eq!(sum(|e| e.specimens.len()), count(&["Specimen"]), "{name}: specimens");
    assert_eq!(
        sum(|e| e.medications.len()),
        count(&["MedicationRequest", "MedicationDispense", "MedicationStatement"]),
        "{name}: medications"
    );
    assert_eq!(
        sum(|e| e.orders.len()),
        count(&["DiagnosticReport", "ServiceRequest"]),
        "{name}: reports and requests"
    );
    assert!(evs.len() >= count(&["Patient"]), "{name}: an event per Patient resource");
    for ev in evs {
        assert_eq!(ev.message_type, "FHIR");
        assert!(!ev.kind.is_empty());
        for id in ev.patient.iter().flat_map(|p| &p.identifiers) {
            if id.system.as_deref() == Some("https://fhir.nhs.uk/Id/nhs-number") {
                assert_eq!(id.nhs_number_valid, Some(sluice_model::nhs::is_valid(&id.value)));
                nhs_valid += usize::from(id.nhs_number_valid == Some(true));
            }
        }
        // the FHIR Bundle out of a FHIR-in event is produced (validated in tests/fhir.rs)
        let out = sluice_mapping::fhir_out::bundle(ev);
        assert_eq!(out["resourceType"], "Bundle");
    }
    nhs_valid
}

#[test]
fn every_corpus_fhir_resource_normalises_and_nothing_is_lost() {
    let Some(files) = sluice_hl7::corpus::fhir_files() else { return };
    let mut mapped_files = 0;
    let mut total_events = 0;
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut nhs_valid = 0;
    let mut empty_bundles = 0;
    let mut not_resources = 0;
    let mut without_patient = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let name = f.display().to_string();
        let expected_failure = NOT_R4_RESOURCES.iter().find(|(suffix, _)| name.ends_with(suffix));
        let evs = match (events(&bytes), expected_failure) {
            (Ok(evs), None) => evs,
            (Err(_), Some(_)) => {
                not_resources += 1;
                continue;
            }
            (Ok(_), Some((_, why))) => {
                // a wrapper that happens to carry a resourceType is fine too
                eprintln!("{name}: listed as not a resource ({why}) but maps");
                not_resources += 1;
                continue;
            }
            // a Bundle of requests only (reads, searches) carries no data: refused with a code
            (Err("fhir_empty_bundle"), None) => {
                let (_, tree) = sluice_fhir::parse(&bytes).unwrap();
                assert!(sluice_fhir::resources(&tree).is_empty(), "{name}: has resources but was refused");
                empty_bundles += 1;
                continue;
            }
            (Err(code), None) => panic!("{name}: rejected with {code}"),
        };
        mapped_files += 1;
        total_events += evs.len();
        without_patient += evs.iter().filter(|e| e.patient.is_none()).count();
        nhs_valid += check_events(&name, &bytes, &evs, &mut by_type);
    }
    // every file was judged: mapped, refused as requests only, or listed as not a resource
    assert_eq!(
        mapped_files + empty_bundles + not_resources,
        files.len(),
        "files read but not judged"
    );
    println!(
        "{mapped_files} FHIR files -> {total_events} events ({without_patient} without a patient); {empty_bundles} request-only Bundles refused; resources by type: {by_type:?}; valid NHS numbers: {nhs_valid}"
    );
}
