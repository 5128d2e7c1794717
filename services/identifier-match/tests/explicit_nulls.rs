//! Property test: the HL7 explicit null `""` in any PID field or component is never a value,
//! identifier or match key, and two different patients that share nulls never share an
//! enterprise id. Runs the real mapper into the real identity decisions.

#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_identifier_match::resolve::{Out, Position, Resolver};
use sluice_identifier_match::{JsonCodec, keys_of};
use sluice_matcher::{Index, Weights};
use std::sync::Arc;

const NULL: &str = "\"\"";

/// A PID with `""` put into the fields and components `nulls` chooses, the rest filled in.
fn pid(rng: &mut StdRng, mrn: &str, given: &str) -> String {
    let mut fields: Vec<String> = vec![
        "1".into(),
        NULL.into(),
        format!("{mrn}^^^PROBEAUTH^MR"),
        NULL.into(),
        format!("Testperson^{given}"),
        NULL.into(),
        "19700101".into(),
        "F".into(),
    ];
    fields.resize(39, String::new());
    for f in fields.iter_mut().skip(1) {
        if f.is_empty() && rng.random_bool(0.5) {
            *f = NULL.into();
        }
    }
    // nulls in components too, never in the MRN itself (the patient's one real identifier)
    if rng.random_bool(0.5) {
        fields[2] = format!("{mrn}^^^PROBEAUTH^MR~{NULL}^^^{NULL}^MR~{NULL}");
    }
    if rng.random_bool(0.5) {
        fields[4] = format!("Testperson^{NULL}~{NULL}");
    }
    if rng.random_bool(0.3) {
        fields[10] = format!("{NULL}^{NULL}^{NULL}^^{NULL}");
    }
    if rng.random_bool(0.3) {
        fields[6] = NULL.into();
        fields[7] = NULL.into();
    }
    if rng.random_bool(0.3) {
        fields[8] = format!("{NULL}^{NULL}~{NULL}");
    }
    format!("PID|{}", fields.join("|"))
}

fn event(text: &str) -> sluice_model::ClinicalEvent {
    let msg = sluice_hl7::Message::parse(text.as_bytes());
    assert!(msg.is_acceptable());
    let raw = sluice_model::RawMessage {
        payload: text.as_bytes().to_vec(),
        ..Default::default()
    };
    sluice_mapping::v2::map_message(&msg, &raw, &Default::default()).remove(0)
}

#[test]
fn explicit_nulls_anywhere_in_pid_never_become_keys_and_never_overlay_patients() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut resolver = Resolver::new(Index::new(Arc::new(Weights::default_weights())), Box::new(JsonCodec));
    let mut enterprise_ids = std::collections::HashMap::new();
    for n in 0..500 {
        let mrn = format!("P{n:05}");
        let text = format!(
            "MSH|^~\\&|PROBE|PROBEFAC|R|F|20240301||ADT^A04|C{n}|P|2.5\r{}\r",
            pid(&mut rng, &mrn, &format!("G{n}"))
        );
        let ev = event(&text);
        let patient = ev.patient.as_ref().unwrap();
        assert!(
            patient.identifiers.iter().all(|i| i.value != NULL),
            "{text:?}: a null became an identifier"
        );
        assert!(patient.identifiers.iter().all(|i| i.assigning_authority.as_deref() != Some(NULL)));
        assert!(
            patient
                .names
                .iter()
                .chain(&patient.aliases)
                .all(|p| p.given.as_deref() != Some(NULL) && p.family.as_deref() != Some(NULL))
        );
        assert!(patient.sex.as_deref() != Some(NULL) && patient.birth_date.as_ref().is_none_or(|b| b.value != NULL));
        assert!(
            patient
                .addresses
                .iter()
                .all(|a| a.postcode.as_deref() != Some(NULL) && !a.lines.iter().any(|l| l == NULL))
        );
        assert!(
            ev.explicit_nulls.iter().any(|x| x.segment == "PID" && x.field == 2),
            "the null is recorded"
        );
        let (keys, _) = keys_of(&patient.identifiers, &ev.source.sending_facility);
        assert!(keys.iter().all(|k| !k.key.contains(NULL)), "a null became a key: {keys:?}");
        assert_eq!(keys.len(), 1, "{text:?}: only the MRN is a key");
        let out = resolver.event(ev, 1, &Position::default());
        resolver.commit();
        for o in &out {
            if let Out::Link(l) = o {
                assert!(!l.key.contains(NULL), "a null became a match key");
            }
        }
        let epi = out
            .iter()
            .find_map(|o| match o {
                Out::Matched(m) | Out::Review(m) => m.enterprise_id.clone(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{text:?}: no enterprise id"));
        // the same given name pattern with an index: never two patients' records in one id
        assert!(
            enterprise_ids.insert(epi, mrn).is_none(),
            "two different patients share an enterprise id"
        );
    }
}
