//! What a message says about its patient, in the form the matcher compares: match keys from
//! the identifiers, and folded names, birth dates, sex, postcodes and address lines.

use crate::text;
use sluice_model::{Identifier, Patient};

/// The FHIR system of NHS numbers, as the normaliser writes it.
pub const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Identifier type codes treated as local record numbers (empty counts: most feeds leave it out).
const LOCAL_ID_TYPES: &[&str] = &["", "MR", "MRN", "PI", "PT", "PN", "MEDREC", "HOSP", "LR"];

/// At most this many values of each kind are kept per record (the first ones seen).
pub const MAX_VALUES: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub key: String,
    pub kind: &'static str,
}

impl Key {
    pub fn is_nhs(&self) -> bool {
        self.kind == "nhs_number"
    }
}

/// Whether a value can be part of a match key: something with a letter or digit in it, never
/// the HL7 explicit null `""` (present and null: "delete this value"), blanks or punctuation.
/// The normaliser already keeps `""` out of identifiers; this is the last line of defence,
/// because a key every patient of a feed shares would overlay them all.
pub fn usable(value: &str) -> bool {
    let v = value.trim();
    v != "\"\"" && v.chars().any(char::is_alphanumeric)
}

/// The match keys of a set of identifiers (`nhs|<number>` for valid NHS numbers only,
/// `mrn|<authority>|<value>` for local record numbers), NHS numbers first, and the codes of
/// identifiers not used as keys.
pub fn keys_of(ids: &[Identifier], implied_authority: &str) -> (Vec<Key>, Vec<&'static str>) {
    let mut keys = Vec::new();
    let mut ignored = Vec::new();
    let implied_authority = if usable(implied_authority) { implied_authority } else { "" };
    for id in ids {
        if !usable(&id.value) {
            ignored.push("identifier_value_unusable");
            continue;
        }
        if id.system.as_deref() == Some(NHS_SYSTEM) {
            if id.nhs_number_valid == Some(true) {
                keys.push(Key {
                    key: format!("nhs|{}", id.value),
                    kind: "nhs_number",
                });
            } else {
                ignored.push("nhs_number_invalid");
            }
            continue;
        }
        let t = id.type_code.as_deref().unwrap_or("").to_ascii_uppercase();
        if !LOCAL_ID_TYPES.contains(&t.as_str()) {
            ignored.push("identifier_type_not_matched");
            continue;
        }
        match id
            .assigning_authority
            .as_deref()
            .filter(|a| usable(a))
            .or(id.assigning_facility.as_deref().filter(|a| usable(a)))
        {
            Some(a) => keys.push(Key {
                key: format!("mrn|{a}|{}", id.value),
                kind: "mrn",
            }),
            None if !implied_authority.is_empty() => keys.push(Key {
                key: format!("mrn|{implied_authority}|{}", id.value),
                kind: "mrn_implied_authority",
            }),
            None => ignored.push("identifier_without_authority"),
        }
    }
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys.dedup_by(|a, b| a.key == b.key);
    // NHS numbers first: they decide the enterprise id of a new patient when present
    keys.sort_by_key(|k| !k.is_nhs());
    (keys, ignored)
}

/// The number of an `nhs|<number>` key.
pub fn nhs_of(key: &str) -> Option<u64> {
    key.strip_prefix("nhs|").and_then(|n| n.parse().ok())
}

/// The assigning authority of an `mrn|<authority>|<value>` key.
pub fn authority_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("mrn|")?;
    rest.rsplit_once('|').map(|(a, _)| a)
}

/// One name, folded: the first given name and the family name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Name {
    pub family: String,
    pub given: String,
    /// A previous name or alias (a PID-5 repetition after the first, PID-9), not the current one.
    pub other: bool,
}

/// The demographics of one message, folded for comparison.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub names: Vec<Name>,
    /// `yyyymmdd`
    pub birth_dates: Vec<u32>,
    /// `M`, `F`, `O` or 0 when unknown
    pub sex: u8,
    /// packed, see [`text::postcode`]
    pub postcodes: Vec<u64>,
    /// first lines, folded
    pub addresses: Vec<String>,
    /// the valid NHS number the message carries
    pub nhs: Option<u64>,
}

impl Profile {
    pub fn of(patient: &Patient, keys: &[Key]) -> Profile {
        let mut p = Profile {
            nhs: keys.iter().find(|k| k.is_nhs()).and_then(|k| nhs_of(&k.key)),
            ..Default::default()
        };
        for (i, n) in patient.names.iter().chain(&patient.aliases).enumerate() {
            let name = Name {
                family: n.family.as_deref().map(text::name).unwrap_or_default(),
                given: n.given.as_deref().map(text::first_given).unwrap_or_default(),
                // the first PID-5 repetition is the current name; later ones and PID-9 are others
                other: i > 0,
            };
            if (!name.family.is_empty() || !name.given.is_empty())
                && !p.names.iter().any(|x| x.family == name.family && x.given == name.given)
            {
                p.names.push(name);
            }
        }
        p.names.truncate(MAX_VALUES);
        if let Some(d) = patient.birth_date.as_ref().and_then(|b| text::date(&b.value)) {
            p.birth_dates.push(d);
        }
        p.sex = match patient.sex.as_deref().map(str::trim).map(str::to_ascii_uppercase).as_deref() {
            Some("M" | "MALE") => b'M',
            Some("F" | "FEMALE") => b'F',
            Some("O" | "OTHER" | "A") => b'O',
            _ => 0,
        };
        for a in &patient.addresses {
            if let Some(pc) = a.postcode.as_deref().map(text::postcode).filter(|p| *p != 0)
                && !p.postcodes.contains(&pc)
            {
                p.postcodes.push(pc);
            }
            if let Some(line) = a.lines.first().map(|l| text::address_line(l)).filter(|l| !l.is_empty())
                && !p.addresses.contains(&line)
            {
                p.addresses.push(line);
            }
        }
        p.postcodes.truncate(MAX_VALUES);
        p.addresses.truncate(MAX_VALUES);
        p
    }
}
