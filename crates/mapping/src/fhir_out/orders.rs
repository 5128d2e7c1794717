//! DiagnosticReport (an order of a result message) and ServiceRequest (any other order).

use super::datatypes::{append_extension, concept, notes, placer_filler, set_period, set_time};
use super::{new_resource, no_patient, ref_of};
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Order};

pub(super) fn report_status(sent: Option<&str>) -> &'static str {
    match sent {
        Some("F") => "final",
        Some("C") => "corrected",
        Some("P" | "R" | "S" | "I") => "partial",
        Some("A") => "appended",
        Some("X") => "cancelled",
        Some("O") => "registered",
        Some("D" | "W") => "entered-in-error",
        _ => "unknown",
    }
}

/// A request's status: ORC-5 order status (table 0038) when sent, else what the order control
/// implies; in ServiceRequest terms (`revoked` for a cancelled or discontinued order).
pub(super) fn request_status(o: &Order) -> &'static str {
    match (o.order_status.as_deref(), o.order_control.as_deref()) {
        (Some("CA" | "DC" | "RP"), _) => "revoked",
        (Some("CM"), _) => "completed",
        (Some("ER"), _) => "entered-in-error",
        (Some("HD"), _) => "on-hold",
        (Some("A" | "IP" | "SC"), _) => "active",
        (_, Some("CA" | "OC" | "CR" | "DC" | "OD")) => "revoked",
        (_, Some("HD" | "OH")) => "on-hold",
        (_, Some(_)) => "active",
        _ => "unknown",
    }
}

/// DiagnosticReport has no `note` in R4: comments on a result order travel in the R5
/// cross-version extension for it.
pub(super) const REPORT_NOTE_EXTENSION: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note";

/// Marks a resource made from a prior-result group (earlier results sent as context with an
/// order, OML^O21 / OMG^O19 PRIOR_RESULT): never a current order or result. The current order's
/// ServiceRequest names them in `supportingInfo`.
pub const PRIOR_RESULT_EXTENSION: &str = "urn:sluice:fhir:StructureDefinition:hl7v2-prior-result";

fn identifiers(o: &Order) -> Vec<Value> {
    placer_filler(
        (o.placer_order_number.as_ref(), o.placer_entity.as_ref()),
        (o.filler_order_number.as_ref(), o.filler_entity.as_ref()),
    )
}

/// The ServiceRequest of an order (v2-to-FHIR ORC/OBR[ServiceRequest]).
fn service_request(ev: &ClinicalEvent, i: usize, o: &Order, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("ServiceRequest", ev, i);
    let ids = identifiers(o);
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
    r.insert("status".into(), json!(request_status(o)));
    r.insert("intent".into(), json!(o.intent.as_deref().unwrap_or("order")));
    if let Some(p) = o.priority.as_deref().and_then(|p| match p {
        "S" => Some("stat"),
        "A" => Some("asap"),
        "R" => Some("routine"),
        _ => None,
    }) {
        r.insert("priority".into(), json!(p));
    }
    if let Some(c) = concept(o.service.as_ref()) {
        r.insert("code".into(), c);
    }
    if o.timing_end.is_some() {
        set_period(&mut r, "occurrencePeriod", o.timing_start.as_ref(), o.timing_end.as_ref());
    } else {
        set_time(&mut r, "occurrenceDateTime", o.timing_start.as_ref().or(o.requested_time.as_ref()));
    }
    set_time(&mut r, "authoredOn", o.transaction_time.as_ref());
    if !o.notes.is_empty() && ev.kind != "result" {
        r.insert("note".into(), notes(&o.notes));
    }
    // ServiceRequest.subject is required: say so rather than invent a patient
    r.insert("subject".into(), subject.cloned().unwrap_or_else(no_patient));
    if o.prior {
        append_extension(&mut r, json!({"url": PRIOR_RESULT_EXTENSION, "valueBoolean": true}));
    }
    r
}

/// The DiagnosticReport of a result order (v2-to-FHIR OBR[DiagnosticReport]), based on the
/// order's ServiceRequest.
fn diagnostic_report(ev: &ClinicalEvent, i: usize, o: &Order, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("DiagnosticReport", ev, i);
    let ids = identifiers(o);
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
    r.insert("basedOn".into(), json!([ref_of(ev, "ServiceRequest", i)]));
    r.insert("status".into(), json!(report_status(o.result_status.as_deref())));
    r.insert(
        "code".into(),
        concept(o.service.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
    );
    set_time(&mut r, "effectiveDateTime", o.observation_time.as_ref());
    for n in &o.notes {
        append_extension(&mut r, json!({"url": REPORT_NOTE_EXTENSION, "valueAnnotation": {"text": n}}));
    }
    if let Some(s) = subject {
        r.insert("subject".into(), s.clone());
    }
    if o.prior {
        append_extension(&mut r, json!({"url": PRIOR_RESULT_EXTENSION, "valueBoolean": true}));
    }
    r
}

/// The orders that become resources: each OBR (an ORC before it lends its order control,
/// status, time and priority), or each ORC when the event has no OBR. With its order index.
fn resource_orders(ev: &ClinicalEvent) -> Vec<(usize, Order)> {
    let has_obr = ev.orders.iter().any(|o| o.segment == "OBR");
    let mut out = Vec::new();
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
            order.placer_order_number = order.placer_order_number.or_else(|| orc.placer_order_number.clone());
            order.placer_entity = order.placer_entity.or_else(|| orc.placer_entity.clone());
            order.filler_order_number = order.filler_order_number.or_else(|| orc.filler_order_number.clone());
            order.filler_entity = order.filler_entity.or_else(|| orc.filler_entity.clone());
        }
        out.push((i, order));
    }
    out
}

/// The resources of the orders: a ServiceRequest each, and for a result message a
/// DiagnosticReport each based on it. Returns (requests, reports), each with its order index.
pub(super) type Resources = Vec<(Option<i32>, Map<String, Value>)>;

pub(super) fn order_resources(ev: &ClinicalEvent, subject: Option<&Value>) -> (Resources, Resources) {
    let mut requests = Vec::new();
    let mut reports = Vec::new();
    for (i, o) in resource_orders(ev) {
        requests.push((Some(i as i32), service_request(ev, i, &o, subject)));
        if ev.kind == "result" {
            reports.push((Some(i as i32), diagnostic_report(ev, i, &o, subject)));
        }
    }
    (requests, reports)
}
