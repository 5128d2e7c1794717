//! Result semantics that must survive mapping: what a result's status means, which earlier
//! result a correction replaces, and what its units are in UCUM.
//!
//! OBX segments become observations here, of the last OBR or of the specimen they describe.

use super::values::Mapper;
use super::{After, Group};
use sluice_hl7::Segment;
use sluice_model::{ClinicalEvent, Observation};

/// OBX-11 (HL7 table 0085) read as a FHIR `ObservationStatus`. `None` for an empty or unknown
/// code: the code as sent always travels in `result_status`, so nothing is guessed.
pub fn observation_status(obx11: &str) -> Option<&'static str> {
    Some(match obx11 {
        "C" => "corrected",
        "D" | "W" => "entered-in-error",
        "F" | "U" => "final",
        "I" | "O" => "registered",
        "P" | "R" | "S" => "preliminary",
        "X" => "cancelled",
        "A" => "amended",
        _ => return None,
    })
}

/// The identity of one result across its versions: the same for the preliminary, final and
/// corrected OBX of one test on one order, different for another test, order or facility.
/// `None` without an order number or a test code (nothing reliable to key on).
pub fn result_key(
    facility: &str,
    order_number: Option<&str>,
    code: Option<&str>,
    system: Option<&str>,
    sub_id: Option<&str>,
) -> Option<String> {
    let order = order_number.filter(|o| !o.is_empty())?;
    let code = code.filter(|c| !c.is_empty())?;
    Some(sluice_model::ids::uuid_from(&[
        b"result",
        facility.as_bytes(),
        order.as_bytes(),
        code.as_bytes(),
        system.unwrap_or("").as_bytes(),
        sub_id.unwrap_or("").as_bytes(),
    ]))
}

/// The key of the `occurrence`th (from 1) OBX with the same [`result_key`] in one message: the
/// first keeps it, so a lone result keys as before; each further one gets its own, the same in
/// a corrected resend that repeats the lines in their order. Without this every line of a
/// multi-line result shared one key, and a consumer replacing results by key kept only the last.
pub fn repeated(key: String, occurrence: usize) -> String {
    if occurrence <= 1 {
        return key;
    }
    sluice_model::ids::uuid_from(&[b"result-repeat", key.as_bytes(), &(occurrence as u64).to_be_bytes()])
}

/// Units as a UCUM code: as sent when the sender says the code is UCUM, else from a table of
/// unambiguous spellings seen in UK and US laboratory feeds. `None` when not recognisable:
/// never a guess (`mcg` could be microgram, but `U` alone is not known to be enzyme units).
pub fn ucum(code: Option<&str>, text: Option<&str>, system: Option<&str>) -> Option<String> {
    let code = code.filter(|c| !c.is_empty());
    if system.is_some_and(|s| s.eq_ignore_ascii_case("UCUM")) {
        return code.map(str::to_owned);
    }
    let sent = code.or(text)?.trim();
    let known = match sent {
        "mmol/L" | "mmol/l" => "mmol/L",
        "umol/L" | "umol/l" | "µmol/L" | "μmol/L" | "µmol/l" => "umol/L",
        "nmol/L" | "nmol/l" => "nmol/L",
        "pmol/L" | "pmol/l" => "pmol/L",
        "mol/L" => "mol/L",
        "g/L" | "g/l" => "g/L",
        "g/dL" | "g/dl" => "g/dL",
        "mg/dL" | "mg/dl" => "mg/dL",
        "mg/L" | "mg/l" => "mg/L",
        "ug/L" | "µg/L" | "ug/l" => "ug/L",
        "ng/mL" | "ng/ml" => "ng/mL",
        "ng/L" | "ng/l" => "ng/L",
        "pg/mL" | "pg/ml" => "pg/mL",
        "U/L" | "U/l" | "IU/L" | "IU/l" => "[IU]/L",
        "mU/L" | "mIU/L" | "mU/l" | "mIU/l" => "m[IU]/L",
        "mIU/mL" | "mIU/ml" => "m[IU]/mL",
        "%" => "%",
        "10*9/L" | "10^9/L" | "x10^9/L" | "x10*9/L" | "10e9/L" | "x10E9/L" => "10*9/L",
        "10*12/L" | "10^12/L" | "x10^12/L" | "x10*12/L" | "10e12/L" | "x10E12/L" => "10*12/L",
        "fL" | "fl" => "fL",
        "pg" => "pg",
        "L/L" | "l/l" => "L/L",
        "mL/min/1.73m2" | "mL/min/1.73m*2" | "ml/min/1.73m2" | "mL/min/{1.73_m2}" => "mL/min/{1.73_m2}",
        "mmHg" | "mm Hg" | "mm[Hg]" => "mm[Hg]",
        "kg" => "kg",
        "g" => "g",
        "cm" => "cm",
        "m" => "m",
        "mL" | "ml" => "mL",
        "L" | "l" => "L",
        "s" | "sec" | "secs" => "s",
        "min" => "min",
        "h" | "hr" | "hrs" => "h",
        "/min" | "bpm" | "beats/min" => "/min",
        "Cel" | "°C" | "degC" => "Cel",
        "mm/h" | "mm/hr" => "mm/h",
        "kg/m2" | "kg/m*2" => "kg/m2",
        "ratio" => "{ratio}",
        _ => return None,
    };
    Some(known.to_owned())
}

/// OBX: a result of the last OBR, or (an OBX after its SPM in a specimen-first structure) of
/// that specimen.
pub(super) fn obx<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Observation;
    // an OBX of a specimen group in a specimen-first structure belongs to no order
    // the OBR of the order group; without one (a pharmacy order) the ORC
    let order_index = g
        .last_obr
        .or(g.last_orc)
        .filter(|_| !(g.specimen_first && g.specimen_group.is_some()));
    let value_type = m.field_text(seg, 2);
    let code = m.coded(&seg.field(3).repetition(0));
    let units = m.coded(&seg.field(6).repetition(0));
    let result_status = m.field_text(seg, 11);
    let sub_id = m.field_text(seg, 4);
    let order = order_index.and_then(|i| ev.orders.get(i as usize));
    let order_number = order.and_then(|o| o.filler_order_number.as_deref().or(o.placer_order_number.as_deref()));
    let result_key = result_key(
        &ev.source.sending_facility,
        order_number,
        code.as_ref().and_then(|c| c.code.as_deref()),
        code.as_ref().and_then(|c| c.system.as_deref()),
        sub_id.as_deref(),
    )
    .map(|key| {
        // OBX of one test under one order number without sub-ids to tell them apart (a report
        // sent a line per OBX, an isolate's sensitivities under a child OBR with its parent's
        // number): each its own result, by its place among them
        let seen = g.result_keys.entry(key.clone()).or_insert(0);
        *seen += 1;
        repeated(key, *seen)
    });
    let units_ucum = units
        .as_ref()
        .and_then(|u| ucum(u.code.as_deref(), u.text.as_deref(), u.system.as_deref()));
    let interpretations: Vec<sluice_model::Coded> = seg.field(8).repetitions().filter_map(|r| m.coded(&r)).collect();
    // a flag outside table 0078 is kept as sent, and said so
    if interpretations.iter().any(|c| {
        matches!(c.system.as_deref(), None | Some("HL70078"))
            && c.code.as_deref().is_some_and(|k| crate::tables::interpretation_0078(k).is_none())
    }) && !ev.warnings.iter().any(|w| w == "interpretation_not_in_table_0078")
    {
        ev.warnings.push("interpretation_not_in_table_0078".into());
    }
    ev.observations.push(Observation {
        set_id: m.field_text(seg, 1),
        order_index,
        code,
        sub_id,
        // ED (encapsulated data, e.g. base64 documents) is kept as sent, components included
        values: seg
            .field(5)
            .repetitions()
            .filter(|r| super::values::present(r.raw()))
            .map(|r| {
                if value_type.as_deref() == Some("ED") {
                    m.er7(r.raw())
                } else {
                    m.msg.text(r.raw())
                }
            })
            .collect(),
        value_type,
        units,
        reference_range: m.field_text(seg, 7),
        abnormal_flags: seg.field(8).repetitions().filter_map(|r| m.text(r.raw())).collect(),
        // OBX-8 is a CWE from v2.7 (an IS before): each repetition read as one
        interpretations,
        prior: g.prior,
        status: result_status.as_deref().and_then(observation_status).map(str::to_owned),
        result_status,
        observation_time: m.ts(seg, 14),
        notes: Vec::new(),
        result_key,
        units_ucum,
        specimen_index: g.specimen_group,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_table_0085_and_unknown_stays_unknown() {
        assert_eq!(observation_status("C"), Some("corrected"));
        assert_eq!(observation_status("D"), Some("entered-in-error"));
        assert_eq!(observation_status("W"), Some("entered-in-error"));
        assert_eq!(observation_status("P"), Some("preliminary"));
        assert_eq!(observation_status("F"), Some("final"));
        assert_eq!(observation_status("X"), Some("cancelled"));
        assert_eq!(observation_status("Q"), None);
        assert_eq!(observation_status(""), None);
    }

    #[test]
    fn a_correction_keys_to_the_result_it_replaces() {
        let original = result_key("LAB", Some("F123"), Some("GLU"), Some("L"), None);
        let corrected = result_key("LAB", Some("F123"), Some("GLU"), Some("L"), None);
        assert_eq!(original, corrected);
        assert_ne!(original, result_key("LAB", Some("F124"), Some("GLU"), Some("L"), None));
        assert_ne!(original, result_key("LAB", Some("F123"), Some("GLU"), Some("L"), Some("2")));
        assert_ne!(original, result_key("OTHER", Some("F123"), Some("GLU"), Some("L"), None));
        assert_eq!(result_key("LAB", None, Some("GLU"), None, None), None);
    }

    #[test]
    fn ucum_only_when_sent_as_ucum_or_unambiguous() {
        assert_eq!(ucum(Some("mg/dL"), None, Some("UCUM")).as_deref(), Some("mg/dL"));
        assert_eq!(ucum(Some("x10^9/L"), None, None).as_deref(), Some("10*9/L"));
        assert_eq!(ucum(None, Some("µmol/L"), None).as_deref(), Some("umol/L"));
        assert_eq!(ucum(Some("IU/L"), None, Some("L")).as_deref(), Some("[IU]/L"));
        assert_eq!(ucum(Some("U"), None, None), None);
        assert_eq!(ucum(Some("mcg"), None, None), None);
        assert_eq!(ucum(None, None, None), None);
    }
}
