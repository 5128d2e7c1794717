//! The canonical event as a FHIR R4 Bundle (type `collection`): Patient, Encounter,
//! DiagnosticReport / ServiceRequest per order, Observation per result, Specimen, Immunization,
//! DocumentReference, Appointment, MedicationRequest / MedicationDispense, AllergyIntolerance. Pure: event
//! in, JSON out; ids are derived from the event id, so the same event always gives the same
//! Bundle.
//!
//! Meaning is kept rather than guessed:
//! - an HL7 time without an offset cannot be a FHIR `dateTime` with a time (FHIR requires the
//!   zone), so it is not given one: the element is left out and the value as sent travels in the
//!   extension [`TIMESTAMP_EXTENSION`]; dates without a time are kept as dates;
//! - an NHS number that fails its check digit is not given the NHS number system;
//! - statuses follow HL7 table 0085/0123 and are `unknown` when nothing was sent;
//! - units carry the UCUM system only when the event has a UCUM code for them.

mod allergies;
mod appointment;
mod datatypes;
mod documents;
mod encounter;
mod immunization;
mod medications;
mod observations;
mod orders;
mod patient;
mod specimens;

use allergies::allergy_intolerance;
use appointment::appointment;
use datatypes::{fhir_time, tidy};
use documents::document_reference;
use encounter::encounter;
use immunization::immunization;
use medications::medication_entries;
use observations::observation_entries;
use orders::order_resources;
use patient::patient;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, ids::uuid_from};
use specimens::{OrderSpecimens, specimen};

/// Extension carrying an HL7 v2 timestamp that has no FHIR `dateTime` form (a time without an
/// offset), exactly as sent.
pub const TIMESTAMP_EXTENSION: &str = "urn:sluice:fhir:StructureDefinition:hl7v2-timestamp";
/// Identifier system of `Observation.identifier` carrying the result key (the same for every
/// version of one result, so a correction replaces the result it names).
pub const RESULT_KEY_SYSTEM: &str = "urn:sluice:result-key";

fn entry(resource: Map<String, Value>) -> Value {
    let id = resource.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource})
}

fn new_resource(kind: &str, ev: &ClinicalEvent, index: usize) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("resourceType".into(), json!(kind));
    r.insert(
        "id".into(),
        json!(uuid_from(&[ev.event_id.as_bytes(), kind.as_bytes(), &index.to_be_bytes()])),
    );
    r
}

fn reference(r: &Map<String, Value>) -> Value {
    json!({"reference": format!("urn:uuid:{}", r.get("id").and_then(Value::as_str).unwrap_or_default())})
}

fn no_patient() -> Value {
    json!({"display": "no patient identified in the message"})
}

/// The Bundle for one canonical event.
pub fn bundle(ev: &ClinicalEvent) -> Value {
    let mut entries = Vec::new();
    let patient = patient(ev);
    let subject = patient.as_ref().map(reference);
    if let Some(p) = patient {
        entries.push(entry(p));
    }
    if let Some(e) = encounter(ev, subject.as_ref()) {
        entries.push(entry(e));
    }
    let specimens: Vec<Map<String, Value>> = ev
        .specimens
        .iter()
        .enumerate()
        .map(|(i, s)| specimen(ev, i, s, subject.as_ref()))
        .collect();
    let of_order = OrderSpecimens::new(ev);
    let mut reports = order_resources(ev, subject.as_ref());
    for (k, report) in reports.iter_mut() {
        if let Some(sp) = of_order.of(*k).and_then(|x| specimens.get(x as usize)) {
            report.insert("specimen".into(), json!([reference(sp)]));
        }
    }
    entries.extend(observation_entries(ev, subject.as_ref(), &specimens, &of_order, &mut reports));
    entries.extend(reports.into_iter().map(|(_, r)| entry(r)));
    if let Some(d) = &ev.document {
        entries.push(entry(document_reference(ev, d, subject.as_ref())));
    }
    entries.extend(
        ev.immunisations
            .iter()
            .enumerate()
            .map(|(i, imm)| entry(immunization(ev, i, imm, subject.as_ref()))),
    );
    if let Some(a) = &ev.appointment {
        entries.push(entry(appointment(ev, a, subject.as_ref())));
    }
    entries.extend(medication_entries(ev, subject.as_ref()));
    entries.extend(
        ev.allergies
            .iter()
            .enumerate()
            .map(|(i, a)| entry(allergy_intolerance(ev, i, a, subject.as_ref()))),
    );
    entries.extend(specimens.into_iter().map(entry));
    collection(ev, entries)
}

/// The Bundle (type `collection`) of the entries of one event.
fn collection(ev: &ClinicalEvent, entries: Vec<Value>) -> Value {
    let mut b = Map::new();
    b.insert("resourceType".into(), json!("Bundle"));
    b.insert("id".into(), json!(uuid_from(&[ev.event_id.as_bytes(), b"bundle"])));
    b.insert("identifier".into(), json!({"system": "urn:sluice:event-id", "value": ev.event_id}));
    b.insert("type".into(), json!("collection"));
    if let Some(Ok(t)) = ev.message_time.as_ref().map(fhir_time)
        && t.contains('T')
    {
        b.insert("timestamp".into(), json!(t));
    }
    b.insert("entry".into(), Value::Array(entries));
    let mut bundle = Value::Object(b);
    tidy(&mut bundle, None);
    bundle
}
