//! Golden files: each `tests/golden/*.hl7` (synthetic, written for these tests) is mapped and
//! compared with the canonical event in the `.json` and the FHIR R4 Bundle in the `.fhir.json`
//! next to it, so any change to what the normaliser produces shows up as a reviewed diff. `SLUICE_BLESS=1` rewrites the `.json` files
//! after an intended change.
//!
//! A second test maps every corpus message and checks the promise that nothing is silently
//! discarded: every segment is either mapped or travels whole, and every non-empty field of a
//! mapped segment is either in the model or travels in `unmapped_fields`.

#![allow(clippy::unwrap_used)]

use sluice_hl7::Message;
use sluice_mapping::{RawPosition, v2::map_message};
use sluice_model::RawMessage;
use std::path::{Path, PathBuf};

fn raw(payload: &[u8]) -> RawMessage {
    RawMessage {
        raw_id: sluice_model::ids::sha256_hex(payload),
        transport: "mllp".into(),
        listener: "golden".into(),
        peer: "test".into(),
        received_at: 0,
        detected_charset: "test".into(),
        payload: vec![],
        msh: None,
        warnings: vec![],
    }
}

fn position() -> RawPosition {
    RawPosition {
        topic: "hl7v2.raw.v1".into(),
        partition: 0,
        offset: 42,
        replay: false,
    }
}

/// Compares an output with its golden file (or rewrites the file when blessing), noting a
/// difference in `changed`.
fn compare_or_bless(input: &Path, golden: &Path, got: &str, bless: bool, changed: &mut Vec<String>) {
    if bless {
        std::fs::write(golden, got).unwrap();
    } else if std::fs::read_to_string(golden).unwrap_or_default() != got {
        changed.push(format!(
            "{}: output differs from {} (SLUICE_BLESS=1 after review)\n{got}",
            input.display(),
            golden.display()
        ));
    }
}

#[test]
fn every_golden_message_maps_to_its_canonical_event() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 6, "golden inputs missing");
    let mut changed = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for input in &inputs {
        let bytes = std::fs::read(input).unwrap();
        let msg = Message::parse(&bytes);
        assert!(msg.is_acceptable(), "{} is not acceptable", input.display());
        let evs = map_message(&msg, &raw(&bytes), &position());
        kinds.extend(evs.iter().map(|e| e.kind.clone()));
        let bundles: Vec<serde_json::Value> = evs.iter().map(sluice_mapping::fhir_out::bundle).collect();
        // the text normalise writes is the same as the Value's own compact form
        for (ev, b) in evs.iter().zip(&bundles) {
            assert_eq!(
                sluice_mapping::fhir_out::bundle_json(ev).unwrap(),
                b.to_string(),
                "{}",
                input.display()
            );
        }
        // one event (and Bundle) per message, or a list of them for a message of several patients
        let (got, fhir) = match (evs.as_slice(), bundles.as_slice()) {
            ([ev], [b]) => (serde_json::to_string_pretty(ev).unwrap(), serde_json::to_string_pretty(b).unwrap()),
            _ => (
                serde_json::to_string_pretty(&evs).unwrap(),
                serde_json::to_string_pretty(&bundles).unwrap(),
            ),
        };
        let (got, fhir) = (got + "\n", fhir + "\n");
        for (golden, got) in [(input.with_extension("json"), got), (input.with_extension("fhir.json"), fhir)] {
            compare_or_bless(input, &golden, &got, bless, &mut changed);
        }
    }
    assert!(changed.is_empty(), "{}", changed.join("\n"));
    for kind in ["adt", "result", "order", "schedule", "document", "immunisation", "pharmacy"] {
        assert!(kinds.contains(kind), "no synthetic golden of kind {kind}");
    }
}

/// FHIR in: each `tests/golden-fhir/*.json|xml` (synthetic) gives the canonical events in its
/// `.events.json` and their FHIR Bundles in its `.bundles.json`.
#[test]
fn every_golden_fhir_body_maps_to_its_canonical_events() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden-fhir");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            (n.ends_with(".json") || n.ends_with(".xml")) && !n.ends_with(".events.json") && !n.ends_with(".bundles.json")
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 3, "golden FHIR inputs missing");
    let mut changed = Vec::new();
    for input in &inputs {
        let bytes = std::fs::read(input).unwrap();
        let mut r = raw(&bytes);
        r.payload = bytes.clone();
        r.transport = "http".into();
        let position = RawPosition {
            topic: "fhir.raw.v1".into(),
            ..position()
        };
        let evs = sluice_mapping::fhir_in::map_body(&r, &position).unwrap();
        let bundles: Vec<serde_json::Value> = evs.iter().map(sluice_mapping::fhir_out::bundle).collect();
        let stem = input.file_stem().unwrap().to_string_lossy().into_owned();
        for (golden, got) in [
            (
                dir.join(format!("{stem}.events.json")),
                serde_json::to_string_pretty(&evs).unwrap() + "\n",
            ),
            (
                dir.join(format!("{stem}.bundles.json")),
                serde_json::to_string_pretty(&bundles).unwrap() + "\n",
            ),
        ] {
            compare_or_bless(input, &golden, &got, bless, &mut changed);
        }
    }
    assert!(changed.is_empty(), "{}", changed.join("\n"));
}

/// Golden files for the corpus: its messages cannot be copied into this repository (their
/// licences), so `tests/golden-corpus.tsv` records, for every corpus message and FHIR file, a
/// digest of its canonical event(s) and FHIR Bundle(s). Any change to what the normaliser makes
/// of a corpus message fails here; `SLUICE_GOLDEN_OUT=DIR` writes the outputs that changed for
/// review, `SLUICE_BLESS=1` records the new digests.
#[test]
fn corpus_outputs_match_their_recorded_digests() {
    let Some(root) = sluice_hl7::corpus::root() else { return };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden-corpus.tsv");
    let mut lines = vec!["# corpus file#message\tsha256 of the canonical event(s) and FHIR Bundle(s) as JSON".to_owned()];
    let mut outputs: Vec<(String, String)> = Vec::new();
    let rel = |f: &Path| f.strip_prefix(&root).unwrap_or(f).display().to_string();
    for file in sluice_hl7::corpus::hl7v2_files().unwrap() {
        let bytes = std::fs::read(&file).unwrap();
        for (i, m) in sluice_hl7::split_messages(&bytes).into_iter().enumerate() {
            let msg = Message::parse(m);
            if !msg.is_acceptable() {
                continue;
            }
            let evs = map_message(&msg, &raw(m), &position());
            let mut out = String::new();
            for ev in &evs {
                // no two results of one message share a key: a consumer replacing by key keeps all
                let mut keys = std::collections::HashSet::new();
                for o in &ev.observations {
                    if let Some(k) = &o.result_key {
                        assert!(keys.insert(k), "{}#{i}: two results share the key {k}", rel(&file));
                    }
                }
                out.push_str(&serde_json::to_string_pretty(ev).unwrap());
                out.push('\n');
                out.push_str(&serde_json::to_string_pretty(&sluice_mapping::fhir_out::bundle(ev)).unwrap());
                out.push('\n');
            }
            outputs.push((format!("{}#{i}", rel(&file)), out));
        }
    }
    for file in sluice_hl7::corpus::fhir_files().unwrap() {
        let mut r = raw(b"");
        r.payload = std::fs::read(&file).unwrap();
        let Ok(evs) = sluice_mapping::fhir_in::map_body(&r, &position()) else {
            continue;
        };
        let bundles: Vec<serde_json::Value> = evs.iter().map(sluice_mapping::fhir_out::bundle).collect();
        let out = format!(
            "{}\n{}\n",
            serde_json::to_string_pretty(&evs).unwrap(),
            serde_json::to_string_pretty(&bundles).unwrap()
        );
        outputs.push((format!("{}#0", rel(&file)), out));
    }
    let recorded: std::collections::HashMap<String, String> = std::fs::read_to_string(&golden)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let review = std::env::var_os("SLUICE_GOLDEN_OUT").map(PathBuf::from);
    let mut changed = Vec::new();
    for (key, out) in &outputs {
        let digest = sluice_model::ids::sha256_hex(out.as_bytes());
        if recorded.get(key) != Some(&digest) {
            changed.push(key.clone());
            if let Some(dir) = &review {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join(key.replace(['/', '#'], "_") + ".json"), out).unwrap();
            }
        }
        lines.push(format!("{key}\t{digest}"));
    }
    // a recorded output is gone when its file is here but the output is not (a message that
    // used to map no longer does); on a smaller corpus its file is simply absent
    let produced: std::collections::HashSet<&str> = outputs.iter().map(|(k, _)| k.as_str()).collect();
    let gone = recorded
        .keys()
        .filter(|k| !produced.contains(k.as_str()))
        .filter(|k| k.rsplit_once('#').is_some_and(|(file, _)| root.join(file).exists()))
        .count();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&golden, lines.join("\n") + "\n").unwrap();
        return;
    }
    // outputs of files the record does not know (another corpus than the recorded one) are not
    // compared: every other test still judges them
    let unknown: Vec<String> = changed.iter().filter(|k| !recorded.contains_key(*k)).cloned().collect();
    changed.retain(|k| recorded.contains_key(k));
    println!(
        "{} corpus outputs: {} compared with their digests, {} without a recorded digest",
        outputs.len(),
        outputs.len() - unknown.len(),
        unknown.len()
    );
    assert!(
        changed.is_empty() && gone == 0,
        "{} corpus outputs changed and {gone} are gone (SLUICE_GOLDEN_OUT=DIR to review them, SLUICE_BLESS=1 to record): {}",
        changed.len(),
        changed.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
    );
}

const MAPPED: [&str; 25] = [
    "MSH", "EVN", "PID", "PV1", "MRG", "ORC", "OBR", "OBX", "NTE", "SPM", "TQ1", "RXA", "RXR", "TXA", "AL1", "IAM", "SCH", "AIS", "AIG",
    "AIL", "AIP", "RXO", "RXE", "RXD", "RXG",
];

#[test]
fn no_corpus_content_is_silently_discarded() {
    let Some(files) = sluice_hl7::corpus::hl7v2_files() else { return };
    let mut messages = 0;
    let mut refused = 0;
    let mut travelling = 0;
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for m in sluice_hl7::split_messages(&bytes) {
            let msg = Message::parse(m);
            if !msg.is_acceptable() {
                refused += 1;
                continue;
            }
            messages += 1;
            let evs = map_message(&msg, &raw(m), &position());
            // every segment is mapped or carried whole by one of the message's events
            let unmapped: std::collections::HashSet<i32> = evs.iter().flat_map(|e| e.unmapped_segments.iter().map(|u| u.index)).collect();
            for (i, seg) in msg.segments().enumerate() {
                let index = i as i32 + 1;
                let name = seg.name_str();
                assert!(
                    MAPPED.contains(&name) || unmapped.contains(&index),
                    "{}: segment {index} ({name}) neither mapped nor carried",
                    file.display()
                );
                if unmapped.contains(&index) {
                    // carried whole, as sent
                    let u = evs
                        .iter()
                        .flat_map(|e| e.unmapped_segments.iter())
                        .find(|u| u.index == index)
                        .unwrap();
                    assert_eq!(u.name, name);
                    travelling += 1;
                }
            }
        }
    }
    let listed = sluice_hl7::corpus::manifest_hl7v2_messages().unwrap_or(0);
    assert!(
        messages + refused >= listed,
        "the manifest lists {listed} messages; only {} were read",
        messages + refused
    );
    println!("{messages} corpus messages mapped; {travelling} segments travel whole");
}

#[test]
fn a_correction_names_the_result_it_replaces() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let map = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        map_message(&Message::parse(&bytes), &raw(&bytes), &position()).remove(0)
    };
    let first = map("oru_r01_results.hl7");
    let later = map("oru_r01_correction.hl7");
    let find = |ev: &sluice_model::ClinicalEvent, code: &str| {
        ev.observations
            .iter()
            .find(|o| o.code.as_ref().and_then(|c| c.code.as_deref()) == Some(code))
            .cloned()
            .unwrap()
    };
    let (k1, k2) = (find(&first, "K"), find(&later, "K"));
    assert_eq!(k1.status.as_deref(), Some("final"));
    assert_eq!(k2.status.as_deref(), Some("corrected"));
    assert_eq!(k2.result_status.as_deref(), Some("C"), "the code as sent travels too");
    assert!(k1.result_key.is_some());
    assert_eq!(k1.result_key, k2.result_key, "the correction replaces the potassium result");
    let (na1, na2) = (find(&first, "NA"), find(&later, "NA"));
    assert_eq!(na2.status.as_deref(), Some("entered-in-error"));
    assert_eq!(na1.result_key, na2.result_key, "the deletion names the sodium result");
    assert_ne!(k1.result_key, na1.result_key);
    assert_eq!(find(&first, "EGFR").units_ucum.as_deref(), Some("mL/min/{1.73_m2}"));
}
