//! Appointment.

use super::Mapper;
use super::values::{coded, coded_at, ts};
use serde_json::Value;
use sluice_fhir::{first, items, text_at};
use sluice_model::{Appointment, Coded};

impl<'v> Mapper<'_, 'v> {
    pub(super) fn appointment(&mut self, r: &Value) {
        let mut a = Appointment {
            placer_id: first(r, "identifier").and_then(|i| text_at(i, &["value"])),
            reason: coded_at(r, "reasonCode"),
            appointment_type: coded_at(r, "appointmentType"),
            event_reason: coded_at(r, "cancelationReason"),
            duration: text_at(r, &["minutesDuration"]),
            duration_units: text_at(r, &["minutesDuration"]).map(|_| Coded {
                code: Some("min".into()),
                system: Some("http://unitsofmeasure.org".into()),
                ..Default::default()
            }),
            start: ts(r, &["start"]),
            end: ts(r, &["end"]),
            status: text_at(r, &["status"]),
            services: items(r, "serviceType").into_iter().filter_map(coded).collect(),
            ..Default::default()
        };
        for p in items(r, "participant") {
            let Some(actor) = first(p, "actor") else { continue };
            let reference = text_at(actor, &["reference"]).unwrap_or_default();
            let name = text_at(actor, &["display"]).unwrap_or_else(|| reference.clone());
            if reference.contains("Location/") {
                a.locations.push(name);
            } else if reference.contains("Practitioner") {
                a.staff.push(name);
            } else if !reference.contains("Patient/") && text_at(actor, &["type"]).as_deref() != Some("Patient") {
                a.resources.push(Coded {
                    text: Some(name),
                    ..Default::default()
                });
            }
        }
        self.ev.appointment = Some(a);
    }
}
