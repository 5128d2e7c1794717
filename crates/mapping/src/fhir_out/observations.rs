//! Observation.

use super::datatypes::{concept, fhir_time, notes, quantity_of, set_time};
use super::specimens::OrderSpecimens;
use super::{RESULT_KEY_SYSTEM, entry, new_resource, reference};
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Coded, Observation};

const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

pub(super) fn interpretation(flag: &str) -> Value {
    match flag {
        "H" | "L" | "HH" | "LL" | "A" | "AA" | "N" | "<" | ">" | "S" | "R" | "I" => {
            json!({"coding": [{"system": INTERPRETATION, "code": flag}]})
        }
        other => json!({"text": other}),
    }
}

/// An SN (structured numeric: comparator^number^separator^number) value as its FHIR element:
/// `^182` and `<^5` quantities, `^1^:^128` a ratio, `^10^-^20` a range; `None` for any other
/// shape (it is then kept as text).
pub(super) fn structured_numeric(value: &str, o: &Observation) -> Option<(&'static str, Value)> {
    let parts: Vec<&str> = value.split('^').map(str::trim).collect();
    let (comparator, n1, separator, n2) = (
        *parts.first()?,
        *parts.get(1)?,
        parts.get(2).copied().unwrap_or(""),
        parts.get(3).copied().unwrap_or(""),
    );
    if parts.len() > 4 {
        return None;
    }
    let q = |n: &str| quantity_of(Some(n), o.units.as_ref(), o.units_ucum.as_deref());
    match separator {
        "" if n2.is_empty() => match comparator {
            "" | "=" => Some(("valueQuantity", q(n1)?)),
            c @ ("<" | "<=" | ">=" | ">") => Some(("valueQuantity", quantity(&format!("{c}{n1}"), o)?)),
            _ => None,
        },
        ":" | "/" if comparator.is_empty() => {
            let plain = |n: &str| quantity_of(Some(n), None, None);
            Some(("valueRatio", json!({"numerator": plain(n1)?, "denominator": plain(n2)?})))
        }
        "-" if comparator.is_empty() => Some(("valueRange", json!({"low": q(n1)?, "high": q(n2)?}))),
        _ => None,
    }
}

/// A numeric value with an optional comparator (`<5`, `>=10`), or `None` when not numeric.
pub(super) fn quantity(value: &str, o: &Observation) -> Option<Value> {
    let v = value.trim();
    let (comparator, number) = ["<=", ">=", "<", ">"]
        .iter()
        .find_map(|c| v.strip_prefix(c).map(|rest| (Some(*c), rest.trim())))
        .unwrap_or((None, v));
    // the number as sent (an integer stays an integer); JSON cannot keep trailing zeros of a
    // decimal (`6.10` is written `6.1`), the units and status are unaffected
    let mut q = quantity_of(Some(number), o.units.as_ref(), o.units_ucum.as_deref())?;
    if let (Some(c), Some(map)) = (comparator, q.as_object_mut()) {
        map.insert("comparator".into(), json!(c));
    }
    Some(q)
}

fn observation(ev: &ClinicalEvent, i: usize, o: &Observation, subject: Option<&Value>, specimen: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Observation", ev, i);
    if let Some(k) = &o.result_key {
        r.insert("identifier".into(), json!([{"system": RESULT_KEY_SYSTEM, "value": k}]));
    }
    r.insert("status".into(), json!(o.status.as_deref().unwrap_or("unknown")));
    r.insert(
        "code".into(),
        concept(o.code.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
    );
    if let Some(s) = subject {
        r.insert("subject".into(), s.clone());
    }
    set_time(&mut r, "effectiveDateTime", o.observation_time.as_ref());
    if let Some((element, v)) = value_element(o) {
        r.insert(element.into(), v);
    }
    if let Some(range) = &o.reference_range {
        r.insert("referenceRange".into(), json!([{"text": range}]));
    }
    if !o.abnormal_flags.is_empty() {
        r.insert(
            "interpretation".into(),
            Value::Array(o.abnormal_flags.iter().map(|f| interpretation(f)).collect()),
        );
    }
    if !o.notes.is_empty() {
        r.insert("note".into(), notes(&o.notes));
    }
    if let Some(s) = specimen {
        r.insert("specimen".into(), s.clone());
    }
    r
}

/// The `value[x]` element of an observation's values, by their HL7 value type; `None` when
/// nothing was sent.
fn value_element(o: &Observation) -> Option<(&'static str, Value)> {
    let values: Vec<&String> = o.values.iter().filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return None;
    }
    let joined = values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join("\n");
    let single = values.len() == 1;
    let numeric = matches!(o.value_type.as_deref(), Some("NM" | "SN")) && single;
    // a coded value (code^text^system^alt code^alt text^alt system, as the canonical event
    // carries CE/CWE/CNE text) becomes a CodeableConcept
    let coded = (matches!(o.value_type.as_deref(), Some("CE" | "CWE" | "CNE")) && single)
        .then(|| {
            let c: Vec<Option<String>> = values[0].split('^').map(|x| (!x.is_empty()).then(|| x.to_owned())).collect();
            let at = |i: usize| c.get(i).cloned().flatten();
            concept(Some(&Coded {
                code: at(0),
                text: at(1),
                system: at(2),
                alt_code: at(3),
                alt_text: at(4),
                alt_system: at(5),
            }))
        })
        .flatten();
    let structured = (o.value_type.as_deref() == Some("SN") && single)
        .then(|| structured_numeric(values[0], o))
        .flatten();
    // a date or time value keeps its own precision; one without an offset stays text
    let time = (matches!(o.value_type.as_deref(), Some("DT" | "DTM" | "TS")) && single)
        .then(|| sluice_model::time::parse_hl7(values[0]).and_then(|t| fhir_time(&t).ok()))
        .flatten();
    Some(if let Some((element, v)) = structured {
        (element, v)
    } else if let Some(q) = numeric.then(|| quantity(values[0], o)).flatten() {
        ("valueQuantity", q)
    } else if let Some(t) = time {
        ("valueDateTime", json!(t))
    } else if let Some(c) = coded {
        ("valueCodeableConcept", c)
    } else {
        ("valueString", json!(joined))
    })
}

/// The Observations, each of its specimen, and named in the `result` of its order's
/// DiagnosticReport.
pub(super) fn observation_entries(
    ev: &ClinicalEvent,
    subject: Option<&Value>,
    specimens: &[Map<String, Value>],
    of_order: &OrderSpecimens,
    reports: &mut [(Option<i32>, Map<String, Value>)],
) -> Vec<Value> {
    let mut entries = Vec::new();
    // each order's DiagnosticReport, found by order index without a search per observation
    let mut report_of: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
    for (at, (k, r)) in reports.iter().enumerate().rev() {
        if let Some(k) = k
            && r["resourceType"] == "DiagnosticReport"
        {
            report_of.insert(*k, at);
        }
    }
    for (i, o) in ev.observations.iter().enumerate() {
        let spec = o
            .specimen_index
            .or_else(|| of_order.of(o.order_index))
            .and_then(|x| specimens.get(x as usize))
            .map(reference);
        let obs = observation(ev, i, o, subject, spec.as_ref());
        if let Some((_, report)) = o.order_index.and_then(|k| report_of.get(&k)).and_then(|at| reports.get_mut(*at)) {
            let refs = report.entry("result").or_insert_with(|| json!([]));
            if let Some(list) = refs.as_array_mut() {
                list.push(reference(&obs));
            }
        }
        entries.push(entry(obs));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::super::bundle;
    use super::*;

    #[test]
    fn structured_numeric_dates_and_coded_values_take_their_fhir_types() {
        let obs = |value_type: &str, value: &str| {
            let ev = ClinicalEvent {
                event_id: "e".into(),
                observations: vec![Observation {
                    value_type: Some(value_type.into()),
                    values: vec![value.into()],
                    units: Some(Coded {
                        code: Some("mmol/L".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let b = bundle(&ev);
            b["entry"][0]["resource"].clone()
        };
        assert_eq!(obs("SN", "^182")["valueQuantity"]["value"], 182);
        assert_eq!(obs("SN", "<^5")["valueQuantity"]["comparator"], "<");
        assert_eq!(obs("SN", "^1^:^128")["valueRatio"]["denominator"]["value"], 128);
        assert_eq!(obs("SN", "^10^-^20")["valueRange"]["high"]["value"], 20);
        assert_eq!(
            obs("SN", "^1^+")["valueString"],
            "^1^+",
            "a shape FHIR has no element for stays text"
        );
        assert_eq!(obs("DT", "20210818")["valueDateTime"], "2021-08-18");
        assert_eq!(
            obs("DTM", "20210818101500")["valueString"],
            "20210818101500",
            "no offset: not invented"
        );
        assert_eq!(
            obs("CWE", "V01^Not eligible^HL70064")["valueCodeableConcept"]["coding"][0]["system"],
            "http://terminology.hl7.org/CodeSystem/v2-0064"
        );
        assert_eq!(obs("NM", "4.2")["valueQuantity"]["unit"], "mmol/L");
    }
}
