//! The FHIR datatypes the resource mappers read: times, CodeableConcepts, Identifiers and
//! Quantities.

use crate::NHS_NUMBER_SYSTEM;
use serde_json::Value;
use sluice_fhir::{first, items, text_at};
use sluice_model::time::parse_fhir;
use sluice_model::{Coded, Identifier, Timestamp, nhs};

pub(super) fn ts(v: &Value, path: &[&str]) -> Option<Timestamp> {
    text_at(v, path).and_then(|t| parse_fhir(&t))
}

/// A CodeableConcept (or a Coding) as a coded value: the first two codings, the text.
pub fn coded(cc: &Value) -> Option<Coded> {
    let codings = if cc.get("coding").is_some() {
        items(cc, "coding")
    } else {
        vec![cc]
    };
    let c = |i: usize, k: &str| codings.get(i).and_then(|c| text_at(c, &[k]));
    let out = Coded {
        code: c(0, "code"),
        text: text_at(cc, &["text"]).or_else(|| c(0, "display")),
        system: c(0, "system"),
        alt_code: c(1, "code"),
        alt_text: c(1, "display"),
        alt_system: c(1, "system"),
        original_text: None,
    };
    (out.code.is_some() || out.text.is_some()).then_some(out)
}

pub(super) fn coded_at(v: &Value, key: &str) -> Option<Coded> {
    first(v, key).and_then(coded)
}

/// An Identifier; NHS numbers are normalised and checked.
pub fn identifier(id: &Value) -> Option<Identifier> {
    let value = text_at(id, &["value"])?;
    let system = text_at(id, &["system"]);
    let is_nhs = system.as_deref() == Some(NHS_NUMBER_SYSTEM);
    Some(Identifier {
        nhs_number_valid: is_nhs.then(|| nhs::is_valid(&value)),
        value: if is_nhs { nhs::normalise(&value) } else { value },
        type_code: text_at(id, &["type", "coding", "code"]).or_else(|| text_at(id, &["type", "text"])),
        assigning_authority: text_at(id, &["assigner", "display"]).or_else(|| system.clone().filter(|_| !is_nhs)),
        system,
        assigning_facility: None,
    })
}

pub(super) fn quantity_text(q: &Value) -> Option<(String, Option<Coded>, Option<String>)> {
    let value = text_at(q, &["value"])?;
    let value = match text_at(q, &["comparator"]) {
        Some(c) => format!("{c}{value}"),
        None => value,
    };
    let system = text_at(q, &["system"]);
    let code = text_at(q, &["code"]);
    let unit = text_at(q, &["unit"]);
    let units = (code.is_some() || unit.is_some()).then(|| Coded {
        code: code.clone().or_else(|| unit.clone()),
        text: unit,
        system: system.clone(),
        ..Default::default()
    });
    let ucum = code.filter(|_| system.as_deref() == Some("http://unitsofmeasure.org"));
    Some((value, units, ucum))
}
