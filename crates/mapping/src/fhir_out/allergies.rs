//! AllergyIntolerance.

use super::datatypes::{concept, set_time};
use super::{new_resource, no_patient};
use serde_json::{Map, Value, json};
use sluice_model::{Allergy, ClinicalEvent};

/// AL1 (or a FHIR AllergyIntolerance). AL1 lists the patient's current allergies, so its
/// clinical status is `active`; categories and severities are read from HL7 tables 0127 and
/// 0128, and FHIR codes (from FHIR in) pass through.
pub(super) fn allergy_intolerance(ev: &ClinicalEvent, i: usize, a: &Allergy, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("AllergyIntolerance", ev, i);
    let clinical = a.clinical_status.as_deref().unwrap_or("active");
    let entered_in_error = a.verification_status.as_deref() == Some("entered-in-error");
    if !entered_in_error || a.clinical_status.is_some() {
        r.insert(
            "clinicalStatus".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": clinical}]}),
        );
    }
    if let Some(v) = &a.verification_status {
        r.insert(
            "verificationStatus".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": v}]}),
        );
    }
    if let Some(c) = a.category.as_deref().and_then(|c| match c {
        "DA" | "medication" => Some("medication"),
        "FA" | "food" => Some("food"),
        "EA" | "AA" | "PA" | "LA" | "environment" => Some("environment"),
        "biologic" => Some("biologic"),
        _ => None,
    }) {
        r.insert("category".into(), json!([c]));
    }
    if let Some(c) = a.severity.as_deref().and_then(|s| match s {
        "SV" | "high" => Some("high"),
        "MO" | "MI" | "low" => Some("low"),
        "U" | "unable-to-assess" => Some("unable-to-assess"),
        _ => None,
    }) {
        r.insert("criticality".into(), json!(c));
    }
    if let Some(c) = concept(a.allergen.as_ref()) {
        r.insert("code".into(), c);
    }
    r.insert("patient".into(), subject.cloned().unwrap_or_else(no_patient));
    set_time(&mut r, "onsetDateTime", a.identified_time.as_ref());
    if !a.reactions.is_empty() {
        let mut reaction = Map::new();
        reaction.insert(
            "manifestation".into(),
            Value::Array(a.reactions.iter().map(|m| json!({"text": m})).collect()),
        );
        if let Some(s) = a.severity.as_deref().and_then(|s| match s {
            "SV" => Some("severe"),
            "MO" => Some("moderate"),
            "MI" => Some("mild"),
            _ => None,
        }) {
            reaction.insert("severity".into(), json!(s));
        }
        r.insert("reaction".into(), json!([reaction]));
    }
    r
}
