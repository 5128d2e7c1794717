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
use std::collections::HashMap;

pub use observations::{UNITS_EXTENSION, VALUE_ATTACHMENT_EXTENSION};
pub use orders::PRIOR_RESULT_EXTENSION;

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

/// A reference to the resource [`new_resource`] makes for `kind` and `index`.
fn ref_of(ev: &ClinicalEvent, kind: &str, index: usize) -> Value {
    json!({"reference": format!("urn:uuid:{}", uuid_from(&[ev.event_id.as_bytes(), kind.as_bytes(), &index.to_be_bytes()]))})
}

/// Prior results (OML^O21 / OMG^O19 PRIOR_RESULT) are context for the current order before
/// them: its ServiceRequest names their reports and observations in `supportingInfo` (the
/// converter practice; the v2-to-FHIR maps leave this group unmapped), and they are never in a
/// current report's results.
fn link_prior_results(
    ev: &ClinicalEvent,
    requests: &mut [(Option<i32>, Map<String, Value>)],
    reports: &[(Option<i32>, Map<String, Value>)],
    observations: &[Value],
) {
    if !ev.orders.iter().any(|o| o.prior) {
        return;
    }
    // the current order each prior order is context for: the last current order before it
    let mut context = vec![None; ev.orders.len()];
    let mut current = None;
    for (i, o) in ev.orders.iter().enumerate() {
        if o.prior {
            context[i] = current;
        } else {
            current = Some(i as i32);
        }
    }
    let request_at: HashMap<i32, usize> = requests.iter().enumerate().filter_map(|(n, (k, _))| Some(((*k)?, n))).collect();
    let mut support: Vec<(usize, Value)> = Vec::new();
    for (k, r) in requests.iter().chain(reports.iter()) {
        if let Some(target) = k
            .and_then(|k| context.get(k as usize).copied().flatten())
            .and_then(|c| request_at.get(&c))
        {
            support.push((*target, reference(r)));
        }
    }
    for (o, e) in ev.observations.iter().zip(observations) {
        if let Some(target) = o
            .order_index
            .filter(|_| o.prior)
            .and_then(|k| context.get(k as usize).copied().flatten())
            .and_then(|c| request_at.get(&c))
        {
            support.push((*target, json!({"reference": e["fullUrl"]})));
        }
    }
    for (target, r) in support {
        if let Some(list) = requests[target]
            .1
            .entry("supportingInfo")
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            list.push(r);
        }
    }
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
    let (mut requests, mut reports) = order_resources(ev, subject.as_ref());
    let request_of: HashMap<i32, Value> = requests.iter().filter_map(|(k, r)| Some((((*k)?), reference(r)))).collect();
    let specimens: Vec<Map<String, Value>> = ev
        .specimens
        .iter()
        .enumerate()
        .map(|(i, s)| specimen(ev, i, s, subject.as_ref(), s.order_index.and_then(|k| request_of.get(&k).cloned())))
        .collect();
    let of_order = OrderSpecimens::new(ev);
    for (k, report) in reports.iter_mut() {
        if let Some(sp) = of_order.of(*k).and_then(|x| specimens.get(x as usize)) {
            report.insert("specimen".into(), json!([reference(sp)]));
        }
    }
    let observations = observation_entries(ev, subject.as_ref(), &specimens, &of_order, &mut requests, &mut reports);
    link_prior_results(ev, &mut requests, &reports, &observations);
    entries.extend(requests.into_iter().map(|(_, r)| entry(r)));
    entries.extend(observations);
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

/// [`bundle`] as compact JSON text, serialised straight into bytes (`Value`'s `Display` goes
/// through a formatter, a call per token; the bundle is most of normalise's work).
pub fn bundle_json(ev: &ClinicalEvent) -> Result<String, serde_json::Error> {
    serde_json::to_string(&bundle(ev))
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
