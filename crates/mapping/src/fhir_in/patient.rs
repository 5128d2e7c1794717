//! Patient.

use super::values::{identifier, ts};
use serde_json::Value;
use sluice_fhir::{items, text, text_at};
use sluice_model::{Patient, PersonName};

pub(super) fn patient(r: &Value) -> Patient {
    let names = items(r, "name")
        .into_iter()
        .map(|n| {
            let given: Vec<String> = items(n, "given").into_iter().filter_map(text).collect();
            PersonName {
                family: text_at(n, &["family"]).or_else(|| text_at(n, &["text"])),
                given: given.first().cloned(),
                middle: (given.len() > 1).then(|| given[1..].join(" ")),
                suffix: text_at(n, &["suffix"]),
                prefix: text_at(n, &["prefix"]),
                type_code: text_at(n, &["use"]),
            }
        })
        .collect();
    let addresses = items(r, "address")
        .into_iter()
        .map(|a| sluice_model::Address {
            lines: items(a, "line").into_iter().filter_map(text).collect(),
            city: text_at(a, &["city"]),
            district: text_at(a, &["district"]),
            postcode: text_at(a, &["postalCode"]),
            country: text_at(a, &["country"]),
            type_code: text_at(a, &["use"]),
        })
        .collect();
    // HL7 table 0001, which the canonical event uses
    let sex = text_at(r, &["gender"]).map(|g| match g.as_str() {
        "male" => "M".to_owned(),
        "female" => "F".to_owned(),
        "other" => "O".to_owned(),
        "unknown" => "U".to_owned(),
        other => other.to_owned(),
    });
    let deceased = text_at(r, &["deceasedBoolean"]).map(|b| if b == "true" { "Y".to_owned() } else { "N".to_owned() });
    let death_time = ts(r, &["deceasedDateTime"]);
    Patient {
        identifiers: items(r, "identifier").into_iter().filter_map(identifier).collect(),
        names,
        birth_date: ts(r, &["birthDate"]),
        sex,
        addresses,
        deceased: deceased.or_else(|| death_time.as_ref().map(|_| "Y".to_owned())),
        death_time,
        aliases: Vec::new(),
    }
}
