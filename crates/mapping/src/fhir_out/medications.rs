//! MedicationRequest, MedicationDispense and MedicationStatement.

use super::datatypes::{concept, notes, placer_filler, quantity_of, set_period, set_time};
use super::orders::request_status;
use super::{entry, new_resource, no_patient, reference};
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Medication, Order};

/// A medication's status in MedicationRequest terms: the FHIR status when the source was FHIR,
/// else the order's (ORC-5, then ORC-1).
pub(super) fn medication_request_status(m: &Medication, order: Option<&Order>) -> &'static str {
    const FHIR: [&str; 8] = [
        "active",
        "on-hold",
        "cancelled",
        "completed",
        "entered-in-error",
        "stopped",
        "draft",
        "unknown",
    ];
    if let Some(s) = m.status.as_deref().and_then(|s| FHIR.iter().find(|f| **f == s)) {
        return s;
    }
    let Some(o) = order else { return "unknown" };
    match (o.order_status.as_deref(), o.order_control.as_deref()) {
        (Some("DC"), _) | (None, Some("DC" | "OD")) => "stopped",
        _ => match request_status(o) {
            "revoked" => "cancelled",
            other => other,
        },
    }
}

pub(super) fn dosage(m: &Medication, order: Option<&Order>) -> Option<Value> {
    let mut d = Map::new();
    // the order's TQ1 start and end bound the course
    let mut bounds = Map::new();
    if let Some(o) = order {
        set_period(&mut bounds, "boundsPeriod", o.timing_start.as_ref(), o.timing_end.as_ref());
    }
    if !bounds.is_empty() {
        d.insert("timing".into(), json!({"repeat": bounds}));
    }
    if !m.instructions.is_empty() {
        d.insert("text".into(), json!(m.instructions.join("; ")));
    }
    if let Some(c) = concept(m.route.as_ref()) {
        d.insert("route".into(), c);
    }
    if let Some(c) = concept(m.site.as_ref()) {
        d.insert("site".into(), c);
    }
    let low = quantity_of(m.amount_min.as_deref(), m.units.as_ref(), m.units_ucum.as_deref());
    let high = quantity_of(m.amount_max.as_deref(), m.units.as_ref(), m.units_ucum.as_deref());
    let dose = match (low, high) {
        (Some(l), Some(h)) if l != h => Some(json!({"doseRange": {"low": l, "high": h}})),
        (Some(l), _) => Some(json!({"doseQuantity": l})),
        _ => None,
    };
    if let Some(dose) = dose {
        d.insert("doseAndRate".into(), json!([dose]));
    }
    (!d.is_empty()).then_some(Value::Object(d))
}

/// RXO/RXE/RXG (or a FHIR MedicationRequest) as a MedicationRequest; RXD (or a FHIR
/// MedicationDispense) as a MedicationDispense that names the request of its order; a FHIR
/// MedicationStatement as a MedicationStatement.
fn medication(ev: &ClinicalEvent, i: usize, m: &Medication, subject: Option<&Value>, request: Option<&Value>) -> Map<String, Value> {
    let order = m.order_index.and_then(|k| ev.orders.get(k as usize));
    let dispense = matches!(m.segment.as_str(), "RXD" | "MedicationDispense");
    let statement = m.segment == "MedicationStatement";
    let kind = match (dispense, statement) {
        (true, _) => "MedicationDispense",
        (_, true) => "MedicationStatement",
        _ => "MedicationRequest",
    };
    let mut r = new_resource(kind, ev, i);
    let mut ids = order
        .map(|o| {
            placer_filler(
                (o.placer_order_number.as_ref(), o.placer_entity.as_ref()),
                (o.filler_order_number.as_ref(), o.filler_entity.as_ref()),
            )
        })
        .unwrap_or_default();
    if let Some(n) = &m.prescription_number {
        ids.push(json!({"type": {"text": "prescription number"}, "value": n}));
    }
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
    r.insert(
        "medicationCodeableConcept".into(),
        concept(m.medication.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
    );
    r.insert("subject".into(), subject.cloned().unwrap_or_else(no_patient));
    if statement {
        statement_elements(&mut r, m);
    } else if dispense {
        dispense_elements(&mut r, m, request);
    } else {
        request_elements(&mut r, m, order);
    }
    r
}

/// A MedicationStatement's elements.
fn statement_elements(r: &mut Map<String, Value>, m: &Medication) {
    // a statement of what the patient takes (FHIR in only): not an order
    r.insert("status".into(), json!(m.status.as_deref().unwrap_or("unknown")));
    set_time(r, "effectiveDateTime", m.time.as_ref());
    if let Some(d) = dosage(m, None) {
        r.insert("dosage".into(), json!([d]));
    }
}

/// A MedicationDispense's elements, naming the request of its order.
fn dispense_elements(r: &mut Map<String, Value>, m: &Medication, request: Option<&Value>) {
    // an RXD reports a dispense that happened
    let status = m.status.clone().unwrap_or_else(|| "completed".into());
    r.insert("status".into(), json!(status));
    if let Some(q) = quantity_of(m.amount_min.as_deref(), m.units.as_ref(), m.units_ucum.as_deref()) {
        r.insert("quantity".into(), q);
    }
    set_time(r, "whenHandedOver", m.time.as_ref());
    if let Some(req) = request {
        r.insert("authorizingPrescription".into(), json!([req]));
    }
    if !m.instructions.is_empty() {
        r.insert("dosageInstruction".into(), json!([{"text": m.instructions.join("; ")}]));
    }
}

/// A MedicationRequest's elements, with the status, time, notes and timing of its order.
fn request_elements(r: &mut Map<String, Value>, m: &Medication, order: Option<&Order>) {
    r.insert("status".into(), json!(medication_request_status(m, order)));
    let intent = m
        .intent
        .as_deref()
        .unwrap_or(if m.segment == "RXG" { "instance-order" } else { "order" });
    r.insert("intent".into(), json!(intent));
    if let Some(o) = order {
        set_time(r, "authoredOn", o.transaction_time.as_ref());
        if !o.notes.is_empty() {
            r.insert("note".into(), notes(&o.notes));
        }
    }
    if !r.contains_key("authoredOn") {
        set_time(r, "authoredOn", m.time.as_ref());
    }
    if let Some(d) = dosage(m, order) {
        r.insert("dosageInstruction".into(), json!([d]));
    }
    let mut dispense_request = Map::new();
    if let Some(q) = quantity_of(m.dispense_amount.as_deref(), m.dispense_units.as_ref(), None) {
        dispense_request.insert("quantity".into(), q);
    }
    if let Some(n) = m.refills.as_deref().and_then(|x| x.trim().parse::<u32>().ok()) {
        dispense_request.insert("numberOfRepeatsAllowed".into(), json!(n));
    }
    if !dispense_request.is_empty() {
        r.insert("dispenseRequest".into(), Value::Object(dispense_request));
    }
}

/// One request per order: the RXE (or RXG) when there is one, else the RXO; then the
/// dispenses, each naming the request of its order.
pub(super) fn medication_entries(ev: &ClinicalEvent, subject: Option<&Value>) -> Vec<Value> {
    let mut entries = Vec::new();
    // the first request of each order, looked up by order (no search per dispense)
    let mut requests: std::collections::HashMap<i32, Value> = std::collections::HashMap::new();
    let encoded: std::collections::HashSet<Option<i32>> = ev
        .medications
        .iter()
        .filter(|x| matches!(x.segment.as_str(), "RXE" | "RXG"))
        .map(|x| x.order_index)
        .collect();
    for (i, m) in ev.medications.iter().enumerate() {
        let superseded = m.segment == "RXO" && encoded.contains(&m.order_index);
        if superseded || matches!(m.segment.as_str(), "RXD" | "MedicationDispense") {
            continue;
        }
        let r = medication(ev, i, m, subject, None);
        if let Some(k) = m.order_index {
            requests.entry(k).or_insert_with(|| reference(&r));
        }
        entries.push(entry(r));
    }
    for (i, m) in ev.medications.iter().enumerate() {
        if matches!(m.segment.as_str(), "RXD" | "MedicationDispense") {
            let request = m.order_index.and_then(|k| requests.get(&k));
            entries.push(entry(medication(ev, i, m, subject, request)));
        }
    }
    entries
}
