//! MedicationRequest, MedicationDispense and MedicationStatement.

use super::Mapper;
use super::values::{coded_at, quantity_text, ts};
use serde_json::Value;
use sluice_fhir::{first, items, resource_type, text_at};
use sluice_model::{Coded, Medication};

impl<'v> Mapper<'_, 'v> {
    pub(super) fn medication(&mut self, r: &Value) {
        let kind = resource_type(r).unwrap_or_default().to_owned();
        // medicationCodeableConcept, or the code of the Medication it references
        let medication = coded_at(r, "medicationCodeableConcept").or_else(|| {
            first(r, "medicationReference").and_then(|m| {
                self.index.resolve(m).and_then(|med| coded_at(med, "code")).or_else(|| {
                    text_at(m, &["display"]).map(|d| Coded {
                        text: Some(d),
                        ..Default::default()
                    })
                })
            })
        });
        let dosage_key = if kind == "MedicationStatement" {
            "dosage"
        } else {
            "dosageInstruction"
        };
        let dosages = items(r, dosage_key);
        let dose_rate = dosages.first().and_then(|d| first(d, "doseAndRate"));
        let (low, high) = match dose_rate {
            Some(dr) => match (first(dr, "doseQuantity"), first(dr, "doseRange")) {
                (Some(q), _) => (quantity_text(q), None),
                (None, Some(range)) => (
                    first(range, "low").and_then(quantity_text),
                    first(range, "high").and_then(quantity_text),
                ),
                _ => (None, None),
            },
            None => (None, None),
        };
        let dispense = first(r, "dispenseRequest");
        let dispense_qty = dispense
            .and_then(|d| first(d, "quantity"))
            .or_else(|| first(r, "quantity"))
            .and_then(quantity_text);
        let is_dispense = kind == "MedicationDispense";
        let (amount_min, units, units_ucum) = if is_dispense {
            match dispense_qty.clone() {
                Some((v, u, c)) => (Some(v), u, c),
                None => (None, None, None),
            }
        } else {
            match low.clone() {
                Some((v, u, c)) => (Some(v), u, c),
                None => (None, None, None),
            }
        };
        self.ev.medications.push(Medication {
            segment: kind,
            order_index: None,
            medication,
            amount_min,
            amount_max: high.map(|h| h.0).filter(|_| !is_dispense),
            units,
            units_ucum,
            dosage_form: None,
            instructions: dosages.iter().filter_map(|d| text_at(d, &["text"])).collect(),
            dispense_amount: dispense_qty.as_ref().filter(|_| !is_dispense).map(|d| d.0.clone()),
            dispense_units: dispense_qty.filter(|_| !is_dispense).and_then(|d| d.1),
            refills: dispense.and_then(|d| text_at(d, &["numberOfRepeatsAllowed"])),
            prescription_number: first(r, "identifier").and_then(|i| text_at(i, &["value"])),
            time: ts(r, &["whenHandedOver"])
                .or_else(|| ts(r, &["authoredOn"]))
                .or_else(|| ts(r, &["effectiveDateTime"])),
            route: dosages.first().and_then(|d| coded_at(d, "route")),
            site: dosages.first().and_then(|d| coded_at(d, "site")),
            status: text_at(r, &["status"]),
            intent: text_at(r, &["intent"]),
        });
    }
}
