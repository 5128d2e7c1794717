//! FHIR R4 in: a resource or Bundle (JSON or XML, as received on `fhir.raw.v1`) to the same
//! canonical events HL7 v2 gives. Pure: body in, events out.
//!
//! - One event per patient: a Bundle naming several patients gives one event each, holding the
//!   resources whose `subject`/`patient` refers to that patient. A clinical resource whose patient
//!   cannot be resolved is never given to a patient: it goes in an event of its own without a
//!   patient (identifier-match holds such events for review). Resources that belong to no patient
//!   (Practitioner, Organization, Medication, MessageHeader ...) travel with every event.
//! - A patient named only by a logical reference (`subject.identifier`, usual in NHS messaging)
//!   is that identifier.
//! - NHS numbers (`https://fhir.nhs.uk/Id/nhs-number`) are checked (modulus 11); one that fails
//!   keeps its value but `nhs_number_valid` is false, so it is never a match key.
//! - Nothing is lost: each event carries every resource it came from whole in `fhir_resources`,
//!   next to the elements the model maps; statuses, units, code systems and times (with their
//!   zone and precision) are kept as sent.
//! - Event ids are deterministic: from the message's identity (`Bundle.identifier` or the
//!   MessageHeader id, when sent) and its content digest (see `grouping::message_identity`), plus
//!   what tells the body's events apart (the patient's identifier). A re-serialised or reordered
//!   resend has the same ids; a different body never does, whatever identifiers it shares.

mod allergies;
mod appointments;
mod encounter;
mod envelope;
mod grouping;
mod immunizations;
mod medications;
mod observations;
mod orders;
mod patient;
mod specimens;
#[cfg(test)]
mod tests;
mod values;

use crate::{NHS_NUMBER_SYSTEM, RawPosition};
use envelope::envelope;
use grouping::{Group, Index, group_by_patient, group_key, message_identity, patient_bound};
use patient::patient;
use serde_json::Value;
use sluice_fhir::{first, items, resource_type, resources, text_at};
use sluice_model::{ClinicalEvent, FhirResource, Identifier, Merge, Patient, RawMessage, nhs};
use std::collections::HashMap;
pub use values::{coded, identifier};

/// Resource types the model maps; every other type travels whole only.
pub const MAPPED: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Specimen",
    "AllergyIntolerance",
    "Immunization",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationStatement",
    "Appointment",
    "MessageHeader",
];

/// A body that cannot become an event: a bounded code and a detail without patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub code: &'static str,
    pub detail: String,
}

/// Maps a FHIR body (the payload of a raw record) to one canonical event per patient.
pub fn map_body(raw: &RawMessage, pos: &RawPosition) -> Result<Vec<ClinicalEvent>, Rejected> {
    let (_, tree) = sluice_fhir::parse(&raw.payload).map_err(|e| Rejected {
        code: e.code(),
        detail: e.to_string(),
    })?;
    let all = resources(&tree);
    if all.is_empty() {
        return Err(Rejected {
            code: "fhir_empty_bundle",
            detail: "the Bundle has no resources".into(),
        });
    }
    let groups = group_by_patient(&all);
    let header = all.iter().map(|(_, r)| *r).find(|r| resource_type(r) == Some("MessageHeader"));
    let identity = message_identity(&tree, header);
    let context: Vec<(Option<String>, &Value)> = all.iter().filter(|(_, r)| !patient_bound(r)).cloned().collect();
    let index = Index::new(&all);
    // requests without a resource (a transaction's DELETE) travel with every event, flagged
    let requests: Vec<FhirResource> = sluice_fhir::entries_without_resource(&tree)
        .into_iter()
        .map(|e| FhirResource {
            resource_type: "Bundle.entry".into(),
            id: None,
            full_url: text_at(e, &["fullUrl"]),
            mapped: false,
            json: e.to_string(),
        })
        .collect();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(n, g)| {
            let mut ev = envelope(&tree, header, raw, pos, &identity, &group_key(&g, n));
            let mut mapper = Mapper {
                ev: &mut ev,
                index: &index,
                obs_by_ref: HashMap::new(),
                spec_by_ref: HashMap::new(),
            };
            mapper.group(&g);
            for (url, r) in g
                .resources
                .iter()
                .chain(context.iter().filter(|(_, r)| resource_type(r) != Some("Patient")))
            {
                ev.fhir_resources.push(FhirResource {
                    resource_type: resource_type(r).unwrap_or_default().to_owned(),
                    id: text_at(r, &["id"]),
                    full_url: url.clone(),
                    mapped: resource_type(r).is_some_and(|t| MAPPED.contains(&t)),
                    json: r.to_string(),
                });
            }
            if !requests.is_empty() {
                ev.fhir_resources.extend(requests.iter().cloned());
                ev.warnings.push("fhir_entry_without_resource".into());
            }
            ev.kind = kind_of(&ev).to_owned();
            if g.unresolved.is_some() {
                ev.warnings.push("fhir_patient_unresolved".into());
            }
            ev
        })
        .collect())
}

/// The event kind from what it holds, most specific first.
fn kind_of(ev: &ClinicalEvent) -> &'static str {
    if !ev.observations.is_empty() || ev.orders.iter().any(|o| o.segment == "DiagnosticReport") {
        "result"
    } else if !ev.orders.is_empty() {
        "order"
    } else if !ev.medications.is_empty() {
        "pharmacy"
    } else if !ev.immunisations.is_empty() {
        "immunisation"
    } else if ev.appointment.is_some() {
        "schedule"
    } else if ev.patient.is_some() || ev.encounter.is_some() || !ev.allergies.is_empty() {
        "adt"
    } else {
        "generic"
    }
}

struct Mapper<'e, 'v> {
    ev: &'e mut ClinicalEvent,
    index: &'e Index<'v>,
    /// Observation references (fullUrl, Type/id) to their index in `observations`.
    obs_by_ref: HashMap<String, usize>,
    /// Specimen references to their index in `specimens`.
    spec_by_ref: HashMap<String, usize>,
}

impl<'v> Mapper<'_, 'v> {
    fn group(&mut self, g: &Group<'v>) {
        if let Some((_, p)) = g.patient {
            let mut pat = patient(p);
            // a Patient that replaces another record is a merge, as ADT A40 is
            let prior: Vec<Identifier> = items(p, "link")
                .into_iter()
                .filter(|l| text_at(l, &["type"]).as_deref() == Some("replaces"))
                .filter_map(|l| first(l, "other").and_then(|o| first(o, "identifier")).and_then(identifier))
                .collect();
            if !prior.is_empty() {
                self.ev.merge = Some(Merge {
                    prior_identifiers: prior,
                    kind: "patient_merge".into(),
                    ..Default::default()
                });
            }
            if items(p, "identifier").iter().any(|i| {
                text_at(i, &["system"]).as_deref() == Some(NHS_NUMBER_SYSTEM) && !nhs::is_valid(&text_at(i, &["value"]).unwrap_or_default())
            }) {
                self.ev.warnings.push("nhs_number_invalid".into());
            }
            pat.identifiers.dedup();
            self.ev.patient = Some(pat);
        } else if let Some(id) = g.logical.and_then(identifier) {
            self.ev.patient = Some(Patient {
                identifiers: vec![id],
                ..Default::default()
            });
        }
        // specimens, then observations (naming their specimen), so reports can name them
        for (url, r) in &g.resources {
            if resource_type(r) == Some("Specimen") {
                if let Some(u) = url {
                    self.spec_by_ref.insert(u.clone(), self.ev.specimens.len());
                }
                if let Some(id) = text_at(r, &["id"]) {
                    self.spec_by_ref.insert(format!("Specimen/{id}"), self.ev.specimens.len());
                }
                self.specimen(r);
            }
        }
        for (url, r) in &g.resources {
            if resource_type(r) == Some("Observation") {
                self.observation(url.as_deref(), r);
            }
        }
        for (_, r) in &g.resources {
            match resource_type(r).unwrap_or_default() {
                "Encounter" if self.ev.encounter.is_none() => self.encounter(r),
                "DiagnosticReport" | "ServiceRequest" => self.order(r),
                "AllergyIntolerance" => self.allergy(r),
                "Immunization" => self.immunisation(r),
                "MedicationRequest" | "MedicationDispense" | "MedicationStatement" => self.medication(r),
                "Appointment" if self.ev.appointment.is_none() => self.appointment(r),
                _ => {}
            }
        }
    }
}

/// The Kafka key of a FHIR body before matching: the sender and the first patient identifier,
/// so one patient's messages keep their order (as [`sluice_model::ids::source_patient_key`]).
pub fn source_patient_key(ev: &ClinicalEvent) -> Vec<u8> {
    let id = ev
        .patient
        .as_ref()
        .and_then(|p| p.identifiers.first())
        .map(|i| format!("{}^{}", i.value, i.system.as_deref().unwrap_or_default()));
    format!("{}|{}", ev.source.sending_facility, id.unwrap_or_else(|| ev.event_id.clone())).into_bytes()
}
