//! Encounter.

use super::Mapper;
use super::values::{coded, identifier, ts};
use serde_json::Value;
use sluice_fhir::{first, text_at};
use sluice_model::Encounter;

impl<'v> Mapper<'_, 'v> {
    pub(super) fn encounter(&mut self, r: &Value) {
        let class = text_at(r, &["class", "code"]).map(|c| match c.as_str() {
            "IMP" | "ACUTE" | "NONAC" => "I".to_owned(),
            "AMB" => "O".to_owned(),
            "EMER" => "E".to_owned(),
            "PRENC" => "P".to_owned(),
            other => other.to_owned(),
        });
        self.ev.encounter = Some(Encounter {
            patient_class: class,
            location: first(r, "location")
                .and_then(|l| text_at(l, &["location", "display"]).or_else(|| text_at(l, &["location", "reference"]))),
            prior_location: None,
            admission_type: text_at(r, &["priority", "coding", "code"]),
            hospital_service: first(r, "serviceType").and_then(coded).and_then(|c| c.code.or(c.text)),
            visit_number: first(r, "identifier").and_then(identifier),
            admit_time: ts(r, &["period", "start"]),
            discharge_time: ts(r, &["period", "end"]),
        });
    }
}
