//! DiagnosticReport (an order of a result message) and ServiceRequest (any other order).

use super::datatypes::{append_extension, concept, notes, placer_filler, set_period, set_time};
use super::new_resource;
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

fn order_resource(ev: &ClinicalEvent, i: usize, o: &Order, subject: Option<&Value>) -> Map<String, Value> {
    let is_result = ev.kind == "result";
    let mut r = new_resource(if is_result { "DiagnosticReport" } else { "ServiceRequest" }, ev, i);
    let ids = placer_filler(o.placer_order_number.as_ref(), o.filler_order_number.as_ref());
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
    if is_result {
        r.insert("status".into(), json!(report_status(o.result_status.as_deref())));
        r.insert(
            "code".into(),
            concept(o.service.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
        );
        set_time(&mut r, "effectiveDateTime", o.observation_time.as_ref());
    } else {
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
        if !o.notes.is_empty() {
            r.insert("note".into(), notes(&o.notes));
        }
    }
    if is_result {
        for n in &o.notes {
            append_extension(&mut r, json!({"url": REPORT_NOTE_EXTENSION, "valueAnnotation": {"text": n}}));
        }
    }
    match subject {
        Some(s) => {
            r.insert("subject".into(), s.clone());
        }
        // ServiceRequest.subject is required: say so rather than invent a patient
        None if !is_result => {
            r.insert("subject".into(), json!({"display": "no patient identified in the message"}));
        }
        None => {}
    }
    r
}

/// One resource per order: the OBR when there is one (an ORC before it lends its order
/// control), else the ORC alone; results become DiagnosticReports, others ServiceRequests.
/// Each with the index of its order.
pub(super) fn order_resources(ev: &ClinicalEvent, subject: Option<&Value>) -> Vec<(Option<i32>, Map<String, Value>)> {
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
        reports.push((Some(i as i32), order_resource(ev, i, &order, subject)));
    }
    reports
}
