//! Patient.

use super::datatypes::{fhir_time, identifier, push_extension, set_time};
use super::new_resource;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Patient};

pub(super) fn patient(ev: &ClinicalEvent) -> Option<Map<String, Value>> {
    let p = ev.patient.as_ref()?;
    let mut r = new_resource("Patient", ev, 0);
    if !p.identifiers.is_empty() {
        r.insert("identifier".into(), Value::Array(p.identifiers.iter().map(identifier).collect()));
    }
    let names = names(p);
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
    let addresses = addresses(p);
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

/// The patient's names as HumanNames; a name with nothing FHIR carries is left out.
fn names(p: &Patient) -> Vec<Value> {
    // PID-9 aliases are further names (v2-to-FHIR: PID-9 to Patient.name)
    p.names
        .iter()
        .chain(&p.aliases)
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
        .collect()
}

/// The patient's addresses; an address with nothing FHIR carries is left out.
fn addresses(p: &Patient) -> Vec<Value> {
    p.addresses
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
        .collect()
}
