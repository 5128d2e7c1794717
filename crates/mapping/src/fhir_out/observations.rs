//! Observation.

use super::datatypes::{append_extension, coding, concept, fhir_time, notes, quantity_of, set_time, system_url};
use super::orders::PRIOR_RESULT_EXTENSION;
use super::specimens::OrderSpecimens;
use super::{RESULT_KEY_SYSTEM, entry, new_resource, ref_of, reference};
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Coded, Observation};
use std::collections::HashMap;

const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const V2_0078: &str = "http://terminology.hl7.org/CodeSystem/v2-0078";
/// R5 cross-version extension for Observation.value[x]: R4 has no Attachment value (the
/// v2-to-FHIR OBX[Observation] row for ED and RP values).
pub const VALUE_ATTACHMENT_EXTENSION: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value";
/// The units sent with a value that has no FHIR Quantity form (text, a code), so they are kept.
pub const UNITS_EXTENSION: &str = "urn:sluice:fhir:StructureDefinition:hl7v2-units";

/// OBX-8 (v2-to-FHIR OBX[Observation] row OBX-8 with the InterpretationCodes concept map): a
/// table 0078 code becomes its v3 ObservationInterpretation coding, and the coding as sent is
/// kept beside it (v2-0078, or the system it was sent with); CWE-9 is the text. A flag outside
/// table 0078 keeps its sent coding only (the event carries a warning for it).
pub(super) fn interpretation(c: &Coded) -> Option<Value> {
    let code = c.code.as_deref().map(str::trim).filter(|x| !x.is_empty());
    let mut codings = Vec::new();
    if let Some((k, display)) = code.and_then(crate::tables::interpretation_0078)
        && !display.is_empty()
    {
        codings.push(json!({"system": INTERPRETATION, "code": k, "display": display}));
    }
    if let Some(k) = code {
        // the code as sent: in v2-0078 when it is a table 0078 code, else with the system it came
        // with, or none (a flag outside the table is not claimed for it)
        let in_table = crate::tables::interpretation_0078(k).is_some();
        let system = match c.system.as_deref() {
            None | Some("HL70078" | "HL7nnnn" | "") => in_table.then(|| V2_0078.to_owned()),
            Some(other) => system_url(Some(other)).map(|u| u.into_owned()),
        };
        let mut sent = json!({"code": k});
        if let Some(s) = system {
            sent["system"] = json!(s);
        }
        if let Some(t) = &c.text {
            sent["display"] = json!(t);
        }
        codings.push(sent);
    }
    if let Some(alt) = coding(c.alt_code.as_deref(), c.alt_text.as_deref(), c.alt_system.as_deref()) {
        codings.push(alt);
    }
    let mut v = Map::new();
    if !codings.is_empty() {
        v.insert("coding".into(), Value::Array(codings));
    }
    if let Some(t) = c.original_text.clone().or_else(|| code.is_none().then(|| c.text.clone()).flatten()) {
        v.insert("text".into(), json!(t));
    }
    (!v.is_empty()).then_some(Value::Object(v))
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

/// Where an observation belongs: its specimen, and the request it answers (the order's
/// ServiceRequest, or for an OBX of a pharmacy order its MedicationRequest).
pub(super) struct Links {
    pub(super) specimen: Option<Value>,
    pub(super) based_on: Option<Value>,
}

fn observation(ev: &ClinicalEvent, i: usize, o: &Observation, subject: Option<&Value>, links: &Links) -> Map<String, Value> {
    let mut r = new_resource("Observation", ev, i);
    if let Some(k) = &o.result_key {
        r.insert("identifier".into(), json!([{"system": RESULT_KEY_SYSTEM, "value": k}]));
    }
    if let Some(b) = &links.based_on {
        r.insert("basedOn".into(), json!([b]));
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
    set_values(&mut r, o);
    let interpretations: Vec<Value> = if o.interpretations.is_empty() {
        o.abnormal_flags
            .iter()
            .filter_map(|f| {
                interpretation(&Coded {
                    code: Some(f.clone()),
                    ..Default::default()
                })
            })
            .collect()
    } else {
        o.interpretations.iter().filter_map(interpretation).collect()
    };
    if !interpretations.is_empty() {
        r.insert("interpretation".into(), Value::Array(interpretations));
    }
    if !o.notes.is_empty() {
        r.insert("note".into(), notes(&o.notes));
    }
    if let Some(s) = &links.specimen {
        r.insert("specimen".into(), s.clone());
    }
    if o.prior {
        append_extension(&mut r, json!({"url": PRIOR_RESULT_EXTENSION, "valueBoolean": true}));
    }
    r
}

/// The value(s) of an observation. One value is `value[x]`. Several (OBX-5 repetitions) follow
/// the v2-to-FHIR OBX[Observation-Component] row: a component each, with the observation's code,
/// units and reference range; text (ST, TX, FT) stays one string, a line per repetition. ED and
/// RP are Attachments (R5 extension). Units that no value element can carry travel in an
/// extension: a unit that was sent is never dropped.
fn set_values(r: &mut Map<String, Value>, o: &Observation) {
    let values: Vec<&String> = o.values.iter().filter(|v| !v.is_empty()).collect();
    let text = matches!(o.value_type.as_deref(), Some("ST" | "TX" | "FT") | None);
    if matches!(o.value_type.as_deref(), Some("ED" | "RP")) {
        for a in values.iter().filter_map(|v| value_attachment(o.value_type.as_deref(), v)) {
            append_extension(r, json!({"url": VALUE_ATTACHMENT_EXTENSION, "valueAttachment": a}));
        }
    } else if values.len() > 1 && !text {
        let components: Vec<Value> = values
            .iter()
            .map(|v| {
                let mut c = Map::new();
                c.insert(
                    "code".into(),
                    concept(o.code.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
                );
                let (element, value) = value_element(o, &[v]).unwrap_or(("valueString", json!(v)));
                c.insert(element.into(), value);
                if let Some(range) = &o.reference_range {
                    c.insert("referenceRange".into(), json!([{"text": range}]));
                }
                Value::Object(c)
            })
            .collect();
        r.insert("component".into(), Value::Array(components));
    } else if let Some((element, v)) = value_element(o, &values) {
        r.insert(element.into(), v);
    }
    if !r.contains_key("component")
        && let Some(range) = &o.reference_range
    {
        r.insert("referenceRange".into(), json!([{"text": range}]));
    }
    let carried = |v: &Value| ["valueQuantity", "valueRange", "valueRatio"].iter().any(|k| v.get(k).is_some());
    let units_carried = carried(&Value::Object(r.clone()))
        || r.get("component")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().all(carried));
    if !units_carried && let Some(u) = concept(o.units.as_ref()) {
        append_extension(r, json!({"url": UNITS_EXTENSION, "valueCodeableConcept": u}));
    }
}

/// An ED (`source^type^subtype^encoding^data`) or RP (`pointer^application^type^subtype`) value
/// as an Attachment (v2-to-FHIR ED[Attachment], RP[Attachment]).
pub(super) fn value_attachment(value_type: Option<&str>, v: &str) -> Option<Value> {
    let parts: Vec<&str> = v.split('^').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or("");
    if value_type == Some("RP") {
        let url = part(0);
        if url.is_empty() {
            return None;
        }
        let mut a = json!({"url": url});
        if let Some(ct) = content_type(part(2), part(3)) {
            a["contentType"] = json!(ct);
        }
        return Some(a);
    }
    let (kind, subtype, encoding, data) = (part(1), part(2), part(3), part(4));
    let bytes = match encoding.to_ascii_lowercase().as_str() {
        "base64" => {
            return Some(
                json!({"contentType": content_type(kind, subtype).unwrap_or_else(|| "application/octet-stream".into()), "data": data.replace(['\r', '\n'], "")}),
            );
        }
        "hex" => (0..data.len() / 2)
            .map(|i| u8::from_str_radix(data.get(2 * i..2 * i + 2).unwrap_or("zz"), 16).ok())
            .collect::<Option<Vec<u8>>>()?,
        // A (ASCII) or anything else: the text itself
        _ => data.as_bytes().to_vec(),
    };
    Some(json!({
        "contentType": content_type(kind, subtype).unwrap_or_else(|| "text/plain".into()),
        "data": super::documents::base64(&bytes)
    }))
}

/// A MIME type from HL7 type and subtype (tables 0191 and 0291).
fn content_type(kind: &str, subtype: &str) -> Option<String> {
    let (k, s) = (kind.to_ascii_lowercase(), subtype.to_ascii_lowercase());
    Some(match (k.as_str(), s.as_str()) {
        (_, "pdf") => "application/pdf".into(),
        (_, "rtf") => "text/rtf".into(),
        (_, "html") => "text/html".into(),
        (_, "xml") => "application/xml".into(),
        ("im" | "image", "jpg" | "jpeg") => "image/jpeg".into(),
        ("im" | "image", s) if !s.is_empty() => format!("image/{s}"),
        ("tx" | "text", s) if !s.is_empty() => format!("text/{s}"),
        ("tx" | "text", _) => "text/plain".into(),
        ("ap" | "application", s) if !s.is_empty() => format!("application/{s}"),
        ("audio" | "au", s) if !s.is_empty() => format!("audio/{s}"),
        ("video" | "vi", s) if !s.is_empty() => format!("video/{s}"),
        (k, s) if !k.is_empty() && !s.is_empty() && k.len() > 2 => format!("{k}/{s}"),
        _ => return None,
    })
}

/// The `value[x]` element of an observation's values, by their HL7 value type; `None` when
/// nothing was sent.
fn value_element(o: &Observation, values: &[&String]) -> Option<(&'static str, Value)> {
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
                original_text: None,
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

/// Each order's resource position, by order index (the first one wins), so no observation
/// searches for its order.
fn by_order(resources: &[(Option<i32>, Map<String, Value>)]) -> HashMap<i32, usize> {
    let mut at = HashMap::new();
    for (n, (k, _)) in resources.iter().enumerate().rev() {
        if let Some(k) = k {
            at.insert(*k, n);
        }
    }
    at
}

/// The medication request of each pharmacy order (RXE or RXG, else RXO), by order index.
fn medication_requests(ev: &ClinicalEvent) -> HashMap<i32, Value> {
    let mut out = HashMap::new();
    for prefer_encoded in [true, false] {
        for (i, m) in ev.medications.iter().enumerate() {
            let encoded = matches!(m.segment.as_str(), "RXE" | "RXG");
            if let Some(k) = m.order_index
                && (encoded == prefer_encoded)
                && matches!(m.segment.as_str(), "RXE" | "RXG" | "RXO")
            {
                out.entry(k).or_insert_with(|| ref_of(ev, "MedicationRequest", i));
            }
        }
    }
    out
}

/// The Observations, each of its specimen. In a result message each is based on its order's
/// request (`basedOn` the ServiceRequest) and named in the `result` of its order's
/// DiagnosticReport; an ED or RP result is also the report's `presentedForm`. In an order
/// message an OBX supports the order (v2-to-FHIR OML_O21: ServiceRequest.supportingInfo), so the
/// order's ServiceRequest names it in `supportingInfo`.
pub(super) fn observation_entries(
    ev: &ClinicalEvent,
    subject: Option<&Value>,
    specimens: &[Map<String, Value>],
    of_order: &OrderSpecimens,
    requests: &mut [(Option<i32>, Map<String, Value>)],
    reports: &mut [(Option<i32>, Map<String, Value>)],
) -> Vec<Value> {
    let results = ev.kind == "result";
    let mut entries = Vec::new();
    let report_of = by_order(reports);
    let request_of = by_order(requests);
    let medication_of = medication_requests(ev);
    for (i, o) in ev.observations.iter().enumerate() {
        let links = Links {
            specimen: o
                .specimen_index
                .or_else(|| of_order.of(o.order_index))
                .and_then(|x| specimens.get(x as usize))
                .map(reference),
            based_on: o.order_index.filter(|_| results).and_then(|k| {
                request_of
                    .get(&k)
                    .map(|at| reference(&requests[*at].1))
                    .or_else(|| medication_of.get(&k).cloned())
            }),
        };
        let obs = observation(ev, i, o, subject, &links);
        if !results
            && !o.prior
            && let Some(at) = o.order_index.and_then(|k| request_of.get(&k))
        {
            push_to(&mut requests[*at].1, "supportingInfo", reference(&obs));
        }
        if let Some((_, report)) = o.order_index.and_then(|k| report_of.get(&k)).and_then(|at| reports.get_mut(*at)) {
            push_to(report, "result", reference(&obs));
            if matches!(o.value_type.as_deref(), Some("ED" | "RP")) {
                for a in o.values.iter().filter_map(|v| value_attachment(o.value_type.as_deref(), v)) {
                    push_to(report, "presentedForm", a);
                }
            }
        }
        entries.push(entry(obs));
    }
    entries
}

fn push_to(r: &mut Map<String, Value>, key: &str, v: Value) {
    if let Some(list) = r.entry(key).or_insert_with(|| json!([])).as_array_mut() {
        list.push(v);
    }
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
