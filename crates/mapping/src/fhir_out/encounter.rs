//! Encounter.

use super::datatypes::{identifier, set_period};
use super::new_resource;
use serde_json::{Map, Value, json};
use sluice_model::ClinicalEvent;

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const NULL_FLAVOR: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";

pub(super) fn encounter(ev: &ClinicalEvent, subject: Option<&Value>) -> Option<Map<String, Value>> {
    let e = ev.encounter.as_ref()?;
    let mut r = new_resource("Encounter", ev, 0);
    let status = match (ev.message_type.as_str(), ev.trigger_event.as_str()) {
        ("ADT", "A03") => "finished",
        ("ADT", "A11" | "A13" | "A27" | "A38") => "cancelled",
        ("ADT", "A05" | "A14") => "planned",
        ("ADT", "A01" | "A04" | "A02" | "A06" | "A07" | "A08") if e.discharge_time.is_none() => "in-progress",
        _ => "unknown",
    };
    r.insert("status".into(), json!(status));
    let class = match e.patient_class.as_deref() {
        Some("I") => json!({"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"}),
        Some("O") => json!({"system": ACT_CODE, "code": "AMB", "display": "ambulatory"}),
        Some("E") => json!({"system": ACT_CODE, "code": "EMER", "display": "emergency"}),
        Some("P") => json!({"system": ACT_CODE, "code": "PRENC", "display": "pre-admission"}),
        _ => json!({"system": NULL_FLAVOR, "code": "UNK", "display": "unknown"}),
    };
    r.insert("class".into(), class);
    if let Some(v) = &e.visit_number {
        r.insert("identifier".into(), json!([identifier(v)]));
    }
    if let Some(s) = subject {
        r.insert("subject".into(), s.clone());
    }
    set_period(&mut r, "period", e.admit_time.as_ref(), e.discharge_time.as_ref());
    if let Some(l) = &e.location {
        r.insert("location".into(), json!([{"location": {"display": l}}]));
    }
    Some(r)
}
