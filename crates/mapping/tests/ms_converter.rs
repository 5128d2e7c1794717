//! Our FHIR R4 Bundles compared with Microsoft FHIR-Converter's expected outputs for its HL7 v2
//! samples (`../shared/corpus/microsoft-fhir-converter`: inputs in `data/SampleData/Hl7v2`,
//! expected Bundles under `TestData/Expected/Hl7v2`). Their output is that converter's opinion,
//! not a standard, so the test compares the clinical facts (patient identity, results with their
//! values, units, statuses and times, and which clinical resources exist) and fails on any
//! difference that is not one of the deliberate ones listed in [`Deliberate`], each with why.
//! The agreement figures are printed.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sluice_hl7::Message;
use sluice_model::RawMessage;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Differences we make on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deliberate {
    /// A time sent without an offset: the converter gives it one (its configured default zone);
    /// we never invent a zone, so the element is absent and the value as sent is in our
    /// `hl7v2-timestamp` extension.
    ZoneNotInvented,
    /// A status or flag we read through HL7 table 0085 (OBX-11) where the converter writes
    /// `unknown` or a different code: `I` (in process, no result yet) is `registered`, `R`/`S`
    /// (not verified, partial) `preliminary`, `D` (delete) and `W` (wrong) `entered-in-error`.
    StatusByTable0085,
    /// A resource type we do not produce as its own resource (Practitioner, Organization,
    /// Provenance, Account, RelatedPerson, Coverage, Condition, Procedure, Location, Device ...):
    /// that content travels in the canonical event (unmapped segments and fields) instead.
    NotAResourceHere,
    /// A time sent with an offset keeps that offset; the converter rewrites it into its own
    /// server's zone (the same instant).
    OffsetKeptAsSent,
    /// Identifiers from insurance and guarantor segments (IN1, IN2, GT1: Medicare, Medicaid,
    /// member numbers): the converter puts them on the Patient; they identify a policy, not the
    /// patient's record, so they travel with those segments and are never match keys.
    InsuranceIdentifiers,
    /// A merge or move (A40, A41, A45, A47): the converter writes a Linkage (merges) or nothing
    /// (moves) and no Patient; we write the Patient the message is about, with `link` of type
    /// `replaces` for patient merges and identifier changes only, never for moves.
    MergeAsPatientLink,
    /// Content the converter leaves out that we keep: an OBX it makes no Observation of, a
    /// date-only observation time, units that are not UCUM, a reference-pointer value (it writes
    /// the placeholder `Observation value`), or a DocumentReference it makes without any content
    /// (content is required).
    ConverterDropsContent,
    /// A value we keep as text because its type is not numeric (ST/TX/FT) or it carries more
    /// than one repetition, where the converter writes a quantity or a joined string.
    ValueKeptAsSent,
    /// Observations the converter derives from fields that are not OBX (death certificate,
    /// autopsy and coroner flags, injury incident): that content travels in the canonical event
    /// as the fields it came from; our Observations are the message's OBX segments.
    DerivedObservations,
    /// Resources the converter makes that this mapping makes differently: the converter always
    /// makes a ServiceRequest per OBR even in results (we make a DiagnosticReport per result OBR
    /// and a ServiceRequest per order OBR), DiagnosticReports for financial messages (DFT), an
    /// Encounter only for some triggers, and a Specimen per OBR even without specimen data (we
    /// make one per SPM and per non-empty OBR-15); counts of these types may differ.
    ResourceShape,
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

fn value(r: &Value) -> Option<String> {
    if let Some(q) = r.get("valueQuantity") {
        let comparator = q["comparator"].as_str().unwrap_or_default();
        return Some(format!(
            "{comparator}{}",
            q["value"].as_f64().map(|f| f.to_string()).unwrap_or_default()
        ));
    }
    r.get("valueString")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .or_else(|| r["valueCodeableConcept"]["coding"][0]["code"].as_str().map(str::to_owned))
}

fn unit(r: &Value) -> Option<String> {
    r["valueQuantity"]["unit"].as_str().map(str::to_owned)
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

const CLINICAL: [&str; 11] = [
    "Patient",
    "Encounter",
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Specimen",
    "Immunization",
    "MedicationRequest",
    "AllergyIntolerance",
    "Appointment",
    "DocumentReference",
];

#[derive(Default)]
struct Tally {
    compared: BTreeMap<&'static str, usize>,
    agreed: BTreeMap<&'static str, usize>,
    deliberate: BTreeMap<Deliberate, usize>,
    examples: BTreeMap<Deliberate, Vec<String>>,
    unexplained: Vec<String>,
}

impl Tally {
    fn check(&mut self, what: &'static str, ok: bool, explained: Option<Deliberate>, detail: impl FnOnce() -> String) {
        *self.compared.entry(what).or_default() += 1;
        if ok {
            *self.agreed.entry(what).or_default() += 1;
        } else if let Some(d) = explained {
            *self.deliberate.entry(d).or_default() += 1;
            let shown = self.examples.entry(d).or_default();
            if shown.len() < 40 {
                shown.push(detail());
            }
        } else {
            self.unexplained.push(detail());
        }
    }
}

/// The instant of a FHIR time, when it has one.
fn instant(v: &Value) -> Option<i64> {
    sluice_model::time::parse_fhir(v.as_str()?)?.utc_micros
}

fn compare(name: &str, pid: &str, obx_codes: &BTreeSet<String>, ours: &Value, theirs: &Value, t: &mut Tally) {
    compare_patient(name, pid, ours, theirs, t);
    compare_observations(name, obx_codes, ours, theirs, t);
    compare_resource_types(name, ours, theirs, t);
}

fn compare_patient(name: &str, pid: &str, ours: &Value, theirs: &Value, t: &mut Tally) {
    // patient identity
    if let (Some(p), Some(q)) = (of_type(ours, "Patient").first(), of_type(theirs, "Patient").first()) {
        let ids = |r: &Value| -> BTreeSet<String> {
            r["identifier"]
                .as_array()
                .map(|a| a.iter().filter_map(|i| i["value"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let (mine, other) = (ids(p), ids(q));
        let missing: Vec<&String> = other.difference(&mine).collect();
        let from_insurance = !missing.is_empty() && missing.iter().all(|m| !pid.contains(m.as_str()));
        t.check(
            "patient identifiers",
            missing.is_empty(),
            from_insurance.then_some(Deliberate::InsuranceIdentifiers),
            || format!("{name}: identifiers {mine:?} vs {other:?}"),
        );
        for k in ["birthDate", "gender"] {
            let same = p[k] == q[k];
            let zone = k == "birthDate" && p[k].is_null() && has_sent_time(p, k);
            t.check(
                "patient birth date and sex",
                same,
                zone.then_some(Deliberate::ZoneNotInvented),
                || format!("{name}: {k} {} vs {}", p[k], q[k]),
            );
        }
        let family = |r: &Value| r["name"][0]["family"].as_str().map(str::to_owned);
        t.check("patient names", family(p) == family(q), None, || {
            format!("{name}: family {:?} vs {:?}", family(p), family(q))
        });
    }
}

fn compare_observations(name: &str, obx_codes: &BTreeSet<String>, ours: &Value, theirs: &Value, t: &mut Tally) {
    // results: matched in order by code
    let mut theirs_obs: Vec<&Value> = of_type(theirs, "Observation");
    for o in of_type(ours, "Observation") {
        let Some(pos) = theirs_obs.iter().position(|x| code(x) == code(o)) else {
            t.check(
                "observations present in both",
                false,
                Some(Deliberate::ConverterDropsContent),
                || format!("{name}: observation {} only in ours", code(o)),
            );
            continue;
        };
        let q = theirs_obs.remove(pos);
        compare_observation(name, o, q, t);
    }
    for q in theirs_obs {
        // an OBX we did not make an Observation of would be ours to fix
        let from_obx = obx_codes.contains(&code(q));
        t.check(
            "observations present in both",
            false,
            (!from_obx).then_some(Deliberate::DerivedObservations),
            || format!("{name}: observation {} only in theirs", code(q)),
        );
    }
}

/// One of our Observations against theirs of the same code.
fn compare_observation(name: &str, o: &Value, q: &Value, t: &mut Tally) {
    t.check("observations present in both", true, None, String::new);
    let (v1, v2) = (value(o), value(q));
    let numeric_equal = match (&v1, &v2) {
        (Some(a), Some(b)) => {
            a.trim_start_matches(['<', '>', '=']).parse::<f64>().ok() == b.trim_start_matches(['<', '>', '=']).parse::<f64>().ok()
                && a.parse::<f64>().is_ok()
        }
        _ => false,
    };
    let as_text = o.get("valueString").is_some() && q.get("valueString").is_none();
    let explained = if as_text {
        Some(Deliberate::ValueKeptAsSent)
    } else if v2.as_deref() == Some("Observation value") {
        Some(Deliberate::ConverterDropsContent)
    } else {
        None
    };
    t.check("observation values", v1 == v2 || numeric_equal, explained, || {
        format!("{name}: {} value {v1:?} vs {v2:?}", code(o))
    });
    if o.get("valueQuantity").is_some() && q.get("valueQuantity").is_some() {
        let dropped = unit(q).is_none() && unit(o).is_some();
        t.check(
            "observation units",
            unit(o) == unit(q),
            dropped.then_some(Deliberate::ConverterDropsContent),
            || format!("{name}: {} unit {:?} vs {:?}", code(o), unit(o), unit(q)),
        );
    }
    let status_explained = q["status"] == "unknown" && !o["status"].is_null();
    t.check(
        "observation statuses",
        o["status"] == q["status"],
        status_explained.then_some(Deliberate::StatusByTable0085),
        || format!("{name}: {} status {} vs {}", code(o), o["status"], q["status"]),
    );
    let (e1, e2) = (&o["effectiveDateTime"], &q["effectiveDateTime"]);
    let explained = if e1.is_null() && has_sent_time(o, "effectiveDateTime") {
        Some(Deliberate::ZoneNotInvented)
    } else if instant(e1).is_some() && instant(e1) == instant(e2) {
        Some(Deliberate::OffsetKeptAsSent)
    } else if e2.is_null() && !e1.is_null() {
        Some(Deliberate::ConverterDropsContent)
    } else {
        None
    };
    t.check("observation times", e1 == e2, explained, || {
        format!("{name}: {} time {e1} vs {e2}", code(o))
    });
}

fn compare_resource_types(name: &str, ours: &Value, theirs: &Value, t: &mut Tally) {
    // which clinical resources exist
    for ty in CLINICAL {
        let (a, b) = (of_type(ours, ty).len(), of_type(theirs, ty).len());
        let explained = match ty {
            "ServiceRequest" | "DiagnosticReport" | "Encounter" | "Specimen" | "Observation" => Some(Deliberate::ResourceShape),
            "Patient" if b == 0 && name.starts_with("ADT-A4") => Some(Deliberate::MergeAsPatientLink),
            "DocumentReference" if a == 0 && of_type(theirs, ty).iter().all(|d| d.get("content").is_none()) => {
                Some(Deliberate::ConverterDropsContent)
            }
            _ => None,
        };
        t.check("clinical resource types made", (a == 0) == (b == 0), explained, || {
            format!("{name}: {ty}: {a} ours vs {b} theirs")
        });
    }
    let ours_types: BTreeSet<&str> = resources(ours).iter().filter_map(|r| r["resourceType"].as_str()).collect();
    for r in resources(theirs) {
        let ty = r["resourceType"].as_str().unwrap_or_default();
        if !CLINICAL.contains(&ty) && !ours_types.contains(ty) && ty != "MessageHeader" {
            *t.deliberate.entry(Deliberate::NotAResourceHere).or_default() += 1;
        }
    }
}

#[test]
fn our_bundles_agree_with_fhir_converter_except_where_deliberate() {
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
        let ev = sluice_mapping::v2::map_message(&msg, &raw, &Default::default());
        let ours = sluice_mapping::fhir_out::bundle(&ev);
        let theirs: Value = serde_json::from_slice(
            std::fs::read(expected)
                .unwrap()
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(&std::fs::read(expected).unwrap()),
        )
        .unwrap();
        let pid = msg
            .find("PID", 0)
            .map(|s| String::from_utf8_lossy(s.raw()).into_owned())
            .unwrap_or_default();
        let obx_codes: BTreeSet<String> = msg
            .segments()
            .filter(|s| s.name() == b"OBX")
            .filter_map(|s| {
                let c = s.field(3).repetition(0);
                let code = msg.text(c.component(1).raw());
                Some(if code.is_empty() { msg.text(c.component(2).raw()) } else { code }).filter(|x| !x.is_empty())
            })
            .collect();
        compare(
            &input.file_name().unwrap().to_string_lossy(),
            &pid,
            &obx_codes,
            &ours,
            &theirs,
            &mut t,
        );
    }
    println!("{} message pairs compared with FHIR-Converter's expected Bundles", pairs.len());
    for (what, n) in &t.compared {
        let agreed = t.agreed.get(what).copied().unwrap_or_default();
        println!("  {what}: {agreed} of {n} agree ({:.1}%)", 100.0 * agreed as f64 / *n as f64);
    }
    for (d, n) in &t.deliberate {
        println!("  deliberate {d:?}: {n}");
        if std::env::var_os("SLUICE_SHOW").is_some() {
            for e in t.examples.get(d).into_iter().flatten() {
                println!("      {e}");
            }
        }
    }
    assert!(
        t.unexplained.is_empty(),
        "{} unexplained differences:\n{}",
        t.unexplained.len(),
        t.unexplained.join("\n")
    );
}
