//! Immunization.

use super::datatypes::{concept, fhir_time, push_extension, quantity_of};
use super::new_resource;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Immunisation};

pub(super) fn immunization(ev: &ClinicalEvent, i: usize, imm: &Immunisation, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Immunization", ev, i);
    // RXA-21 D deletes an earlier record; RXA-20 RE/NA means the dose was not given
    let status = match (imm.action.as_deref(), imm.completion_status.as_deref()) {
        (Some("D"), _) => "entered-in-error",
        (_, Some("RE" | "NA")) => "not-done",
        _ => "completed",
    };
    r.insert("status".into(), json!(status));
    if imm.completion_status.as_deref() == Some("PA") {
        r.insert("isSubpotent".into(), json!(true));
    }
    r.insert(
        "vaccineCode".into(),
        concept(imm.vaccine.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
    );
    r.insert(
        "patient".into(),
        subject
            .cloned()
            .unwrap_or_else(|| json!({"display": "no patient identified in the message"})),
    );
    // occurrence is required: a time that has no FHIR dateTime form is given as sent
    match imm.administered_time.as_ref().map(|t| (fhir_time(t), t)) {
        Some((Ok(v), t)) => {
            r.insert("occurrenceDateTime".into(), json!(v));
            if matches!(t.precision.as_str(), "hour" | "minute") {
                push_extension(&mut r, "occurrenceDateTime", &t.value);
            }
        }
        Some((Err(sent), _)) => {
            r.insert("occurrenceString".into(), json!(sent));
        }
        None => {
            r.insert("occurrenceString".into(), json!("not sent"));
        }
    }
    if let Some(lot) = imm.lot_numbers.first() {
        r.insert("lotNumber".into(), json!(lot));
    }
    if let Some(Ok(d)) = imm.expiry.as_ref().map(fhir_time) {
        r.insert("expirationDate".into(), json!(d.get(..10).unwrap_or(&d)));
    }
    if let Some(m) = imm.manufacturer.as_ref().and_then(|m| m.text.clone().or_else(|| m.code.clone())) {
        r.insert("manufacturer".into(), json!({"display": m}));
    }
    if let Some(route) = concept(imm.route.as_ref()) {
        r.insert("route".into(), route);
    }
    if let Some(site) = concept(imm.site.as_ref()) {
        r.insert("site".into(), site);
    }
    // 999 is the immunisation registries' "amount unknown"
    if let Some(q) = quantity_of(
        imm.amount.as_deref().filter(|a| *a != "999"),
        imm.units.as_ref(),
        imm.units_ucum.as_deref(),
    ) {
        r.insert("doseQuantity".into(), q);
    }
    r
}
