//! Observation.

use super::Mapper;
use super::grouping::by_reference;
use super::values::{coded, coded_at, quantity_text, ts};
use serde_json::Value;
use sluice_fhir::{first, items, text, text_at};
use sluice_model::{Coded, Observation};

/// FHIR ObservationStatus / DiagnosticReportStatus back to HL7 table 0085/0123, so
/// `result_status` reads the same whatever the source (the FHIR status is kept in `status`).
pub(super) fn v2_result_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "final" => "F",
        "preliminary" | "partial" => "P",
        "corrected" | "amended" => "C",
        "appended" => "A",
        "cancelled" => "X",
        "entered-in-error" => "W",
        "registered" => "I",
        _ => return None,
    })
}

pub(super) fn reference_range(r: &Value) -> Option<String> {
    let rr = first(r, "referenceRange")?;
    if let Some(t) = text_at(rr, &["text"]) {
        return Some(t);
    }
    let low = first(rr, "low").and_then(quantity_text).map(|q| q.0);
    let high = first(rr, "high").and_then(quantity_text).map(|q| q.0);
    match (low, high) {
        (Some(l), Some(h)) => Some(format!("{l}-{h}")),
        (Some(l), None) => Some(format!(">={l}")),
        (None, Some(h)) => Some(format!("<={h}")),
        _ => None,
    }
}

/// An observation's value as the canonical event carries it.
struct ObservedValue {
    /// the HL7 value type (NM, CWE, ST, DTM, TM), empty without a value
    value_type: &'static str,
    values: Vec<String>,
    units: Option<Coded>,
    units_ucum: Option<String>,
}

/// The `value[x]` of an Observation as HL7 would send it.
fn value_of(r: &Value) -> ObservedValue {
    let mut values = Vec::new();
    let mut units = None;
    let mut units_ucum = None;
    let value_type = if let Some(q) = first(r, "valueQuantity") {
        if let Some((v, u, ucum)) = quantity_text(q) {
            values.push(v);
            (units, units_ucum) = (u, ucum);
        }
        "NM"
    } else if let Some(c) = first(r, "valueCodeableConcept").and_then(coded) {
        // code^text^system, as an HL7 CWE value
        values.push(format!(
            "{}^{}^{}",
            c.code.unwrap_or_default(),
            c.text.unwrap_or_default(),
            c.system.unwrap_or_default()
        ));
        "CWE"
    } else if let Some(s) = text_at(r, &["valueString"]) {
        values.push(s);
        "ST"
    } else if let Some((k, v)) = [
        "valueBoolean",
        "valueInteger",
        "valueDateTime",
        "valueTime",
        "valuePeriod",
        "valueRatio",
        "valueRange",
    ]
    .iter()
    .find_map(|k| first(r, k).map(|v| (*k, v)))
    {
        values.push(text(v).unwrap_or_else(|| v.to_string()));
        match k {
            "valueInteger" => "NM",
            "valueDateTime" => "DTM",
            "valueTime" => "TM",
            _ => "ST",
        }
    } else {
        ""
    };
    ObservedValue {
        value_type,
        values,
        units,
        units_ucum,
    }
}

impl<'v> Mapper<'_, 'v> {
    pub(super) fn observation(&mut self, url: Option<&str>, r: &Value) {
        let ObservedValue {
            value_type,
            values,
            units,
            units_ucum,
        } = value_of(r);
        let status = text_at(r, &["status"]);
        let code = coded_at(r, "code");
        let key_basis = first(r, "identifier")
            .and_then(|i| {
                Some(format!(
                    "{}|{}",
                    text_at(i, &["system"]).unwrap_or_default(),
                    text_at(i, &["value"])?
                ))
            })
            .or_else(|| text_at(r, &["id"]).map(|id| format!("Observation/{id}")));
        let idx = self.ev.observations.len();
        self.ev.observations.push(Observation {
            set_id: Some((idx + 1).to_string()),
            order_index: None,
            value_type: (!value_type.is_empty()).then(|| value_type.to_owned()),
            code,
            sub_id: None,
            values,
            units,
            reference_range: reference_range(r),
            abnormal_flags: items(r, "interpretation")
                .into_iter()
                .filter_map(coded)
                .filter_map(|c| c.code.or(c.text))
                .collect(),
            interpretations: items(r, "interpretation").into_iter().filter_map(coded).collect(),
            prior: false,
            result_status: status.as_deref().and_then(v2_result_status).map(str::to_owned),
            observation_time: ts(r, &["effectiveDateTime"])
                .or_else(|| ts(r, &["effectivePeriod", "start"]))
                .or_else(|| ts(r, &["effectiveInstant"])),
            notes: items(r, "note").into_iter().filter_map(|n| text_at(n, &["text"])).collect(),
            status,
            // the same for every version of one result: a correction updates the same resource
            result_key: key_basis.map(|k| sluice_model::ids::uuid_from(&[b"fhir-result", k.as_bytes()])),
            units_ucum,
            specimen_index: first(r, "specimen")
                .and_then(|x| text_at(x, &["reference"]))
                .and_then(|x| by_reference(&self.spec_by_ref, &x).map(|i| i as i32)),
        });
        if let Some(u) = url {
            self.obs_by_ref.insert(u.to_owned(), idx);
        }
        if let Some(id) = text_at(r, &["id"]) {
            self.obs_by_ref.insert(format!("Observation/{id}"), idx);
        }
    }
}
