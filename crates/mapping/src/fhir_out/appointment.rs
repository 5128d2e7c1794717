//! Appointment.

use super::datatypes::{concept, placer_filler, push_extension, set_time};
use super::{new_resource, no_patient};
use serde_json::{Map, Value, json};
use sluice_model::{Appointment, ClinicalEvent};

/// SIU's SCH (HL7 table 0278 filler status, else what the trigger event says) as an Appointment.
pub(super) fn appointment(ev: &ClinicalEvent, a: &Appointment, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Appointment", ev, 0);
    let ids = placer_filler(
        (a.placer_id.as_ref(), a.placer_entity.as_ref()),
        (a.filler_id.as_ref(), a.filler_entity.as_ref()),
    );
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
    let status = status(ev, a);
    r.insert("status".into(), json!(status));
    if let Some(c) = concept(a.event_reason.as_ref()).filter(|_| status == "cancelled") {
        r.insert("cancelationReason".into(), c);
    }
    let services: Vec<Value> = a.services.iter().filter_map(|c| concept(Some(c))).collect();
    if !services.is_empty() {
        r.insert("serviceType".into(), Value::Array(services));
    }
    if let Some(c) = concept(a.appointment_type.as_ref()) {
        r.insert("appointmentType".into(), c);
    }
    if let Some(c) = concept(a.reason.as_ref()) {
        r.insert("reasonCode".into(), json!([c]));
    }
    // start and end are instants: a date alone is kept as sent in the extension
    for (element, t) in [("start", a.start.as_ref()), ("end", a.end.as_ref())] {
        match t {
            Some(t) if matches!(t.precision.as_str(), "year" | "month" | "day") => push_extension(&mut r, element, &t.value),
            _ => set_time(&mut r, element, t),
        }
    }
    if let Some(m) = minutes(a).filter(|m| *m > 0) {
        r.insert("minutesDuration".into(), json!(m));
    }
    r.insert("participant".into(), Value::Array(participants(a, subject)));
    r
}

/// The status: HL7 table 0278 (or a FHIR code, from FHIR in) when sent, else what the trigger
/// event says.
fn status(ev: &ClinicalEvent, a: &Appointment) -> &'static str {
    const FHIR: [&str; 10] = [
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    ];
    let sent = a.status.as_deref().map(str::to_ascii_lowercase);
    match sent.as_deref() {
        Some("booked" | "overbook" | "blocked") => "booked",
        Some("started") => "arrived",
        Some("complete") => "fulfilled",
        Some("dc") => "cancelled",
        Some("deleted") => "entered-in-error",
        // table 0278's Pending, Waitlist, Cancelled, Noshow, and FHIR codes (FHIR in)
        Some(s) if FHIR.contains(&s) => FHIR.iter().find(|f| **f == s).copied().unwrap_or("booked"),
        _ => match ev.trigger_event.as_str() {
            "S15" | "S16" => "cancelled",
            "S17" => "entered-in-error",
            "S26" => "noshow",
            _ => "booked",
        },
    }
}

/// The duration in minutes, when its units are minutes or hours.
fn minutes(a: &Appointment) -> Option<u32> {
    match a
        .duration_units
        .as_ref()
        .and_then(|u| u.code.as_deref())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("min" | "minutes" | "m") => a.duration.as_deref().and_then(|d| d.trim().parse::<u32>().ok()),
        Some("h" | "hr" | "hours") => a.duration.as_deref().and_then(|d| d.trim().parse::<u32>().ok()).map(|h| h * 60),
        _ => None,
    }
}

/// The patient, then the locations, staff and other resources the appointment names.
fn participants(a: &Appointment, subject: Option<&Value>) -> Vec<Value> {
    let mut participants = vec![json!({"actor": subject.cloned().unwrap_or_else(no_patient), "status": "accepted"})];
    for (list, kind) in [(&a.locations, "location"), (&a.staff, "practitioner")] {
        for who in list {
            participants.push(json!({"actor": {"display": who}, "status": "accepted", "type": [{"text": kind}]}));
        }
    }
    for res in &a.resources {
        if let Some(c) = concept(Some(res)) {
            let text = c.get("text").cloned().unwrap_or_else(|| json!("resource"));
            participants.push(json!({"actor": {"display": text}, "status": "accepted", "type": [{"text": "resource"}]}));
        }
    }
    participants
}
