//! The canonical event as a FHIR R4 Bundle (type `collection`): Patient, Encounter,
//! DiagnosticReport / ServiceRequest per order, Observation per result, Specimen, Immunization,
//! DocumentReference, Appointment, MedicationRequest / MedicationDispense, AllergyIntolerance. Pure: event
//! in, JSON out; ids are derived from the event id, so the same event always gives the same
//! Bundle.
//!
//! Meaning is kept rather than guessed:
//! - an HL7 time without an offset cannot be a FHIR `dateTime` with a time (FHIR requires the
//!   zone), so it is not given one: the element is left out and the value as sent travels in the
//!   extension [`TIMESTAMP_EXTENSION`]; dates without a time are kept as dates;
//! - an NHS number that fails its check digit is not given the NHS number system;
//! - statuses follow HL7 table 0085/0123 and are `unknown` when nothing was sent;
//! - units carry the UCUM system only when the event has a UCUM code for them.

use crate::mapping::NHS_NUMBER_SYSTEM;
use serde_json::{Map, Value, json};
use sluice_model::time::calendar_valid;
use sluice_model::{
    Allergy, Appointment, ClinicalEvent, Coded, Document, Identifier, Immunisation, Medication, Observation, Order, Specimen, Timestamp,
    ids::uuid_from,
};

/// Extension carrying an HL7 v2 timestamp that has no FHIR `dateTime` form (a time without an
/// offset), exactly as sent.
pub const TIMESTAMP_EXTENSION: &str = "urn:sluice:fhir:StructureDefinition:hl7v2-timestamp";
/// Identifier system of `Observation.identifier` carrying the result key (the same for every
/// version of one result, so a correction replaces the result it names).
pub const RESULT_KEY_SYSTEM: &str = "urn:sluice:result-key";
const UCUM: &str = "http://unitsofmeasure.org";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const NULL_FLAVOR: &str = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

/// The FHIR form of an HL7 timestamp: `Ok` with a FHIR date or dateTime, or `Err` with the
/// value as sent when it has a time but no offset (or cannot be read).
fn fhir_time(t: &Timestamp) -> Result<String, String> {
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
fn set_time(resource: &mut Map<String, Value>, name: &str, t: Option<&Timestamp>) {
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
fn set_period(resource: &mut Map<String, Value>, name: &str, start: Option<&Timestamp>, end: Option<&Timestamp>) {
    let mut period = Map::new();
    set_time(&mut period, "start", start);
    set_time(&mut period, "end", end);
    if !period.is_empty() {
        resource.insert(name.into(), Value::Object(period));
    }
}

fn push_extension(resource: &mut Map<String, Value>, element: &str, sent: &str) {
    let ext = json!({
        "url": TIMESTAMP_EXTENSION,
        "extension": [
            {"url": "element", "valueString": element},
            {"url": "sent", "valueString": sent}
        ]
    });
    append_extension(resource, ext);
}

fn append_extension(resource: &mut Map<String, Value>, ext: Value) {
    match resource.get_mut("extension").and_then(Value::as_array_mut) {
        Some(list) => list.push(ext),
        None => {
            resource.insert("extension".into(), json!([ext]));
        }
    }
}

/// The code system URI of an HL7 v2 coding system name; a URI (from FHIR in) is kept as sent.
fn system_url(system: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
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
        _ => return None,
    }))
}

fn coding(code: Option<&str>, text: Option<&str>, system: Option<&str>) -> Option<Value> {
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
fn concept(c: Option<&Coded>) -> Option<Value> {
    let c = c?;
    let codings: Vec<Value> = [
        coding(c.code.as_deref(), c.text.as_deref(), c.system.as_deref()),
        coding(c.alt_code.as_deref(), c.alt_text.as_deref(), c.alt_system.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let text = c.text.clone().or_else(|| c.code.clone());
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

fn identifier(id: &Identifier) -> Value {
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

fn entry(resource: Map<String, Value>) -> Value {
    let id = resource.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource})
}

fn new_resource(kind: &str, ev: &ClinicalEvent, index: usize) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("resourceType".into(), json!(kind));
    r.insert(
        "id".into(),
        json!(uuid_from(&[ev.event_id.as_bytes(), kind.as_bytes(), &index.to_be_bytes()])),
    );
    r
}

fn reference(r: &Map<String, Value>) -> Value {
    json!({"reference": format!("urn:uuid:{}", r.get("id").and_then(Value::as_str).unwrap_or_default())})
}

fn patient(ev: &ClinicalEvent) -> Option<Map<String, Value>> {
    let p = ev.patient.as_ref()?;
    let mut r = new_resource("Patient", ev, 0);
    if !p.identifiers.is_empty() {
        r.insert("identifier".into(), Value::Array(p.identifiers.iter().map(identifier).collect()));
    }
    let names: Vec<Value> = p
        .names
        .iter()
        .map(|n| {
            let mut v = Map::new();
            if let Some(f) = &n.family {
                v.insert("family".into(), json!(f));
            }
            let given: Vec<&String> = [&n.given, &n.middle].into_iter().flatten().collect();
            if !given.is_empty() {
                v.insert("given".into(), json!(given));
            }
            if let Some(x) = &n.prefix {
                v.insert("prefix".into(), json!([x]));
            }
            if let Some(x) = &n.suffix {
                v.insert("suffix".into(), json!([x]));
            }
            Value::Object(v)
        })
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .collect();
    if !names.is_empty() {
        r.insert("name".into(), Value::Array(names));
    }
    if let Some(g) = p.sex.as_deref().and_then(|s| match s {
        "M" => Some("male"),
        "F" => Some("female"),
        "O" | "A" => Some("other"),
        "U" | "N" => Some("unknown"),
        _ => None,
    }) {
        r.insert("gender".into(), json!(g));
    }
    if let Some(b) = &p.birth_date {
        match fhir_time(b) {
            Ok(v) => {
                r.insert("birthDate".into(), json!(v.get(..10).unwrap_or(&v)));
            }
            Err(sent) => push_extension(&mut r, "birthDate", &sent),
        }
    }
    let addresses: Vec<Value> = p
        .addresses
        .iter()
        .map(|a| {
            let mut v = Map::new();
            if !a.lines.is_empty() {
                v.insert("line".into(), json!(a.lines));
            }
            for (k, x) in [
                ("city", &a.city),
                ("district", &a.district),
                ("postalCode", &a.postcode),
                ("country", &a.country),
            ] {
                if let Some(x) = x {
                    v.insert(k.into(), json!(x));
                }
            }
            Value::Object(v)
        })
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .collect();
    if !addresses.is_empty() {
        r.insert("address".into(), Value::Array(addresses));
    }
    // a patient merge or identifier change: this patient replaces the record MRG names; a move
    // names another patient and is not a link between the two
    if let Some(m) = ev
        .merge
        .as_ref()
        .filter(|m| matches!(m.kind.as_str(), "patient_merge" | "identifier_change"))
    {
        let links: Vec<Value> = m
            .prior_identifiers
            .iter()
            .map(|id| json!({"other": {"identifier": identifier(id)}, "type": "replaces"}))
            .collect();
        if !links.is_empty() {
            r.insert("link".into(), Value::Array(links));
        }
    }
    match p.deceased.as_deref() {
        Some("Y") if p.death_time.is_none() => {
            r.insert("deceasedBoolean".into(), json!(true));
        }
        Some("N") => {
            r.insert("deceasedBoolean".into(), json!(false));
        }
        _ => set_time(&mut r, "deceasedDateTime", p.death_time.as_ref()),
    }
    Some(r)
}

fn encounter(ev: &ClinicalEvent, subject: Option<&Value>) -> Option<Map<String, Value>> {
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

fn report_status(sent: Option<&str>) -> &'static str {
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
fn request_status(o: &Order) -> &'static str {
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

/// Placer and filler numbers as identifiers typed PLAC and FILL (HL7 table 0203).
fn placer_filler(placer: Option<&String>, filler: Option<&String>) -> Vec<Value> {
    [(placer, "PLAC"), (filler, "FILL")]
        .into_iter()
        .filter_map(|(n, kind)| n.map(|n| json!({"type": {"coding": [{"system": V2_0203, "code": kind}]}, "value": n})))
        .collect()
}

fn notes(list: &[String]) -> Value {
    Value::Array(list.iter().map(|n| json!({"text": n})).collect())
}

/// DiagnosticReport has no `note` in R4: comments on a result order travel in the R5
/// cross-version extension for it.
const REPORT_NOTE_EXTENSION: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note";

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

fn interpretation(flag: &str) -> Value {
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
fn structured_numeric(value: &str, o: &Observation) -> Option<(&'static str, Value)> {
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
fn quantity(value: &str, o: &Observation) -> Option<Value> {
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
    let values: Vec<&String> = o.values.iter().filter(|v| !v.is_empty()).collect();
    if !values.is_empty() {
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
        if let Some((element, v)) = structured {
            r.insert(element.into(), v);
        } else if let Some(q) = numeric.then(|| quantity(values[0], o)).flatten() {
            r.insert("valueQuantity".into(), q);
        } else if let Some(t) = time {
            r.insert("valueDateTime".into(), json!(t));
        } else if let Some(c) = coded {
            r.insert("valueCodeableConcept".into(), c);
        } else {
            r.insert("valueString".into(), json!(joined));
        }
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

fn specimen(ev: &ClinicalEvent, i: usize, s: &Specimen, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Specimen", ev, i);
    if let Some(id) = &s.identifier {
        r.insert("accessionIdentifier".into(), json!({"value": id}));
    }
    if let Some(t) = concept(s.specimen_type.as_ref()) {
        r.insert("type".into(), t);
    }
    if let Some(sub) = subject {
        r.insert("subject".into(), sub.clone());
    }
    set_time(&mut r, "receivedTime", s.received_time.as_ref());
    let mut collection = Map::new();
    if s.collection_end.is_some() {
        set_period(
            &mut collection,
            "collectedPeriod",
            s.collection_time.as_ref(),
            s.collection_end.as_ref(),
        );
    } else {
        set_time(&mut collection, "collectedDateTime", s.collection_time.as_ref());
    }
    if let Some(site) = concept(s.source_site.as_ref()) {
        collection.insert("bodySite".into(), site);
    }
    if !collection.is_empty() {
        r.insert("collection".into(), Value::Object(collection));
    }
    r
}

fn immunization(ev: &ClinicalEvent, i: usize, imm: &Immunisation, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Immunization", ev, i);
    // RXA-21 D deletes an earlier record; RXA-20 RE/NA means the dose was not given
    let status = match (imm.action.as_deref(), imm.completion_status.as_deref()) {
        (Some("D"), _) => "entered-in-error",
        (_, Some("RE" | "NA")) => "not-done",
        _ => "completed",
    };
    r.insert("status".into(), json!(status));
    if imm.completion_status.as_deref() == Some("PA") {
        r.insert("isSubpotent".into(), json!(true));
    }
    r.insert(
        "vaccineCode".into(),
        concept(imm.vaccine.as_ref()).unwrap_or_else(|| json!({"text": "not sent"})),
    );
    r.insert(
        "patient".into(),
        subject
            .cloned()
            .unwrap_or_else(|| json!({"display": "no patient identified in the message"})),
    );
    // occurrence is required: a time that has no FHIR dateTime form is given as sent
    match imm.administered_time.as_ref().map(|t| (fhir_time(t), t)) {
        Some((Ok(v), t)) => {
            r.insert("occurrenceDateTime".into(), json!(v));
            if matches!(t.precision.as_str(), "hour" | "minute") {
                push_extension(&mut r, "occurrenceDateTime", &t.value);
            }
        }
        Some((Err(sent), _)) => {
            r.insert("occurrenceString".into(), json!(sent));
        }
        None => {
            r.insert("occurrenceString".into(), json!("not sent"));
        }
    }
    if let Some(lot) = imm.lot_numbers.first() {
        r.insert("lotNumber".into(), json!(lot));
    }
    if let Some(Ok(d)) = imm.expiry.as_ref().map(fhir_time) {
        r.insert("expirationDate".into(), json!(d.get(..10).unwrap_or(&d)));
    }
    if let Some(m) = imm.manufacturer.as_ref().and_then(|m| m.text.clone().or_else(|| m.code.clone())) {
        r.insert("manufacturer".into(), json!({"display": m}));
    }
    if let Some(route) = concept(imm.route.as_ref()) {
        r.insert("route".into(), route);
    }
    if let Some(site) = concept(imm.site.as_ref()) {
        r.insert("site".into(), site);
    }
    // 999 is the immunisation registries' "amount unknown"
    if let Some(q) = quantity_of(
        imm.amount.as_deref().filter(|a| *a != "999"),
        imm.units.as_ref(),
        imm.units_ucum.as_deref(),
    ) {
        r.insert("doseQuantity".into(), q);
    }
    r
}

fn no_patient() -> Value {
    json!({"display": "no patient identified in the message"})
}

fn quantity_of(amount: Option<&str>, units: Option<&Coded>, ucum: Option<&str>) -> Option<Value> {
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

/// SIU's SCH (HL7 table 0278 filler status, else what the trigger event says) as an Appointment.
fn appointment(ev: &ClinicalEvent, a: &Appointment, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Appointment", ev, 0);
    let ids = placer_filler(a.placer_id.as_ref(), a.filler_id.as_ref());
    if !ids.is_empty() {
        r.insert("identifier".into(), Value::Array(ids));
    }
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
    let status = match sent.as_deref() {
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
    };
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
    let minutes = match a
        .duration_units
        .as_ref()
        .and_then(|u| u.code.as_deref())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("min" | "minutes" | "m") => a.duration.as_deref().and_then(|d| d.trim().parse::<u32>().ok()),
        Some("h" | "hr" | "hours") => a.duration.as_deref().and_then(|d| d.trim().parse::<u32>().ok()).map(|h| h * 60),
        _ => None,
    };
    if let Some(m) = minutes.filter(|m| *m > 0) {
        r.insert("minutesDuration".into(), json!(m));
    }
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
    r.insert("participant".into(), Value::Array(participants));
    r
}

/// A medication's status in MedicationRequest terms: the FHIR status when the source was FHIR,
/// else the order's (ORC-5, then ORC-1).
fn medication_request_status(m: &Medication, order: Option<&Order>) -> &'static str {
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

fn dosage(m: &Medication, order: Option<&Order>) -> Option<Value> {
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
        .map(|o| placer_filler(o.placer_order_number.as_ref(), o.filler_order_number.as_ref()))
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
        // a statement of what the patient takes (FHIR in only): not an order
        r.insert("status".into(), json!(m.status.as_deref().unwrap_or("unknown")));
        set_time(&mut r, "effectiveDateTime", m.time.as_ref());
        if let Some(d) = dosage(m, None) {
            r.insert("dosage".into(), json!([d]));
        }
    } else if dispense {
        // an RXD reports a dispense that happened
        let status = m.status.clone().unwrap_or_else(|| "completed".into());
        r.insert("status".into(), json!(status));
        if let Some(q) = quantity_of(m.amount_min.as_deref(), m.units.as_ref(), m.units_ucum.as_deref()) {
            r.insert("quantity".into(), q);
        }
        set_time(&mut r, "whenHandedOver", m.time.as_ref());
        if let Some(req) = request {
            r.insert("authorizingPrescription".into(), json!([req]));
        }
        if !m.instructions.is_empty() {
            r.insert("dosageInstruction".into(), json!([{"text": m.instructions.join("; ")}]));
        }
    } else {
        r.insert("status".into(), json!(medication_request_status(m, order)));
        let intent = m
            .intent
            .as_deref()
            .unwrap_or(if m.segment == "RXG" { "instance-order" } else { "order" });
        r.insert("intent".into(), json!(intent));
        if let Some(o) = order {
            set_time(&mut r, "authoredOn", o.transaction_time.as_ref());
            if !o.notes.is_empty() {
                r.insert("note".into(), notes(&o.notes));
            }
        }
        if !r.contains_key("authoredOn") {
            set_time(&mut r, "authoredOn", m.time.as_ref());
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
    r
}

/// AL1 (or a FHIR AllergyIntolerance). AL1 lists the patient's current allergies, so its
/// clinical status is `active`; categories and severities are read from HL7 tables 0127 and
/// 0128, and FHIR codes (from FHIR in) pass through.
fn allergy_intolerance(ev: &ClinicalEvent, i: usize, a: &Allergy, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("AllergyIntolerance", ev, i);
    let clinical = a.clinical_status.as_deref().unwrap_or("active");
    let entered_in_error = a.verification_status.as_deref() == Some("entered-in-error");
    if !entered_in_error || a.clinical_status.is_some() {
        r.insert(
            "clinicalStatus".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": clinical}]}),
        );
    }
    if let Some(v) = &a.verification_status {
        r.insert(
            "verificationStatus".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": v}]}),
        );
    }
    if let Some(c) = a.category.as_deref().and_then(|c| match c {
        "DA" | "medication" => Some("medication"),
        "FA" | "food" => Some("food"),
        "EA" | "AA" | "PA" | "LA" | "environment" => Some("environment"),
        "biologic" => Some("biologic"),
        _ => None,
    }) {
        r.insert("category".into(), json!([c]));
    }
    if let Some(c) = a.severity.as_deref().and_then(|s| match s {
        "SV" | "high" => Some("high"),
        "MO" | "MI" | "low" => Some("low"),
        "U" | "unable-to-assess" => Some("unable-to-assess"),
        _ => None,
    }) {
        r.insert("criticality".into(), json!(c));
    }
    if let Some(c) = concept(a.allergen.as_ref()) {
        r.insert("code".into(), c);
    }
    r.insert("patient".into(), subject.cloned().unwrap_or_else(no_patient));
    set_time(&mut r, "onsetDateTime", a.identified_time.as_ref());
    if !a.reactions.is_empty() {
        let mut reaction = Map::new();
        reaction.insert(
            "manifestation".into(),
            Value::Array(a.reactions.iter().map(|m| json!({"text": m})).collect()),
        );
        if let Some(s) = a.severity.as_deref().and_then(|s| match s {
            "SV" => Some("severe"),
            "MO" => Some("moderate"),
            "MI" => Some("mild"),
            _ => None,
        }) {
            reaction.insert("severity".into(), json!(s));
        }
        r.insert("reaction".into(), json!([reaction]));
    }
    r
}

/// Standard base64 (RFC 4648, padded), for putting text content into an Attachment.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An Attachment from an OBX value: ED (`source^type^subtype^encoding^data`) keeps its bytes
/// as sent when they are base64, text values become `text/plain` content.
fn attachment(o: &Observation) -> Option<Value> {
    let value = o.values.iter().filter(|v| !v.is_empty()).cloned().collect::<Vec<_>>().join("\n");
    if value.is_empty() {
        return None;
    }
    if o.value_type.as_deref() == Some("ED") {
        let parts: Vec<&str> = value.split('^').collect();
        let (kind, subtype, encoding, data) = (parts.get(1)?, parts.get(2).unwrap_or(&""), parts.get(3)?, parts.get(4)?);
        let is_base64 = !data.is_empty()
            && data
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r'));
        if !encoding.eq_ignore_ascii_case("base64") || !is_base64 {
            return None;
        }
        let content_type = match (kind.to_ascii_lowercase().as_str(), subtype.to_ascii_lowercase().as_str()) {
            ("application" | "ap", "pdf") => "application/pdf".to_owned(),
            ("text" | "tx", "rtf") => "text/rtf".to_owned(),
            ("image" | "im", s) if !s.is_empty() => format!("image/{s}"),
            (k, s) if !k.is_empty() && !s.is_empty() => format!("{k}/{s}"),
            _ => "application/octet-stream".to_owned(),
        };
        return Some(json!({"contentType": content_type, "data": data.replace(['\r', '\n'], "")}));
    }
    Some(json!({"contentType": "text/plain; charset=utf-8", "data": base64(value.as_bytes())}))
}

fn document_reference(ev: &ClinicalEvent, d: &Document, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("DocumentReference", ev, 0);
    if let Some(id) = &d.unique_id {
        r.insert("masterIdentifier".into(), json!({"value": id}));
    }
    // MDM T11 cancels a document; otherwise this is the current version
    let status = if ev.trigger_event == "T11" { "entered-in-error" } else { "current" };
    r.insert("status".into(), json!(status));
    if let Some(doc_status) = d.completion_status.as_deref().and_then(|c| match c {
        "LA" | "AU" => Some("final"),
        "DO" | "DI" | "IP" | "IN" | "PA" => Some("preliminary"),
        "CA" => Some("entered-in-error"),
        _ => None,
    }) {
        r.insert("docStatus".into(), json!(doc_status));
    }
    if let Some(t) = &d.document_type {
        r.insert(
            "type".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0270", "code": t}], "text": t}),
        );
    }
    if let Some(s) = subject {
        r.insert("subject".into(), s.clone());
    }
    // `date` is an instant: only a time with seconds and a zone qualifies
    if let Some(Ok(v)) = d.activity_time.as_ref().map(fhir_time)
        && v.contains('T')
    {
        r.insert("date".into(), json!(v));
    } else if let Some(t) = &d.activity_time {
        push_extension(&mut r, "date", &t.value);
    }
    if let Some(parent) = &d.parent_id {
        let code = match ev.trigger_event.as_str() {
            "T05" | "T06" => "appends",
            _ => "replaces",
        };
        r.insert(
            "relatesTo".into(),
            json!([{"code": code, "target": {"identifier": {"value": parent}}}]),
        );
    }
    let mut content: Vec<Value> = ev
        .observations
        .iter()
        .filter_map(attachment)
        .map(|a| json!({"attachment": a}))
        .collect();
    if content.is_empty() {
        // content is required: name the document even when its body is not in the message
        content.push(json!({"attachment": {"title": d.file_name.clone().unwrap_or_else(|| "content not in the message".into())}}));
    } else if let Some(name) = &d.file_name
        && let Some(a) = content[0].get_mut("attachment").and_then(Value::as_object_mut)
    {
        a.insert("title".into(), json!(name));
    }
    r.insert("content".into(), Value::Array(content));
    r
}

/// The Bundle for one canonical event.
pub fn bundle(ev: &ClinicalEvent) -> Value {
    let mut entries = Vec::new();
    let patient = patient(ev);
    let subject = patient.as_ref().map(reference);
    if let Some(p) = patient {
        entries.push(entry(p));
    }
    if let Some(e) = encounter(ev, subject.as_ref()) {
        entries.push(entry(e));
    }
    let specimens: Vec<Map<String, Value>> = ev
        .specimens
        .iter()
        .enumerate()
        .map(|(i, s)| specimen(ev, i, s, subject.as_ref()))
        .collect();
    // one resource per order: the OBR when there is one (an ORC before it lends its order
    // control), else the ORC alone; results become DiagnosticReports, others ServiceRequests
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
        reports.push((Some(i as i32), order_resource(ev, i, &order, subject.as_ref())));
    }
    // which specimen an order or observation is of: named directly (specimen-first
    // structures, an OBX after its SPM), else the specimen of its order
    let order_specimen = |k: Option<i32>| {
        k.and_then(|k| ev.orders.get(k as usize))
            .and_then(|o| o.specimen_index)
            .or_else(|| {
                ev.specimens
                    .iter()
                    .position(|s| s.order_index.is_some() && s.order_index == k)
                    .map(|x| x as i32)
            })
    };
    for (k, report) in reports.iter_mut() {
        if let Some(sp) = order_specimen(*k).and_then(|x| specimens.get(x as usize)) {
            report.insert("specimen".into(), json!([reference(sp)]));
        }
    }
    for (i, o) in ev.observations.iter().enumerate() {
        let spec = o
            .specimen_index
            .or_else(|| order_specimen(o.order_index))
            .and_then(|x| specimens.get(x as usize))
            .map(reference);
        let obs = observation(ev, i, o, subject.as_ref(), spec.as_ref());
        if let Some((_, report)) = reports
            .iter_mut()
            .find(|(k, r)| *k == o.order_index && r["resourceType"] == "DiagnosticReport")
        {
            let refs = report.entry("result").or_insert_with(|| json!([]));
            if let Some(list) = refs.as_array_mut() {
                list.push(reference(&obs));
            }
        }
        entries.push(entry(obs));
    }
    entries.extend(reports.into_iter().map(|(_, r)| entry(r)));
    if let Some(d) = &ev.document {
        entries.push(entry(document_reference(ev, d, subject.as_ref())));
    }
    entries.extend(
        ev.immunisations
            .iter()
            .enumerate()
            .map(|(i, imm)| entry(immunization(ev, i, imm, subject.as_ref()))),
    );
    if let Some(a) = &ev.appointment {
        entries.push(entry(appointment(ev, a, subject.as_ref())));
    }
    // one request per order: the RXE (or RXG) when there is one, else the RXO
    let mut requests: Vec<(Option<i32>, Value)> = Vec::new();
    for (i, m) in ev.medications.iter().enumerate() {
        let superseded = m.segment == "RXO"
            && ev
                .medications
                .iter()
                .any(|x| matches!(x.segment.as_str(), "RXE" | "RXG") && x.order_index == m.order_index);
        if superseded || matches!(m.segment.as_str(), "RXD" | "MedicationDispense") {
            continue;
        }
        let r = medication(ev, i, m, subject.as_ref(), None);
        requests.push((m.order_index, reference(&r)));
        entries.push(entry(r));
    }
    for (i, m) in ev.medications.iter().enumerate() {
        if matches!(m.segment.as_str(), "RXD" | "MedicationDispense") {
            let request = requests.iter().find(|(k, _)| k.is_some() && *k == m.order_index).map(|(_, r)| r);
            entries.push(entry(medication(ev, i, m, subject.as_ref(), request)));
        }
    }
    entries.extend(
        ev.allergies
            .iter()
            .enumerate()
            .map(|(i, a)| entry(allergy_intolerance(ev, i, a, subject.as_ref()))),
    );
    entries.extend(specimens.into_iter().map(entry));
    let mut b = Map::new();
    b.insert("resourceType".into(), json!("Bundle"));
    b.insert("id".into(), json!(uuid_from(&[ev.event_id.as_bytes(), b"bundle"])));
    b.insert("identifier".into(), json!({"system": "urn:sluice:event-id", "value": ev.event_id}));
    b.insert("type".into(), json!("collection"));
    if let Some(Ok(t)) = ev.message_time.as_ref().map(fhir_time)
        && t.contains('T')
    {
        b.insert("timestamp".into(), json!(t));
    }
    b.insert("entry".into(), Value::Array(entries));
    let mut bundle = Value::Object(b);
    tidy(&mut bundle, None);
    bundle
}

/// FHIR's JSON rules for primitive strings, applied to the whole Bundle: no empty strings (an
/// element is absent instead), whitespace other than space, tab, CR and LF written as a space,
/// and codes without leading, trailing or repeated whitespace. Objects and arrays left empty by
/// this are removed too.
fn tidy(v: &mut Value, key: Option<&str>) -> bool {
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
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

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
