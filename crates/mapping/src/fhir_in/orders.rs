//! DiagnosticReport and ServiceRequest: the canonical orders.

use super::Mapper;
use super::grouping::by_reference;
use super::observations::v2_result_status;
use super::values::{coded_at, ts};
use serde_json::Value;
use sluice_fhir::{items, resource_type, text_at};
use sluice_model::Order;

/// FHIR RequestStatus back to HL7 table 0038, as the canonical order carries it.
pub(super) fn v2_order_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "active" => "IP",
        "completed" => "CM",
        "revoked" => "CA",
        "on-hold" => "HD",
        "entered-in-error" => "ER",
        "draft" => "SC",
        _ => return None,
    })
}

impl<'v> Mapper<'_, 'v> {
    pub(super) fn order(&mut self, r: &Value) {
        let is_report = resource_type(r) == Some("DiagnosticReport");
        let ids = items(r, "identifier");
        let typed = |code: &str| {
            ids.iter()
                .find(|i| text_at(i, &["type", "coding", "code"]).as_deref() == Some(code))
                .and_then(|i| text_at(i, &["value"]))
        };
        let status = text_at(r, &["status"]);
        let k = self.ev.orders.len() as i32;
        let mut o = Order {
            segment: resource_type(r).unwrap_or_default().to_owned(),
            set_id: Some((k + 1).to_string()),
            placer_order_number: typed("PLAC").or_else(|| (!is_report).then(|| ids.first().and_then(|i| text_at(i, &["value"]))).flatten()),
            filler_order_number: typed("FILL").or_else(|| is_report.then(|| ids.first().and_then(|i| text_at(i, &["value"]))).flatten()),
            service: coded_at(r, "code"),
            notes: items(r, "note").into_iter().filter_map(|n| text_at(n, &["text"])).collect(),
            intent: text_at(r, &["intent"]),
            ..Default::default()
        };
        if is_report {
            o.result_status = status.as_deref().and_then(v2_result_status).map(str::to_owned);
            o.observation_time = ts(r, &["effectiveDateTime"]).or_else(|| ts(r, &["effectivePeriod", "start"]));
            if let Some(c) = text_at(r, &["conclusion"]) {
                o.notes.push(c);
            }
            for res in items(r, "result") {
                let target = text_at(res, &["reference"]).and_then(|x| by_reference(&self.obs_by_ref, &x));
                match target.and_then(|i| self.ev.observations.get_mut(i)) {
                    Some(obs) => obs.order_index = Some(k),
                    None => self.ev.warnings.push("fhir_reference_unresolved".into()),
                }
            }
        } else {
            o.order_status = status.as_deref().and_then(v2_order_status).map(str::to_owned);
            o.priority = text_at(r, &["priority"]).map(|p| match p.as_str() {
                "stat" => "S".to_owned(),
                "asap" => "A".to_owned(),
                "routine" => "R".to_owned(),
                other => other.to_owned(),
            });
            o.transaction_time = ts(r, &["authoredOn"]);
            o.requested_time = ts(r, &["occurrenceDateTime"]);
            o.timing_start = ts(r, &["occurrencePeriod", "start"]);
            o.timing_end = ts(r, &["occurrencePeriod", "end"]);
        }
        self.ev.orders.push(o);
    }
}
