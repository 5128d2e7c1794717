//! Our FHIR R4 Bundles compared, field by field, with Microsoft FHIR-Converter's expected outputs
//! for its HL7 v2 samples (`../shared/corpus/microsoft-fhir-converter`: inputs in
//! `data/SampleData/Hl7v2`, expected Bundles under `TestData/Expected/Hl7v2`). Their output is that
//! converter's opinion, not a standard, so every difference must fall in one narrow category of
//! [`Why`] (a field and a rule, with a condition that only that rule meets) or the test fails.
//!
//! - Observations are paired by OBX position: the n-th Observation with a code in ours pairs with
//!   the n-th with that code in theirs (both follow the OBX order).
//! - Compared per pair: value (numbers, text, codes, times, components of repeated values),
//!   unit, interpretation (v3 codes), reference range, status, effective time, and the order
//!   link (`basedOn` a ServiceRequest that carries the same order numbers).
//! - Compared per message: every Patient (by identifier), and the report, order and specimen
//!   identifiers.
//!
//! Per-field agreement is printed, and recorded in `tests/ms_converter_figures.tsv`: a figure
//! that falls below the recorded one fails the test (`SLUICE_BLESS=1` records new figures).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sluice_hl7::Message;
use sluice_model::{ClinicalEvent, RawMessage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a field differs on purpose. Each names its field and a rule whose condition is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Why {
    /// status: the converter writes `unknown` for an OBX-11 code of HL7 table 0085 (I, R, S, D,
    /// W, X ...); we read it through the table. Only when ours is exactly the table's reading.
    StatusUnknownInConverter,
    /// effective time: OBX-14 was sent without an offset; the converter gives it its server's
    /// zone, we never invent one (the element is absent, the value as sent is in the
    /// hl7v2-timestamp extension).
    TimeZoneNotInvented,
    /// effective time: OBX-14 (or OBR-7) is a date without a time; the converter drops it.
    DateOnlyTimeDropped,
    /// value: an ED or RP value; the converter makes no value (it moves it into the report's
    /// presentedForm), we keep it as an Attachment (R5 extension) and in presentedForm too.
    AttachmentValue,
    /// value: the converter writes its placeholder text `Observation value` where OBX-5 is not
    /// that text.
    ConverterPlaceholder,
    /// value: a DT/DTM/TS value sent without an offset; we keep it as text, the converter gives
    /// it a zone.
    DateTimeWithoutZone,
    /// value: a DT/DTM/TS or HD value the converter drops (it writes no value at all).
    ValueDroppedByConverter,
    /// order link: an OBX of a message that is not a result (OML, ORM, OMG, VXU, DFT ...)
    /// supports the order (the v2-to-FHIR OML_O21 row: ServiceRequest.supportingInfo); the
    /// converter writes `basedOn`. Only when our ServiceRequest naming it in `supportingInfo`
    /// carries theirs' order numbers.
    SupportingInfoNotBasedOn,
    /// order link: an OBX of a specimen group (after an SPM): the converter links it to the
    /// specimen only, we link it to its order as well.
    SpecimenGroupObservation,
    /// unit: the converter writes a unit text or code we carry the other form of (theirs and ours
    /// share a form but ours lacks one of theirs).
    UnitCodeForText,
    /// unit: we carry the unit sent, the converter writes none.
    ConverterDropsUnit,
    /// observation pairing: an OBX the converter makes no Observation of: an ED/RP value it moves
    /// into presentedForm, an OBX of an order message or after an RXA (it maps those into other
    /// resources' fields), or one of a specimen group. Only when the converter has fewer
    /// Observations of that code than the message has OBX.
    ConverterSkipsObx,
    /// observation pairing: an Observation the converter derives from a field that is not an OBX
    /// (death, injury ...): its code is no OBX-3 code of the message.
    DerivedFromOtherSegments,
    /// patient identifiers: an identifier the converter takes from DB1, IN1, IN2, GT1 or NK1 (a
    /// disability or insurance number, a guarantor's or relative's): it appears in those segments
    /// and not in PID. It travels with its segment and is never a match key.
    IdentifierFromOtherSegment,
    /// patients: a merge or move (A40 to A47) the converter writes as a Linkage or not at all,
    /// with no Patient; we write the Patient the message is about.
    MergeOrMoveRecord,
    /// order and specimen identifiers: the converter keeps an HL7 delimiter inside the value
    /// (`9adf...&L`), where ours is the part before it.
    ConverterKeepsDelimiter,
}

fn corpus() -> Option<PathBuf> {
    sluice_hl7::corpus::root().map(|r| r.join("microsoft-fhir-converter"))
}

/// (input, expected) pairs: every expected Bundle whose input sample is present.
fn pairs(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let expected_root = root.join("src/Microsoft.Health.Fhir.Liquid.Converter.FunctionalTests/TestData/Expected/Hl7v2");
    let mut out = Vec::new();
    // a corpus without the converter's samples (a subset) has nothing to compare
    let Ok(dirs) = std::fs::read_dir(&expected_root) else { return out };
    for dir in dirs {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let expected = f.unwrap().path();
            let name = expected.file_name().unwrap().to_string_lossy().replace("-expected.json", ".hl7");
            let input = root.join("data/SampleData/Hl7v2").join(&name);
            if input.exists() {
                out.push((input, expected));
            }
        }
    }
    out.sort();
    out
}

/// Our events for a message (one per patient).
fn events(msg: &Message<'_>, raw: &RawMessage) -> Vec<ClinicalEvent> {
    sluice_mapping::v2::map_message(msg, raw, &Default::default())
}

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| &x["resource"]).collect())
        .unwrap_or_default()
}

fn of_type<'v>(bundle: &'v Value, t: &str) -> Vec<&'v Value> {
    resources(bundle).into_iter().filter(|r| r["resourceType"] == t).collect()
}

fn code(r: &Value) -> String {
    r["code"]["coding"][0]["code"]
        .as_str()
        .or_else(|| r["code"]["text"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A value in a comparable form: a number with its comparator, trimmed text, a code, an instant.
fn value(r: &Value) -> Option<String> {
    if let Some(q) = r.get("valueQuantity") {
        let comparator = q["comparator"].as_str().unwrap_or_default();
        return Some(format!(
            "{comparator}{}",
            q["value"].as_f64().map(|f| f.to_string()).unwrap_or_default()
        ));
    }
    if let Some(t) = r.get("valueDateTime") {
        return instant(t).map(|i| format!("@{i}")).or_else(|| t.as_str().map(str::to_owned));
    }
    if let Some(c) = r["valueCodeableConcept"]["coding"][0]["code"].as_str() {
        return Some(c.to_owned());
    }
    if let Some(range) = r.get("valueRange") {
        return Some(format!("{}-{}", range["low"]["value"], range["high"]["value"]));
    }
    if let Some(ratio) = r.get("valueRatio") {
        return Some(format!("{}:{}", ratio["numerator"]["value"], ratio["denominator"]["value"]));
    }
    if let Some(cs) = r["component"].as_array() {
        return Some(cs.iter().filter_map(value).collect::<Vec<_>>().join("|"));
    }
    r.get("valueString").and_then(Value::as_str).map(|s| s.trim().to_owned())
}

fn units(r: &Value) -> BTreeSet<String> {
    let q = |v: &Value| {
        [v["unit"].as_str(), v["code"].as_str()]
            .into_iter()
            .flatten()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut out: BTreeSet<String> = q(&r["valueQuantity"]).into_iter().collect();
    for c in r["component"].as_array().into_iter().flatten() {
        out.extend(q(&c["valueQuantity"]));
    }
    out
}

/// The v3 interpretation codes of an Observation.
fn interpretations(r: &Value) -> BTreeSet<String> {
    r["interpretation"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["coding"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["system"].as_str().is_some_and(|s| s.ends_with("v3-ObservationInterpretation")))
        .filter_map(|c| c["code"].as_str().map(str::to_owned))
        .collect()
}

/// A reference range as `low-high` (numbers) or its text.
fn range(r: &Value) -> Option<String> {
    let rr = r["referenceRange"][0].clone();
    let rr = if rr.is_null() {
        r["component"][0]["referenceRange"][0].clone()
    } else {
        rr
    };
    if rr.is_null() {
        return None;
    }
    if let Some(t) = rr["text"].as_str() {
        return Some(t.replace(' ', ""));
    }
    let n = |v: &Value| v["value"].as_f64().map(|f| f.to_string()).unwrap_or_default();
    Some(format!("{}-{}", n(&rr["low"]), n(&rr["high"])))
}

fn has_sent_time(r: &Value, element: &str) -> bool {
    r["extension"].as_array().is_some_and(|exts| {
        exts.iter().any(|e| {
            e["url"] == sluice_mapping::fhir_out::TIMESTAMP_EXTENSION
                && e["extension"]
                    .as_array()
                    .is_some_and(|x| x.iter().any(|p| p["valueString"] == element))
        })
    })
}

/// The instant of a FHIR time, when it has one.
fn instant(v: &Value) -> Option<i64> {
    sluice_model::time::parse_fhir(v.as_str()?)?.utc_micros
}

fn identifier_values(r: &Value) -> BTreeSet<String> {
    r["identifier"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["value"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// What names an order: its ServiceRequest's identifier values and its service code.
fn order_names(r: &Value) -> BTreeSet<String> {
    let mut names = identifier_values(r);
    names.extend(
        r["code"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["code"].as_str().map(|c| format!("code:{c}"))),
    );
    names
}

/// The names (order numbers, service code) of the ServiceRequest an Observation is based on.
fn order_numbers(bundle: &Value, obs: &Value) -> Option<BTreeSet<String>> {
    let target = obs["basedOn"][0]["reference"].as_str()?;
    let id = target.rsplit(['/', ':']).next()?;
    resources(bundle)
        .into_iter()
        .find(|r| r["resourceType"] == "ServiceRequest" && r["id"].as_str() == Some(id))
        .map(order_names)
}

/// The order numbers of the ServiceRequest that names an Observation in `supportingInfo`.
fn supported_by(bundle: &Value, obs: &Value) -> Option<BTreeSet<String>> {
    let id = obs["id"].as_str()?;
    resources(bundle)
        .into_iter()
        .find(|r| {
            r["resourceType"] == "ServiceRequest"
                && r["supportingInfo"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x["reference"].as_str().is_some_and(|s| s.ends_with(id))))
        })
        .map(order_names)
}

/// What the message says, for the conditions of [`Why`].
struct Sent<'m> {
    msg: Message<'m>,
    name: String,
}

impl Sent<'_> {
    /// Every component and subcomponent value of the fields named.
    fn values_of(&self, fields: &[(&str, usize)]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in self.msg.segments() {
            for (name, n) in fields {
                if s.name_str() == *name {
                    for rep in s.field(*n).repetitions() {
                        for c in rep.components() {
                            out.extend(c.subcomponents().map(|x| self.msg.text(x)).filter(|x| !x.is_empty()));
                        }
                    }
                }
            }
        }
        out
    }

    fn segments(&self, names: &[&str]) -> Vec<String> {
        self.msg
            .segments()
            .filter(|s| names.contains(&s.name_str()))
            .map(|s| self.msg.text(s.raw()))
            .collect()
    }

    /// The OBX segments, in order, as (code, value type, result status, OBX-5 text, OBX-14,
    /// `spm` when it follows an SPM in its order group).
    fn obx(&self) -> Vec<[String; 6]> {
        let mut after_spm = false;
        let mut out = Vec::new();
        for s in self.msg.segments() {
            match s.name() {
                b"SPM" => after_spm = true,
                b"ORC" | b"OBR" => after_spm = false,
                b"OBX" => {
                    let c = s.field(3).repetition(0);
                    let code = self.msg.text(c.component(1).raw());
                    let code = if code.is_empty() {
                        self.msg.text(c.component(2).raw())
                    } else {
                        code
                    };
                    out.push([
                        code,
                        self.msg.text(s.field(2).raw()),
                        self.msg.text(s.field(11).raw()),
                        self.msg.text(s.field(5).raw()),
                        self.msg.text(s.field(14).raw()),
                        if after_spm { "spm".into() } else { String::new() },
                    ]);
                }
                _ => {}
            }
        }
        out
    }
}

#[derive(Default)]
struct Tally {
    compared: BTreeMap<&'static str, usize>,
    agreed: BTreeMap<&'static str, usize>,
    explained: BTreeMap<(&'static str, Why), usize>,
    unexplained: Vec<String>,
}

impl Tally {
    fn check(&mut self, field: &'static str, ok: bool, why: Option<Why>, detail: impl FnOnce() -> String) {
        *self.compared.entry(field).or_default() += 1;
        if ok {
            *self.agreed.entry(field).or_default() += 1;
        } else if let Some(w) = why {
            *self.explained.entry((field, w)).or_default() += 1;
        } else {
            self.unexplained.push(format!("{field}: {}", detail()));
        }
    }
}

/// One of our Observations against theirs at the same OBX position (None: only in ours).
fn compare_observation(sent: &Sent<'_>, obx: Option<&[String; 6]>, ours: (&Value, &Value), theirs: (&Value, &Value), t: &mut Tally) {
    let name = &sent.name;
    let ((o, ob), (q, qb)) = (ours, theirs);
    let value_type = obx.map(|x| x[1].as_str()).unwrap_or_default();
    let obx5 = obx.map(|x| x[3].as_str()).unwrap_or_default();
    let (v1, v2) = (value(o), value(q));
    let numeric = |v: &Option<String>| v.as_deref().and_then(|x| x.trim_start_matches(['<', '>', '=']).parse::<f64>().ok());
    let same = v1 == v2
        || (numeric(&v1).is_some() && numeric(&v1) == numeric(&v2) && v1.as_deref().map(|x| &x[..1]) == v2.as_deref().map(|x| &x[..1]));
    let attachment = o["extension"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x["url"] == sluice_mapping::fhir_out::VALUE_ATTACHMENT_EXTENSION));
    let why = if matches!(value_type, "ED" | "RP") && attachment && q.get("valueAttachment").is_none() {
        Some(Why::AttachmentValue)
    } else if matches!(value_type, "DT" | "DTM" | "TS" | "HD") && v2.is_none() && v1.is_some() {
        Some(Why::ValueDroppedByConverter)
    } else if v2.as_deref() == Some("Observation value") && obx5.trim() != "Observation value" {
        Some(Why::ConverterPlaceholder)
    } else if matches!(value_type, "DT" | "DTM" | "TS") && v1.as_deref() == Some(obx5) && q.get("valueDateTime").is_some() {
        Some(Why::DateTimeWithoutZone)
    } else {
        None
    };
    t.check("value", same, why, || format!("{name}: {} value {v1:?} vs {v2:?}", code(o)));
    // units as unit text and code together: ours must carry every one theirs carries
    let (u1, u2) = (units(o), units(q));
    if !u1.is_empty() || !u2.is_empty() {
        let same = !u2.is_empty() && u2.is_subset(&u1);
        let why = if u2.is_empty() {
            Some(Why::ConverterDropsUnit)
        } else if !u1.is_disjoint(&u2) {
            Some(Why::UnitCodeForText)
        } else {
            None
        };
        t.check("unit", same, why, || format!("{name}: {} unit {u1:?} vs {u2:?}", code(o)));
    }
    let (i1, i2) = (interpretations(o), interpretations(q));
    if !i1.is_empty() || !i2.is_empty() {
        t.check("interpretation", i1 == i2, None, || {
            format!("{name}: {} interpretation {i1:?} vs {i2:?}", code(o))
        });
    }
    let (r1, r2) = (range(o), range(q));
    if r1.is_some() || r2.is_some() {
        t.check("reference range", r1 == r2, None, || {
            format!("{name}: {} range {r1:?} vs {r2:?}", code(o))
        });
    }
    let obx11 = obx.map(|x| x[2].as_str()).unwrap_or_default();
    let by_table = q["status"] == "unknown" && sluice_mapping::v2::results::observation_status(obx11).is_some_and(|s| o["status"] == s);
    t.check(
        "status",
        o["status"] == q["status"],
        by_table.then_some(Why::StatusUnknownInConverter),
        || format!("{name}: {} status {} vs {}", code(o), o["status"], q["status"]),
    );
    let (e1, e2) = (&o["effectiveDateTime"], &q["effectiveDateTime"]);
    let same = e1 == e2 || (instant(e1).is_some() && instant(e1) == instant(e2));
    let why = if e1.is_null() && has_sent_time(o, "effectiveDateTime") && !e2.is_null() {
        Some(Why::TimeZoneNotInvented)
    } else if e2.is_null() && e1.as_str().is_some_and(|s| s.len() == 10) {
        Some(Why::DateOnlyTimeDropped)
    } else {
        None
    };
    t.check("effective time", same, why, || format!("{name}: {} time {e1} vs {e2}", code(o)));
    let (l1, l2) = (order_numbers(ob, o), order_numbers(qb, q));
    let linked = match (&l1, &l2) {
        (None, None) => true,
        (Some(a), Some(b)) => !a.is_disjoint(b) || (a.is_empty() && b.is_empty()),
        _ => false,
    };
    let supported = supported_by(ob, o).zip(l2.as_ref()).is_some_and(|(a, b)| !a.is_disjoint(b));
    let why = if l1.is_none() && supported {
        Some(Why::SupportingInfoNotBasedOn)
    } else if l2.is_none() && obx.is_some_and(|x| x[5] == "spm") && o.get("specimen").is_some() {
        Some(Why::SpecimenGroupObservation)
    } else {
        None
    };
    t.check("order link", linked, why, || {
        format!("{name}: {} based on {l1:?} vs {l2:?}", code(o))
    });
}

/// Pairs the Observations by OBX position (the n-th of each code) and compares each pair.
fn compare_observations(sent: &Sent<'_>, ours: &Value, theirs: &Value, t: &mut Tally) {
    let obx = sent.obx();
    let obx_codes: BTreeSet<&str> = obx.iter().map(|x| x[0].as_str()).collect();
    let mut theirs_by_code: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for q in of_type(theirs, "Observation") {
        theirs_by_code.entry(code(q)).or_default().push(q);
    }
    let ours_count = |c: &str| of_type(ours, "Observation").into_iter().filter(|o| code(o) == c).count();
    let order_message = matches!(
        sent.msg.segment(0).field(9).repetition(0).component(1).raw(),
        b"OML" | b"OMG" | b"ORM" | b"RDE" | b"RDS"
    );
    let after_rxa: BTreeSet<String> = {
        let mut seen_rxa = false;
        sent.msg
            .segments()
            .filter_map(|s| {
                seen_rxa |= s.name() == b"RXA";
                (seen_rxa && s.name() == b"OBX").then(|| sent.msg.text(s.field(3).repetition(0).component(1).raw()))
            })
            .collect()
    };
    // ours in OBX order: the n-th of a code pairs with theirs' n-th of it, except the OBX the
    // converter makes no Observation of (it has fewer of that code), which consume none of theirs
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for o in of_type(ours, "Observation") {
        let c = code(o);
        let n = seen.entry(c.clone()).or_default();
        let position = obx.iter().filter(|x| x[0] == c || (c == "not sent" && x[0].is_empty())).nth(*n);
        *n += 1;
        let theirs_n = theirs_by_code.get(&c).map_or(0, Vec::len);
        let short = theirs_n < ours_count(&c);
        let skipped = short
            && (position.is_some_and(|x| matches!(x[1].as_str(), "ED" | "RP"))
                || (theirs_n == 0 && (order_message || after_rxa.contains(&c)))
                || (theirs_n == 0 && o.get("specimen").is_some() && o.get("basedOn").is_none()));
        if skipped {
            t.check("observation paired", false, Some(Why::ConverterSkipsObx), String::new);
            continue;
        }
        let k = taken.entry(c.clone()).or_default();
        let theirs_obs = theirs_by_code.get(&c).and_then(|list| list.get(*k)).copied();
        *k += 1;
        t.check("observation paired", theirs_obs.is_some(), None, || {
            format!("{}: observation {c} only in ours", sent.name)
        });
        if let Some(q) = theirs_obs {
            compare_observation(sent, position, (o, ours), (q, theirs), t);
        }
    }
    for (c, list) in &theirs_by_code {
        let ours_n = taken.get(c).copied().unwrap_or(0);
        for _ in ours_n..list.len() {
            let derived = !obx_codes.contains(c.as_str());
            t.check(
                "observation paired",
                false,
                derived.then_some(Why::DerivedFromOtherSegments),
                || format!("{}: observation {c} only in theirs", sent.name),
            );
        }
    }
}

/// Every Patient of theirs has one of ours with its identifiers (insurance ones aside).
fn compare_patients(sent: &Sent<'_>, ours: &Value, theirs: &Value, t: &mut Tally) {
    let pid = sent.segments(&["PID"]).join("\r");
    let insurance = sent.segments(&["DB1", "IN1", "IN2", "GT1", "NK1"]).join("\r");
    let ours_ids: Vec<BTreeSet<String>> = of_type(ours, "Patient").into_iter().map(identifier_values).collect();
    for q in of_type(theirs, "Patient") {
        let wanted: BTreeSet<String> = identifier_values(q).into_iter().filter(|v| !v.is_empty()).collect();
        // the Patient of ours sharing the most identifiers (two patients may share one, an SSN)
        let found = ours_ids
            .iter()
            .filter(|mine| !mine.is_disjoint(&wanted))
            .max_by_key(|mine| mine.intersection(&wanted).count());
        t.check("patients", found.is_some(), None, || {
            format!("{}: no Patient with {wanted:?}", sent.name)
        });
        if let Some(mine) = found {
            let missing: Vec<&String> = wanted.difference(mine).collect();
            let from_insurance = missing.iter().all(|m| insurance.contains(m.as_str()) && !pid.contains(m.as_str()));
            t.check(
                "patient identifiers",
                missing.is_empty(),
                from_insurance.then_some(Why::IdentifierFromOtherSegment),
                || format!("{}: identifiers {missing:?} missing", sent.name),
            );
        }
    }
    let merge_or_move = sent.name.starts_with("ADT-A4") && !sent.segments(&["MRG"]).is_empty();
    if of_type(theirs, "Patient").is_empty() && !of_type(ours, "Patient").is_empty() {
        t.check("patients", false, merge_or_move.then_some(Why::MergeOrMoveRecord), || {
            format!("{}: no Patient in theirs", sent.name)
        });
    }
}

/// The identifiers of a type (PLAC, FILL: order numbers; PGN, FGN: the specimen's placer and
/// filler ids) across a Bundle's ServiceRequests, DiagnosticReports and Specimens.
fn typed_identifiers(b: &Value, types: &[&str]) -> BTreeSet<String> {
    ["DiagnosticReport", "ServiceRequest", "Specimen"]
        .iter()
        .flat_map(|ty| of_type(b, ty))
        .flat_map(|r| {
            let mut ids: Vec<Value> = r["identifier"].as_array().cloned().unwrap_or_default();
            ids.extend(r.get("accessionIdentifier").cloned());
            ids
        })
        .filter(|i| i["type"]["coding"][0]["code"].as_str().is_none_or(|c| types.contains(&c)))
        .filter_map(|i| i["value"].as_str().map(str::to_owned))
        .collect()
}

/// Their order numbers (PLAC, FILL) and specimen ids (PGN, FGN) are among ours, value for value.
/// Identifiers of other kinds (a parent specimen, a shipment, a placer group) are not compared:
/// we carry those fields as sent.
fn compare_identifiers(sent: &Sent<'_>, ours: &Value, theirs: &Value, t: &mut Tally) {
    let all = ["PLAC", "FILL", "PGN", "FGN"];
    let mine = typed_identifiers(ours, &all);
    let theirs_typed: BTreeSet<String> = ["DiagnosticReport", "ServiceRequest", "Specimen"]
        .iter()
        .flat_map(|ty| of_type(theirs, ty))
        .flat_map(|r| r["identifier"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["type"]["coding"][0]["code"].as_str().is_some_and(|c| all.contains(&c)))
        .filter_map(|i| i["value"].as_str().map(str::to_owned))
        .collect();
    // identifiers of fields not mapped yet, carried as sent in the event's unmapped fields:
    // ORC-4 placer group, ORC-8 and OBR-29 parent order, OBR-53 alternate placer number, SPM-3
    // parent specimen
    let unmapped = sent.values_of(&[("ORC", 4), ("ORC", 8), ("OBR", 29), ("OBR", 53), ("SPM", 3)]);
    for v in theirs_typed {
        if unmapped.contains(v.split(['&', '^']).next().unwrap_or_default()) && !mine.contains(&v) {
            continue;
        }
        let before_delimiter = v.split(['&', '^']).next().unwrap_or_default();
        let kept = v.contains(['&', '^']) && mine.contains(before_delimiter);
        t.check(
            "order and specimen identifiers",
            mine.contains(&v),
            kept.then_some(Why::ConverterKeepsDelimiter),
            || format!("{}: identifier {v:?} not in ours", sent.name),
        );
    }
}

fn figures_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ms_converter_figures.tsv")
}

#[test]
fn our_bundles_agree_with_fhir_converter_field_by_field() {
    let Some(root) = corpus() else { return };
    let pairs = pairs(&root);
    // every expected Bundle the manifest lists whose input is here was paired and compared
    let listed = sluice_hl7::corpus::files_of_kind(&["fhir-expected"])
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/Expected/Hl7v2/"))
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().replace("-expected.json", ".hl7");
            root.join("data/SampleData/Hl7v2").join(name).exists()
        })
        .count();
    assert_eq!(pairs.len(), listed, "expected Bundles listed but not compared");
    let mut t = Tally::default();
    for (input, expected) in &pairs {
        let bytes = std::fs::read(input).unwrap();
        let msg = Message::parse(&bytes);
        assert!(msg.is_acceptable(), "{}", input.display());
        let raw = RawMessage {
            raw_id: sluice_model::ids::sha256_hex(&bytes),
            ..Default::default()
        };
        // one Bundle per patient of the message, compared as one (the converter makes one Bundle)
        let entries: Vec<Value> = events(&msg, &raw)
            .iter()
            .flat_map(|e| sluice_mapping::fhir_out::bundle(e)["entry"].as_array().cloned().unwrap_or_default())
            .collect();
        let ours = serde_json::json!({"resourceType": "Bundle", "entry": entries});
        let text = std::fs::read(expected).unwrap();
        let theirs: Value = serde_json::from_slice(text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text)).unwrap();
        let sent = Sent {
            msg,
            name: input.file_name().unwrap().to_string_lossy().into_owned(),
        };
        compare_patients(&sent, &ours, &theirs, &mut t);
        compare_observations(&sent, &ours, &theirs, &mut t);
        compare_identifiers(&sent, &ours, &theirs, &mut t);
    }
    println!("{} message pairs compared with FHIR-Converter's expected Bundles", pairs.len());
    let mut lines = vec!["# field\tagreed\tcompared".to_owned()];
    for (field, n) in &t.compared {
        let a = t.agreed.get(field).copied().unwrap_or(0);
        println!("  {field}: {a} of {n} agree ({:.1}%)", 100.0 * a as f64 / *n as f64);
        lines.push(format!("{field}\t{a}\t{n}"));
    }
    for ((field, why), n) in &t.explained {
        println!("  {field}, explained {why:?}: {n}");
    }
    assert!(
        t.unexplained.is_empty(),
        "{} unexplained differences:\n{}",
        t.unexplained.len(),
        t.unexplained.join("\n")
    );
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(figures_path(), lines.join("\n") + "\n").unwrap();
        return;
    }
    // no figure may fall below the one recorded last (on the same corpus)
    let recorded = std::fs::read_to_string(figures_path()).unwrap_or_default();
    for l in recorded.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = l.split('\t').collect();
        let (field, was, of) = (cols[0], cols[1].parse::<usize>().unwrap(), cols[2].parse::<usize>().unwrap());
        let now = t.agreed.get(field).copied().unwrap_or(0);
        if t.compared.get(field) == Some(&of) {
            assert!(
                now >= was,
                "{field}: {now} agree, below the {was} recorded (SLUICE_BLESS=1 records new figures)"
            );
        }
    }
}
