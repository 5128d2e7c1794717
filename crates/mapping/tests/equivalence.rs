//! The same clinical facts sent as HL7 v2 and as FHIR R4 normalise into the same canonical
//! content: patient identity (NHS number with its check, MRN and authority), the result with its
//! code, value, units (as UCUM), status (FHIR and HL7 table 0085 forms) and instant, the allergy,
//! and the event kind. Downstream (identifier-match, route) therefore treats both alike.

#![allow(clippy::unwrap_used)]

use sluice_hl7::Message;
use sluice_mapping::{RawPosition, v2::map_message};
use sluice_model::{ClinicalEvent, RawMessage};

const HL7: &[u8] = b"MSH|^~\\&|LIMS|RTH|EPR|RTH|20240701101500+0100||ORU^R01^ORU_R01|EQ1|P|2.5.1\r\
PID|1||RTH7654321^^^RTH^MR~9434765870^^^NHS^NH||SMITH^JOHN||19751231|M\r\
AL1|1|DA|PEN^Penicillin^L|SV|Anaphylaxis\r\
OBR|1|PL1|FL1|U&E^Urea and electrolytes^L|||20240701093000+0100||||||||||||||||||C\r\
OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L^mmol/L^UCUM|3.5-5.3|N|||C|||20240701093000+0100\r";

const FHIR: &str = r#"{"resourceType": "Bundle", "type": "message", "entry": [
  {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient",
    "identifier": [
      {"system": "https://fhir.example-trust.nhs.uk/Id/mrn", "value": "RTH7654321",
       "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "assigner": {"display": "RTH"}},
      {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765870"}],
    "name": [{"family": "SMITH", "given": ["JOHN"]}], "birthDate": "1975-12-31", "gender": "male"}},
  {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "AllergyIntolerance",
    "clinicalStatus": {"coding": [{"code": "active"}]}, "category": ["medication"], "criticality": "high",
    "code": {"coding": [{"code": "PEN", "display": "Penicillin"}]}, "patient": {"reference": "urn:uuid:p"},
    "reaction": [{"manifestation": [{"text": "Anaphylaxis"}]}]}},
  {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "status": "corrected",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
    "subject": {"reference": "urn:uuid:p"}, "effectiveDateTime": "2024-07-01T08:30:00Z",
    "valueQuantity": {"value": 4.2, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    "interpretation": [{"coding": [{"code": "N"}]}], "referenceRange": [{"text": "3.5-5.3"}]}},
  {"resource": {"resourceType": "DiagnosticReport", "status": "corrected", "code": {"text": "Urea and electrolytes"},
    "identifier": [{"type": {"coding": [{"code": "FILL"}]}, "value": "FL1"}],
    "subject": {"reference": "urn:uuid:p"}, "result": [{"reference": "urn:uuid:o"}]}}
]}"#;

/// (value, NHS number system, check digit valid, type of a non-NHS identifier)
type IdentityKey = (String, Option<String>, Option<bool>, Option<String>);

fn from_hl7() -> ClinicalEvent {
    let msg = Message::parse(HL7);
    map_message(&msg, &RawMessage::default(), &RawPosition::default()).remove(0)
}

fn from_fhir() -> ClinicalEvent {
    let raw = RawMessage {
        payload: FHIR.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut evs = sluice_mapping::fhir_in::map_body(&raw, &RawPosition::default()).unwrap();
    assert_eq!(evs.len(), 1);
    evs.remove(0)
}

#[test]
fn the_same_facts_in_hl7_v2_and_fhir_give_the_same_canonical_content() {
    let (v2, fhir) = (from_hl7(), from_fhir());
    assert_eq!(v2.kind, fhir.kind);

    // identity: the keys identifier-match uses are the same
    let keys = |ev: &ClinicalEvent| {
        let mut k: Vec<IdentityKey> = ev
            .patient
            .as_ref()
            .unwrap()
            .identifiers
            .iter()
            .map(|i| (i.value.clone(), i.system.clone(), i.nhs_number_valid, i.type_code.clone()))
            .map(|(v, s, n, t)| (v, s.filter(|s| s.contains("nhs-number")), n, t.filter(|_| n.is_none())))
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v2), keys(&fhir));
    let mrn = |ev: &ClinicalEvent| {
        ev.patient
            .as_ref()
            .unwrap()
            .identifiers
            .iter()
            .find(|i| i.type_code.as_deref() == Some("MR"))
            .and_then(|i| i.assigning_authority.clone())
    };
    assert_eq!(mrn(&v2), mrn(&fhir), "the MRN's assigning authority");
    let p = |ev: &ClinicalEvent| {
        let p = ev.patient.clone().unwrap();
        (p.names[0].family.clone(), p.sex.clone(), p.birth_date.map(|b| b.precision))
    };
    assert_eq!(p(&v2), p(&fhir));

    // the result: code, value, UCUM units, status in both forms, the instant
    let (a, b) = (&v2.observations[0], &fhir.observations[0]);
    assert_eq!(
        a.code.as_ref().and_then(|c| c.code.clone()),
        b.code.as_ref().and_then(|c| c.code.clone())
    );
    assert_eq!(a.values, b.values);
    assert_eq!(a.units_ucum, b.units_ucum);
    assert_eq!((&a.status, &a.result_status), (&b.status, &b.result_status));
    assert_eq!(a.abnormal_flags, b.abnormal_flags);
    assert_eq!(a.reference_range, b.reference_range);
    assert_eq!(
        a.observation_time.as_ref().and_then(|t| t.utc_micros),
        b.observation_time.as_ref().and_then(|t| t.utc_micros)
    );
    assert_eq!(a.order_index, b.order_index, "the result belongs to its report in both");
    assert_eq!(v2.orders[0].result_status, fhir.orders[0].result_status);
    assert_eq!(v2.orders[0].filler_order_number, fhir.orders[0].filler_order_number);

    // the allergy, read through the same vocabularies on the way out
    let (x, y) = (&v2.allergies[0], &fhir.allergies[0]);
    assert_eq!(x.reactions, y.reactions);
    assert_eq!(
        x.allergen.as_ref().and_then(|c| c.code.clone()),
        y.allergen.as_ref().and_then(|c| c.code.clone())
    );
    let out = |ev: &ClinicalEvent| {
        let b = sluice_mapping::fhir_out::bundle(ev);
        let r = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .find(|r| r["resourceType"] == "AllergyIntolerance")
            .unwrap();
        (
            r["category"].clone(),
            r["criticality"].clone(),
            r["clinicalStatus"]["coding"][0]["code"].clone(),
        )
    };
    assert_eq!(out(&v2), out(&fhir));
}
