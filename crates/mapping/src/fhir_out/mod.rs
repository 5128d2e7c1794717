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
use medications::medication;
use observations::observation;
use orders::order_resource;
use patient::patient;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, ids::uuid_from};
use specimens::specimen;

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
    // one resource per order: the OBR when there is one (an ORC before it lends its order
    // control), else the ORC alone; results become DiagnosticReports, others ServiceRequests
    let has_obr = ev.orders.iter().any(|o| o.segment == "OBR");
    let mut reports: Vec<(Option<i32>, Map<String, Value>)> = Vec::new();
    for (i, o) in ev.orders.iter().enumerate() {
        if has_obr && o.segment != "OBR" {
            continue;
        }
        let mut order = o.clone();
        if i > 0 && ev.orders[i - 1].segment == "ORC" {
            let orc = &ev.orders[i - 1];
            order.order_control = order.order_control.or_else(|| orc.order_control.clone());
            order.order_status = order.order_status.or_else(|| orc.order_status.clone());
            order.transaction_time = order.transaction_time.or_else(|| orc.transaction_time.clone());
            order.priority = order.priority.or_else(|| orc.priority.clone());
            order.timing_start = order.timing_start.or_else(|| orc.timing_start.clone());
            order.timing_end = order.timing_end.or_else(|| orc.timing_end.clone());
        }
        reports.push((Some(i as i32), order_resource(ev, i, &order, subject.as_ref())));
    }
    // which specimen an order or observation is of: named directly (specimen-first
    // structures, an OBX after its SPM), else the specimen of its order
    let order_specimen = |k: Option<i32>| {
        k.and_then(|k| ev.orders.get(k as usize))
            .and_then(|o| o.specimen_index)
            .or_else(|| {
                ev.specimens
                    .iter()
                    .position(|s| s.order_index.is_some() && s.order_index == k)
                    .map(|x| x as i32)
            })
    };
    for (k, report) in reports.iter_mut() {
        if let Some(sp) = order_specimen(*k).and_then(|x| specimens.get(x as usize)) {
            report.insert("specimen".into(), json!([reference(sp)]));
        }
    }
    for (i, o) in ev.observations.iter().enumerate() {
        let spec = o
            .specimen_index
            .or_else(|| order_specimen(o.order_index))
            .and_then(|x| specimens.get(x as usize))
            .map(reference);
        let obs = observation(ev, i, o, subject.as_ref(), spec.as_ref());
        if let Some((_, report)) = reports
            .iter_mut()
            .find(|(k, r)| *k == o.order_index && r["resourceType"] == "DiagnosticReport")
        {
            let refs = report.entry("result").or_insert_with(|| json!([]));
            if let Some(list) = refs.as_array_mut() {
                list.push(reference(&obs));
            }
        }
        entries.push(entry(obs));
    }
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
    // one request per order: the RXE (or RXG) when there is one, else the RXO
    let mut requests: Vec<(Option<i32>, Value)> = Vec::new();
    for (i, m) in ev.medications.iter().enumerate() {
        let superseded = m.segment == "RXO"
            && ev
                .medications
                .iter()
                .any(|x| matches!(x.segment.as_str(), "RXE" | "RXG") && x.order_index == m.order_index);
        if superseded || matches!(m.segment.as_str(), "RXD" | "MedicationDispense") {
            continue;
        }
        let r = medication(ev, i, m, subject.as_ref(), None);
        requests.push((m.order_index, reference(&r)));
        entries.push(entry(r));
    }
    for (i, m) in ev.medications.iter().enumerate() {
        if matches!(m.segment.as_str(), "RXD" | "MedicationDispense") {
            let request = requests.iter().find(|(k, _)| k.is_some() && *k == m.order_index).map(|(_, r)| r);
            entries.push(entry(medication(ev, i, m, subject.as_ref(), request)));
        }
    }
    entries.extend(
        ev.allergies
            .iter()
            .enumerate()
            .map(|(i, a)| entry(allergy_intolerance(ev, i, a, subject.as_ref()))),
    );
    entries.extend(specimens.into_iter().map(entry));
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
