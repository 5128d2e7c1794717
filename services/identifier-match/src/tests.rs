use super::*;
use sluice_model::{EventSource, Merge, Patient};

fn nhs(v: &str) -> Identifier {
    Identifier {
        value: v.into(),
        system: Some("https://fhir.nhs.uk/Id/nhs-number".into()),
        nhs_number_valid: Some(sluice_model::nhs::is_valid(v)),
        type_code: Some("NH".into()),
        ..Default::default()
    }
}

fn mrn(v: &str, auth: &str) -> Identifier {
    Identifier {
        value: v.into(),
        type_code: Some("MR".into()),
        assigning_authority: Some(auth.into()),
        ..Default::default()
    }
}

fn event(ids: Vec<Identifier>) -> ClinicalEvent {
    ClinicalEvent {
        patient: Some(Patient {
            identifiers: ids,
            ..Default::default()
        }),
        source: EventSource {
            sending_facility: "RTH".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn apply(index: &mut Index, d: &Decision) -> Option<String> {
    match d {
        Decision::Link { epi, links, .. } => {
            for (k, e, _) in links {
                index.load(k.clone(), e.clone());
            }
            Some(epi.clone())
        }
        _ => None,
    }
}

#[test]
fn same_patient_by_mrn_then_nhs_number() {
    let mut ix = Index::default();
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH"), nhs("9434765919")]));
    let a = apply(&mut ix, &d).expect("new patient");
    let (d, _) = decide(&ix, &event(vec![nhs("9434765919")]));
    assert_eq!(apply(&mut ix, &d), Some(a.clone()));
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH")]));
    assert_eq!(apply(&mut ix, &d), Some(a));
}

#[test]
fn invalid_nhs_number_is_never_a_key() {
    let mut ix = Index::default();
    let (d, ignored) = decide(&ix, &event(vec![nhs("9434765918")]));
    assert!(matches!(d, Decision::Review("no_usable_identifier")));
    assert_eq!(ignored, vec!["nhs_number_invalid"]);
    // with an MRN it links by the MRN only
    let (d, _) = decide(&ix, &event(vec![mrn("5", "RTH"), nhs("9434765918")]));
    assert!(matches!(&d, Decision::Link { links, .. } if links.len() == 1 && links[0].0 == "mrn|RTH|5"));
    apply(&mut ix, &d);
}

#[test]
fn mrn_with_a_different_nhs_number_goes_to_review() {
    let mut ix = Index::default();
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH"), nhs("9434765919")]));
    apply(&mut ix, &d);
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH"), nhs("9999999999")]));
    assert!(matches!(d, Decision::Review("nhs_number_conflict")));
}

#[test]
fn keys_of_two_patients_go_to_review() {
    let mut ix = Index::default();
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH")]));
    apply(&mut ix, &d);
    let (d, _) = decide(&ix, &event(vec![mrn("2", "RTH")]));
    apply(&mut ix, &d);
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH"), mrn("2", "RTH")]));
    assert!(matches!(d, Decision::Review("identifiers_point_to_different_patients")));
}

#[test]
fn merge_repoints_the_prior_record() {
    let mut ix = Index::default();
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH")]));
    let a = apply(&mut ix, &d).expect("a");
    let (d, _) = decide(&ix, &event(vec![mrn("2", "RTH")]));
    let b = apply(&mut ix, &d).expect("b");
    assert_ne!(a, b);
    let mut merge = event(vec![mrn("2", "RTH")]);
    merge.merge = Some(Merge {
        prior_identifiers: vec![mrn("1", "RTH")],
        kind: Merge::kind_of("A40").into(),
        ..Default::default()
    });
    let (d, _) = decide(&ix, &merge);
    assert!(matches!(&d, Decision::Link { outcome: "merged", .. }));
    apply(&mut ix, &d);
    assert_eq!(ix.resolve(&a), b);
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH")]));
    assert_eq!(apply(&mut ix, &d), Some(b));
}

#[test]
fn no_patient_is_held_unless_the_message_is_about_no_patient() {
    let ix = Index::default();
    let generic = ClinicalEvent {
        kind: "generic".into(),
        ..Default::default()
    };
    assert!(matches!(decide(&ix, &generic).0, Decision::NotApplicable));
    for kind in ["result", "order", "adt", "pharmacy", "immunisation", "schedule", "document"] {
        let ev = ClinicalEvent {
            kind: kind.into(),
            ..Default::default()
        };
        assert_eq!(shape(&decide(&ix, &ev).0), "review no_patient", "{kind}");
    }
}

/// The decision without its keys (Decision has no Debug: keys are patient identifiers).
fn shape(d: &Decision) -> String {
    match d {
        Decision::Link { outcome, rule, .. } => format!("link {outcome} by {rule}"),
        Decision::Review(why) => format!("review {why}"),
        Decision::NotApplicable => "not applicable".into(),
    }
}

/// Two patients in the index, then an ADT whose MRG names patient 1 with a given trigger.
fn two_patients_then(trigger: &str) -> (Index, String, String, Decision) {
    let mut ix = Index::default();
    let (d, _) = decide(&ix, &event(vec![mrn("1", "RTH")]));
    let a = apply(&mut ix, &d).expect("a");
    let (d, _) = decide(&ix, &event(vec![mrn("2", "RTH")]));
    let b = apply(&mut ix, &d).expect("b");
    let mut ev = event(vec![mrn("2", "RTH")]);
    ev.trigger_event = trigger.into();
    ev.merge = Some(Merge {
        prior_identifiers: vec![mrn("1", "RTH")],
        kind: Merge::kind_of(trigger).into(),
        ..Default::default()
    });
    let (d, _) = decide(&ix, &ev);
    (ix, a, b, d)
}

#[test]
fn moves_and_account_or_visit_merges_never_merge_two_patients() {
    // A44 moves an account from patient 1 to patient 2: MRG names patient 1, who stays a
    // different person; likewise visit moves and account/visit merges
    for trigger in ["A35", "A41", "A42", "A43", "A44", "A45", "A50", "A51"] {
        let (mut ix, a, b, d) = two_patients_then(trigger);
        assert!(matches!(&d, Decision::Link { outcome: "matched", .. }), "{trigger}: {}", shape(&d));
        apply(&mut ix, &d);
        assert_eq!(ix.resolve(&a), a, "{trigger} overlaid two patients");
        assert_ne!(ix.resolve(&a), b);
    }
}

#[test]
fn patient_merges_and_identifier_changes_repoint_the_prior_record() {
    for trigger in ["A18", "A30", "A34", "A36", "A39", "A40", "A46", "A47", "A48", "A49"] {
        let (mut ix, a, b, d) = two_patients_then(trigger);
        assert!(matches!(&d, Decision::Link { outcome: "merged", .. }), "{trigger}: {}", shape(&d));
        apply(&mut ix, &d);
        assert_eq!(ix.resolve(&a), b, "{trigger}");
    }
}

#[test]
fn a_merge_of_unknown_meaning_is_held_for_review() {
    let (_, _, _, d) = two_patients_then("Z99");
    assert!(matches!(d, Decision::Review("merge_kind_unknown")), "{}", shape(&d));
}

#[test]
fn link_and_unlink_requests_are_held_for_a_person() {
    for (trigger, rule) in [("A24", "review patient_link_requested"), ("A37", "review patient_unlink_requested")] {
        let (ix, a, b, d) = two_patients_then(trigger);
        assert_eq!(shape(&d), rule, "{trigger}");
        assert_ne!(ix.resolve(&a), ix.resolve(&b));
    }
}

#[test]
fn explicit_nulls_and_blanks_are_never_keys() {
    // PID-2 `""` with the facility standing in as its authority used to become the key
    // mrn|<facility>|"" shared by every patient of that feed
    for v in ["\"\"", "", "  ", "^", "~", "-"] {
        let (keys, ignored) = keys_of(&[mrn(v, "RTH")], "RTH");
        assert!(keys.is_empty(), "{v:?} became a key");
        assert_eq!(ignored, vec!["identifier_value_unusable"]);
    }
    let (keys, _) = keys_of(
        &[Identifier {
            value: "P1".into(),
            assigning_authority: Some("\"\"".into()),
            ..Default::default()
        }],
        "\"\"",
    );
    assert!(keys.is_empty(), "an explicit-null authority is no authority");
    let mut ix = Index::default();
    let (d, _) = decide(&ix, &event(vec![mrn("\"\"", "RTH"), mrn("P1001", "PROBEAUTH")]));
    let a = apply(&mut ix, &d).expect("new patient");
    let (d, _) = decide(&ix, &event(vec![mrn("\"\"", "RTH"), mrn("P2002", "PROBEAUTH")]));
    let b = apply(&mut ix, &d).expect("another new patient");
    assert_ne!(a, b, "two patients overlaid through an explicit null");
}
