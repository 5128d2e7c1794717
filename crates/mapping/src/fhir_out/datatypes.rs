//! The FHIR datatypes the resources are built from: times and periods (with the extension for
//! a time that has no FHIR form), codings and CodeableConcepts, Identifiers, Quantities and
//! Annotations, and the tidying FHIR's JSON rules ask of the whole Bundle.

use super::TIMESTAMP_EXTENSION;
use crate::NHS_NUMBER_SYSTEM;
use serde_json::{Map, Value, json};
use sluice_model::time::calendar_valid;
use sluice_model::{Coded, EntityId, Identifier, Timestamp};

pub(super) const UCUM: &str = "http://unitsofmeasure.org";
pub(super) const LOINC: &str = "http://loinc.org";
pub(super) const SNOMED: &str = "http://snomed.info/sct";
pub(super) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// The FHIR form of an HL7 timestamp: `Ok` with a FHIR date or dateTime, or `Err` with the
/// value as sent when it has a time but no offset (or cannot be read).
pub(super) fn fhir_time(t: &Timestamp) -> Result<String, String> {
    let v = t.value.as_str();
    // already in FHIR form (an event normalised from FHIR: YYYY-MM, YYYY-MM-DD...), which
    // parse_fhir has checked; an HL7 year with an offset (YYYY-ZZZZ) is not that form
    let b = v.as_bytes();
    if b.get(4) == Some(&b'-') && (b.len() == 7 || b.get(7) == Some(&b'-')) {
        return if t.precision == "invalid" {
            Err(v.to_owned())
        } else {
            Ok(v.to_owned())
        };
    }
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let d = |a: usize, b: usize| digits.get(a..b);
    match t.precision.as_str() {
        "year" => return d(0, 4).map(str::to_owned).ok_or_else(|| v.to_owned()),
        "month" | "day" if !calendar_valid(&digits) => return Err(v.to_owned()),
        "month" => return Ok(format!("{}-{}", d(0, 4).unwrap_or_default(), d(4, 6).unwrap_or_default())),
        "day" => {
            return Ok(format!(
                "{}-{}-{}",
                d(0, 4).unwrap_or_default(),
                d(4, 6).unwrap_or_default(),
                d(6, 8).unwrap_or_default()
            ));
        }
        "hour" | "minute" | "second" | "subsecond" => {}
        _ => return Err(v.to_owned()),
    }
    if !calendar_valid(&digits) {
        return Err(v.to_owned());
    }
    let Some(offset) = t.offset_minutes.filter(|o| o.abs() <= 14 * 60) else {
        return Err(v.to_owned());
    };
    // FHIR needs seconds once a time is given: an hour or minute precision time is written
    // with zero minutes/seconds (the value as sent is kept in the extension alongside)
    let fraction = v
        .find('.')
        .map(|i| v[i..].chars().take_while(|c| *c == '.' || c.is_ascii_digit()).collect::<String>())
        .unwrap_or_default();
    let sign = if offset < 0 { '-' } else { '+' };
    Ok(format!(
        "{}-{}-{}T{}:{}:{}{}{}{:02}:{:02}",
        d(0, 4).unwrap_or_default(),
        d(4, 6).unwrap_or_default(),
        d(6, 8).unwrap_or_default(),
        d(8, 10).unwrap_or("00"),
        d(10, 12).unwrap_or("00"),
        d(12, 14).unwrap_or("00"),
        fraction,
        sign,
        offset.unsigned_abs() / 60,
        offset.unsigned_abs() % 60
    ))
}

/// Sets `name` (a dateTime element) from a timestamp, or records the value as sent in an
/// extension on the resource when it has no FHIR form.
pub(super) fn set_time(resource: &mut Map<String, Value>, name: &str, t: Option<&Timestamp>) {
    let Some(t) = t else { return };
    match fhir_time(t) {
        Ok(v) => {
            resource.insert(name.into(), Value::String(v));
            if matches!(t.precision.as_str(), "hour" | "minute") {
                push_extension(resource, name, &t.value);
            }
        }
        Err(sent) => push_extension(resource, name, &sent),
    }
}

/// Sets a Period element `name` from a start and an end (either may be absent or kept only in
/// the extension, see [`set_time`]); nothing when both are absent.
pub(super) fn set_period(resource: &mut Map<String, Value>, name: &str, start: Option<&Timestamp>, end: Option<&Timestamp>) {
    let mut period = Map::new();
    set_time(&mut period, "start", start);
    set_time(&mut period, "end", end);
    if !period.is_empty() {
        resource.insert(name.into(), Value::Object(period));
    }
}

pub(super) fn push_extension(resource: &mut Map<String, Value>, element: &str, sent: &str) {
    let ext = json!({
        "url": TIMESTAMP_EXTENSION,
        "extension": [
            {"url": "element", "valueString": element},
            {"url": "sent", "valueString": sent}
        ]
    });
    append_extension(resource, ext);
}

pub(super) fn append_extension(resource: &mut Map<String, Value>, ext: Value) {
    match resource.get_mut("extension").and_then(Value::as_array_mut) {
        Some(list) => list.push(ext),
        None => {
            resource.insert("extension".into(), json!([ext]));
        }
    }
}

/// The code system URI of an HL7 v2 coding system name; a URI (from FHIR in) is kept as sent.
pub(super) fn system_url(system: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(Cow::Borrowed(match system? {
        uri if uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("urn:") => uri,
        "LN" | "LOINC" => LOINC,
        "SCT" | "SNM" | "SNOMED" | "SNOMED-CT" => SNOMED,
        "UCUM" => UCUM,
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "MVX" => "http://terminology.hl7.org/CodeSystem/MVX",
        "RXNORM" | "RXN" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "ICD10" | "I10" => "http://hl7.org/fhir/sid/icd-10",
        "DMD" | "dm+d" => "https://dmd.nhs.uk",
        // an HL7 table (HL70163: body site) is its terminology.hl7.org code system
        table if table.len() == 7 && table.starts_with("HL7") && table[3..].bytes().all(|b| b.is_ascii_digit()) => {
            return Some(Cow::Owned(format!("http://terminology.hl7.org/CodeSystem/v2-{}", &table[3..])));
        }
        // any other coding system name (a local `L`, `99ZZZ` ...) is kept as a name URI, so a
        // code never loses the system it belongs to
        other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_graphic()) => {
            return Some(Cow::Owned(format!("urn:id:{other}")));
        }
        _ => return None,
    }))
}

pub(super) fn coding(code: Option<&str>, text: Option<&str>, system: Option<&str>) -> Option<Value> {
    let code = code.filter(|c| !c.is_empty())?;
    let mut c = Map::new();
    if let Some(url) = system_url(system) {
        c.insert("system".into(), json!(url));
    }
    c.insert("code".into(), json!(code));
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        c.insert("display".into(), json!(t));
    }
    Some(Value::Object(c))
}

/// A CodeableConcept from an HL7 coded element; the local system name, when not a known code
/// system, stays in the text so nothing is lost.
pub(super) fn concept(c: Option<&Coded>) -> Option<Value> {
    let c = c?;
    let codings: Vec<Value> = [
        coding(c.code.as_deref(), c.text.as_deref(), c.system.as_deref()),
        coding(c.alt_code.as_deref(), c.alt_text.as_deref(), c.alt_system.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    // CWE-9 original text is what the user saw, so it is the concept's text (v2-to-FHIR CWE)
    let text = c.original_text.clone().or_else(|| c.text.clone()).or_else(|| c.code.clone());
    if codings.is_empty() && text.is_none() {
        return None;
    }
    let mut v = Map::new();
    if !codings.is_empty() {
        v.insert("coding".into(), Value::Array(codings));
    }
    if let Some(t) = text {
        v.insert("text".into(), json!(t));
    }
    Some(Value::Object(v))
}

pub(super) fn identifier(id: &Identifier) -> Value {
    let mut v = Map::new();
    let is_oid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') && s.contains('.');
    match (&id.system, id.nhs_number_valid) {
        (Some(s), Some(true)) if s == NHS_NUMBER_SYSTEM => {
            v.insert("system".into(), json!(NHS_NUMBER_SYSTEM));
        }
        // an NHS number failing its check digit is kept, but not as an NHS number
        (Some(_), Some(false)) => {
            v.insert("type".into(), json!({"text": "NHS number as sent (fails the check digit)"}));
        }
        _ => {
            if let Some(a) = id.assigning_authority.as_deref().filter(|a| is_oid(a)) {
                v.insert("system".into(), json!(format!("urn:oid:{a}")));
            }
            if let Some(t) = id.type_code.as_deref().filter(|t| !t.is_empty()) {
                v.insert("type".into(), json!({"coding": [{"system": V2_0203, "code": t}]}));
            }
        }
    }
    v.insert("value".into(), json!(id.value));
    if let Some(a) = id.assigning_authority.as_deref().filter(|a| !a.is_empty()) {
        v.insert("assigner".into(), json!({"display": a}));
    }
    Value::Object(v)
}

/// Placer and filler numbers as identifiers typed PLAC and FILL (HL7 table 0203).
/// The placer's and filler's numbers as Identifiers typed PLAC and FILL (v2-to-FHIR
/// ORC[ServiceRequest] / OBR[DiagnosticReport] rows), each with its assigner when sent.
pub(super) fn placer_filler(placer: (Option<&String>, Option<&EntityId>), filler: (Option<&String>, Option<&EntityId>)) -> Vec<Value> {
    [(placer, "PLAC"), (filler, "FILL")]
        .into_iter()
        .filter_map(|((value, entity), kind)| {
            let mut id = match entity {
                Some(e) => entity_identifier(e),
                None => json!({"value": value?}),
            };
            id["type"] = json!({"coding": [{"system": V2_0203, "code": kind}]});
            Some(id)
        })
        .collect()
}

/// An EI as an Identifier (v2-to-FHIR EI[Identifier-System]): EI-1 is the value; a universal id
/// becomes the system (`urn:oid:` for ISO, `urn:uuid:` for UUID, itself when a URI); a namespace
/// id alone names the assigner. No HL7 delimiter is left in any part.
pub(super) fn entity_identifier(e: &EntityId) -> Value {
    let mut v = Map::new();
    let system = e
        .universal_id
        .as_deref()
        .and_then(|u| match e.universal_id_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("ISO") => Some(format!("urn:oid:{u}")),
            Some("UUID" | "GUID") => Some(format!("urn:uuid:{}", u.to_ascii_lowercase())),
            Some("URI" | "URL") => Some(u.to_owned()),
            _ if u.starts_with("urn:") || u.starts_with("http://") || u.starts_with("https://") => Some(u.to_owned()),
            _ if !u.is_empty() && u.chars().all(|c| c.is_ascii_digit() || c == '.') && u.contains('.') => Some(format!("urn:oid:{u}")),
            _ => None,
        });
    if let Some(s) = system {
        v.insert("system".into(), json!(s));
    }
    v.insert("value".into(), json!(e.value));
    let assigner = e
        .namespace
        .clone()
        .or_else(|| e.universal_id.clone().filter(|_| !v.contains_key("system")));
    if let Some(a) = assigner {
        v.insert("assigner".into(), json!({"display": a}));
    }
    Value::Object(v)
}

pub(super) fn notes(list: &[String]) -> Value {
    Value::Array(list.iter().map(|n| json!({"text": n})).collect())
}

pub(super) fn quantity_of(amount: Option<&str>, units: Option<&Coded>, ucum: Option<&str>) -> Option<Value> {
    let n = amount?.trim().parse::<serde_json::Number>().ok()?;
    let mut q = Map::new();
    q.insert("value".into(), Value::Number(n));
    // `unit` is the human-readable form: the units' text when sent, else their code
    if let Some(u) = units.and_then(|u| u.text.clone().or_else(|| u.code.clone())) {
        q.insert("unit".into(), json!(u));
    }
    if let Some(code) = ucum {
        q.insert("system".into(), json!(UCUM));
        q.insert("code".into(), json!(code));
    }
    Some(Value::Object(q))
}

/// FHIR's JSON rules for primitive strings, applied to the whole Bundle: no empty strings (an
/// element is absent instead), whitespace other than space, tab, CR and LF written as a space,
/// and codes without leading, trailing or repeated whitespace. Objects and arrays left empty by
/// this are removed too.
pub(super) fn tidy(v: &mut Value, key: Option<&str>) -> bool {
    match v {
        Value::String(s) => {
            if s.chars().any(|c| c.is_whitespace() && !matches!(c, ' ' | '\t' | '\r' | '\n')) {
                *s = s
                    .chars()
                    .map(|c| {
                        if c.is_whitespace() && !matches!(c, ' ' | '\t' | '\r' | '\n') {
                            ' '
                        } else {
                            c
                        }
                    })
                    .collect();
            }
            if key == Some("code") {
                *s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            }
            !s.trim().is_empty()
        }
        Value::Array(items) => {
            items.retain_mut(|i| tidy(i, None));
            !items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|k, x| tidy(x, Some(k.as_str())));
            !map.is_empty()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::time::parse_hl7;

    #[test]
    fn times_keep_their_zone_or_are_not_given_one() {
        let t = |s: &str| fhir_time(&parse_hl7(s).expect("ts"));
        assert_eq!(t("20240630080000+0100").as_deref(), Ok("2024-06-30T08:00:00+01:00"));
        assert_eq!(t("20240630080000.25-0500").as_deref(), Ok("2024-06-30T08:00:00.25-05:00"));
        assert_eq!(t("202406300800+0000").as_deref(), Ok("2024-06-30T08:00:00+00:00"));
        assert_eq!(t("19800101").as_deref(), Ok("1980-01-01"));
        assert_eq!(t("198001").as_deref(), Ok("1980-01"));
        assert_eq!(t("20240630080000"), Err("20240630080000".to_owned()), "no offset: not invented");
        assert_eq!(
            t("20170229125200-0500"),
            Err("20170229125200-0500".to_owned()),
            "not a calendar date"
        );
        assert_eq!(t("20240229125200-0500").as_deref(), Ok("2024-02-29T12:52:00-05:00"));
        assert_eq!(t("2024-0500").as_deref(), Ok("2024"), "an HL7 year with an offset");
        assert!(t("20241301").is_err());
    }
}
