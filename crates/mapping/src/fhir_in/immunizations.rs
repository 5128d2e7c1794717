//! Immunization.

use super::Mapper;
use super::values::{coded_at, quantity_text, ts};
use serde_json::Value;
use sluice_fhir::{first, text_at};
use sluice_model::{Coded, Immunisation};

impl<'v> Mapper<'_, 'v> {
    pub(super) fn immunisation(&mut self, r: &Value) {
        let dose = first(r, "doseQuantity").and_then(quantity_text);
        let status = text_at(r, &["status"]);
        self.ev.immunisations.push(Immunisation {
            administered_time: ts(r, &["occurrenceDateTime"]),
            vaccine: coded_at(r, "vaccineCode"),
            amount: dose.as_ref().map(|d| d.0.clone()),
            units: dose.as_ref().and_then(|d| d.1.clone()),
            units_ucum: dose.and_then(|d| d.2),
            lot_numbers: text_at(r, &["lotNumber"]).into_iter().collect(),
            expiry: ts(r, &["expirationDate"]),
            manufacturer: first(r, "manufacturer").and_then(|m| {
                text_at(m, &["display"]).map(|d| Coded {
                    text: Some(d),
                    ..Default::default()
                })
            }),
            // HL7 RXA-20/21 as the canonical event carries them
            completion_status: status.as_deref().map(|s| match s {
                "not-done" => "NA".to_owned(),
                _ if text_at(r, &["isSubpotent"]).as_deref() == Some("true") => "PA".to_owned(),
                _ => "CP".to_owned(),
            }),
            action: (status.as_deref() == Some("entered-in-error")).then(|| "D".to_owned()),
            route: coded_at(r, "route"),
            site: coded_at(r, "site"),
        });
    }
}
