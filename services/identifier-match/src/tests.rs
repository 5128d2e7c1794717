#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use resolve::{Out, Position, Resolver};
use sluice_model::{EventSource, Identifier, Merge, Patient, PersonName};

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
    named(ids, "TESTPERSON", "ALPHA", "19800101")
}

fn named(ids: Vec<Identifier>, family: &str, given: &str, dob: &str) -> ClinicalEvent {
    let id = ids.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(",");
    ClinicalEvent {
        event_id: format!("e-{id}-{family}-{given}-{dob}"),
        kind: "adt".into(),
        patient: Some(Patient {
            identifiers: ids,
            names: vec![PersonName {
                family: Some(family.into()),
                given: Some(given.into()),
                ..Default::default()
            }],
            birth_date: Some(sluice_model::Timestamp {
                value: dob.into(),
                ..Default::default()
            }),
            sex: Some("F".into()),
            addresses: vec![sluice_model::Address {
                lines: vec!["12 High Street".into()],
                postcode: Some("LS1 4AB".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        source: EventSource {
            sending_facility: "RTH".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn resolver() -> Resolver {
    Resolver::new(Index::new(Arc::new(Weights::default_weights())), Box::new(JsonCodec))
}

/// Processes one event and commits; the enterprise id of its matched event (None: held).
fn run(r: &mut Resolver, ev: ClinicalEvent) -> (Option<String>, Vec<Out>) {
    let out = r.event(ev, 1, &Position::default());
    r.commit();
    (matched_epi(&out), out)
}

fn matched_epi(out: &[Out]) -> Option<String> {
    out.iter().find_map(|o| match o {
        Out::Matched(m) => m.enterprise_id.clone(),
        _ => None,
    })
}

fn review_rule(out: &[Out]) -> Option<String> {
    out.iter().find_map(|o| match o {
        Out::Review(m) => Some(m.match_result.rule.clone()),
        _ => None,
    })
}

fn changes(out: &[Out]) -> Vec<(String, String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Change(c) => Some((c.kind.clone(), c.from_enterprise_id.clone(), c.to_enterprise_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn same_patient_by_mrn_then_nhs_number() {
    let mut r = resolver();
    let (a, _) = run(&mut r, event(vec![mrn("1", "RTH"), nhs("9434765919")]));
    let a = a.expect("new patient");
    assert_eq!(run(&mut r, event(vec![nhs("9434765919")])).0, Some(a.clone()));
    assert_eq!(run(&mut r, event(vec![mrn("1", "RTH")])).0, Some(a));
}

#[test]
fn every_decision_carries_its_evidence() {
    let mut r = resolver();
    run(&mut r, event(vec![mrn("1", "RTH"), nhs("9434765919")]));
    let (_, out) = run(&mut r, named(vec![mrn("9", "LGI")], "TESTPERSON", "ALPHA", "19800101"));
    let Some(Out::Matched(m)) = out.iter().find(|o| matches!(o, Out::Matched(_))) else {
        panic!("not matched")
    };
    assert!(m.match_result.score.is_some());
    assert_eq!(m.match_result.comparisons.len(), 8);
    assert!(
        m.match_result
            .comparisons
            .iter()
            .any(|c| c.field == "birth_date" && c.level == "exact" && c.weight > 0.0)
    );
    assert!(!m.match_result.weights_version.is_empty());
}

#[test]
fn invalid_nhs_number_is_never_a_key() {
    let mut r = resolver();
    let (epi, out) = run(&mut r, event(vec![nhs("9434765918")]));
    assert_eq!((epi, review_rule(&out).as_deref()), (None, Some("no_usable_identifier")));
    let (epi, out) = run(&mut r, event(vec![mrn("5", "RTH"), nhs("9434765918")]));
    assert!(epi.is_some());
    let links: Vec<&String> = out
        .iter()
        .filter_map(|o| match o {
            Out::Link(l) => Some(&l.key),
            _ => None,
        })
        .collect();
    assert_eq!(links, vec!["mrn|RTH|5"]);
}

#[test]
fn mrn_with_a_different_nhs_number_goes_to_review() {
    let mut r = resolver();
    run(&mut r, event(vec![mrn("1", "RTH"), nhs("9434765919")]));
    let (epi, out) = run(&mut r, event(vec![mrn("1", "RTH"), nhs("9999999999")]));
    assert_eq!((epi, review_rule(&out).as_deref()), (None, Some("nhs_number_conflict")));
}

#[test]
fn keys_of_two_patients_go_to_review() {
    let mut r = resolver();
    run(&mut r, event(vec![mrn("1", "RTH")]));
    run(&mut r, named(vec![mrn("2", "RTH")], "OTHERPERSON", "BETA", "19700505"));
    let (_, out) = run(&mut r, event(vec![mrn("1", "RTH"), mrn("2", "RTH")]));
    assert_eq!(review_rule(&out).as_deref(), Some("identifiers_point_to_different_patients"));
}

/// Two patients, then an ADT whose MRG names patient 1 with a given trigger.
fn two_patients_then(trigger: &str) -> (Resolver, String, String, Vec<Out>) {
    let mut r = resolver();
    let a = run(&mut r, event(vec![mrn("1", "RTH")])).0.unwrap();
    let b = run(&mut r, named(vec![mrn("2", "RTH")], "OTHERPERSON", "BETA", "19700505"))
        .0
        .unwrap();
    let mut ev = named(vec![mrn("2", "RTH")], "OTHERPERSON", "BETA", "19700505");
    ev.event_id = format!("merge-{trigger}");
    ev.trigger_event = trigger.into();
    ev.merge = Some(Merge {
        prior_identifiers: vec![mrn("1", "RTH")],
        kind: Merge::kind_of(trigger).into(),
        ..Default::default()
    });
    let out = r.event(ev, 2, &Position::default());
    r.commit();
    (r, a, b, out)
}

fn epi_of_key(r: &Resolver, key: &str) -> String {
    r.index.epi_of(r.index.find_key(key).unwrap())
}

#[test]
fn moves_and_account_or_visit_merges_never_merge_two_patients() {
    for trigger in ["A35", "A41", "A42", "A43", "A44", "A45", "A50", "A51"] {
        let (r, a, b, out) = two_patients_then(trigger);
        assert_eq!(matched_epi(&out), Some(b.clone()), "{trigger}");
        assert_eq!(epi_of_key(&r, "mrn|RTH|1"), a, "{trigger} overlaid two patients");
        assert!(changes(&out).is_empty());
    }
}

#[test]
fn patient_merges_and_identifier_changes_repoint_the_prior_record_and_say_so() {
    for trigger in ["A18", "A30", "A34", "A36", "A39", "A40", "A46", "A47", "A48", "A49"] {
        let (r, a, b, out) = two_patients_then(trigger);
        assert_eq!(matched_epi(&out), Some(b.clone()), "{trigger}");
        assert_eq!(epi_of_key(&r, "mrn|RTH|1"), b, "{trigger}");
        assert_eq!(changes(&out), vec![("merged".to_owned(), a, b)], "{trigger}");
    }
}

#[test]
fn a_merge_of_unknown_meaning_and_a_link_request_are_held_for_review() {
    let (_, _, _, out) = two_patients_then("Z99");
    assert_eq!(review_rule(&out).as_deref(), Some("merge_kind_unknown"));
    let (_, _, _, out) = two_patients_then("A24");
    assert_eq!(review_rule(&out).as_deref(), Some("patient_link_requested"));
}

#[test]
fn an_a37_unlink_separates_two_linked_records_for_good() {
    let mut r = resolver();
    let a = run(&mut r, event(vec![mrn("1", "RTH"), nhs("9434765919")])).0.unwrap();
    let b = run(&mut r, event(vec![mrn("7", "LGI")])).0.unwrap();
    assert_eq!(a, b, "linked on demographics");
    let mut ev = event(vec![mrn("7", "LGI")]);
    ev.event_id = "a37".into();
    ev.trigger_event = "A37".into();
    ev.merge = Some(Merge {
        prior_identifiers: vec![mrn("1", "RTH")],
        kind: Merge::kind_of("A37").into(),
        ..Default::default()
    });
    let out = r.event(ev, 2, &Position::default());
    r.commit();
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].0.as_str(), c[0].1.as_str()), ("unlinked", a.as_str()));
    assert_ne!(epi_of_key(&r, "mrn|LGI|7"), a);
    assert_ne!(run(&mut r, event(vec![mrn("7", "LGI")])).0, Some(a), "stays apart");
}

#[test]
fn no_patient_is_held_unless_the_message_is_about_no_patient() {
    let mut r = resolver();
    let generic = ClinicalEvent {
        kind: "generic".into(),
        ..Default::default()
    };
    let out = r.event(generic, 1, &Position::default());
    assert!(matches!(&out[0], Out::Matched(m) if m.match_result.outcome == "not_applicable"));
    for kind in ["result", "order", "adt", "pharmacy", "immunisation", "schedule", "document"] {
        let ev = ClinicalEvent {
            event_id: kind.into(),
            kind: kind.into(),
            ..Default::default()
        };
        assert_eq!(
            review_rule(&r.event(ev, 1, &Position::default())).as_deref(),
            Some("no_patient"),
            "{kind}"
        );
    }
}

#[test]
fn explicit_nulls_and_blanks_are_never_keys() {
    for v in ["\"\"", "", "  ", "^", "~", "-"] {
        let (keys, ignored) = keys_of(&[mrn(v, "RTH")], "RTH");
        assert!(keys.is_empty(), "{v:?} became a key");
        assert_eq!(ignored, vec!["identifier_value_unusable"]);
    }
    let mut r = resolver();
    let a = run(&mut r, event(vec![mrn("\"\"", "RTH"), mrn("P1001", "PROBEAUTH")])).0.unwrap();
    let b = run(
        &mut r,
        named(
            vec![mrn("\"\"", "RTH"), mrn("P2002", "PROBEAUTH")],
            "OTHERPERSON",
            "BETA",
            "19700505",
        ),
    )
    .0
    .unwrap();
    assert_ne!(a, b, "two patients overlaid through an explicit null");
}

/// A record at another site that scores in the review band: held.
fn held_case() -> (Resolver, String, String) {
    let mut r = resolver();
    let a = run(&mut r, event(vec![mrn("1", "RTH"), nhs("9434765919")])).0.unwrap();
    // same name and birth date, nothing else: a namesake or the same person
    let mut ev = event(vec![mrn("7", "LGI")]);
    bare(&mut ev);
    ev.event_id = "held-1".into();
    let out = r.event(ev, 2, &Position::default());
    r.commit();
    assert_eq!(review_rule(&out).as_deref(), Some(resolve::HELD_REVIEW_BAND), "{out:?}");
    let item = out
        .iter()
        .find_map(|o| match o {
            Out::Review(m) => m.match_result.review_item.clone(),
            _ => None,
        })
        .unwrap();
    (r, a, item)
}

/// Only name and birth date left.
fn bare(ev: &mut ClinicalEvent) {
    let p = ev.patient.as_mut().unwrap();
    p.sex = None;
    p.addresses.clear();
}

fn decision(item: &str, action: &str, target: Option<&str>) -> IdentityDecision {
    IdentityDecision {
        decision_id: format!("d-{action}"),
        action: action.into(),
        item_id: Some(item.into()),
        target_enterprise_id: target.map(str::to_owned),
        reason: "checked the notes".into(),
        actor: "reviewer-1".into(),
        role: "reviewer".into(),
        ..Default::default()
    }
}

#[test]
fn a_link_decision_releases_the_held_events_and_links_later_ones() {
    let (mut r, a, item) = held_case();
    // a second message of the held record is held under the same item
    let mut ev = event(vec![mrn("7", "LGI")]);
    bare(&mut ev);
    ev.event_id = "held-2".into();
    let (epi, out) = run(&mut r, ev);
    assert_eq!((epi, review_rule(&out).as_deref()), (None, Some(resolve::HELD_UNDER_REVIEW)));
    assert_eq!(r.view().read().unwrap()[&item].held_event_ids.len(), 2);
    let (out, outcome) = r.decision(&decision(&item, "link", Some(&a)), 3, &Position::default());
    r.commit();
    assert_eq!(outcome, "applied");
    let released: Vec<&MatchedEvent> = out
        .iter()
        .filter_map(|o| match o {
            Out::Matched(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), 2);
    assert!(
        released
            .iter()
            .all(|m| m.enterprise_id.as_deref() == Some(a.as_str()) && m.match_result.rule == "reviewer_link")
    );
    assert!(r.view().read().unwrap().is_empty(), "the item is closed");
    assert_eq!(
        run(&mut r, event(vec![mrn("7", "LGI")])).0,
        Some(a),
        "the next message follows the decision"
    );
}

#[test]
fn not_the_same_person_is_remembered_and_the_pair_never_proposed_again() {
    let (mut r, a, item) = held_case();
    let (out, outcome) = r.decision(&decision(&item, "not_same", Some(&a)), 3, &Position::default());
    r.commit();
    assert_eq!(outcome, "applied");
    let released = matched_epi(&out).unwrap();
    assert_ne!(released, a);
    let (epi, out) = run(&mut r, event(vec![mrn("7", "LGI")]));
    assert_eq!(epi, Some(released));
    assert!(review_rule(&out).is_none(), "never proposed again");
    // a decision on a closed item is refused and changes nothing
    assert_eq!(
        r.decision(&decision(&item, "link", Some(&a)), 4, &Position::default()).1,
        "item_not_open"
    );
}

#[test]
fn a_link_that_would_join_two_nhs_numbers_is_refused_and_the_item_stays_open() {
    let mut r = resolver();
    let mut a = event(vec![mrn("1", "RTH")]);
    bare(&mut a);
    run(&mut r, a);
    // a record with an NHS number whose only candidate has none: held
    let mut ev = event(vec![mrn("7", "LGI"), nhs("9434765919")]);
    bare(&mut ev);
    let (_, out) = run(&mut r, ev);
    assert_eq!(review_rule(&out).as_deref(), Some(resolve::HELD_REVIEW_BAND));
    let item = r.view().read().unwrap().keys().next().cloned().unwrap();
    let other = run(&mut r, named(vec![mrn("3", "RTH"), nhs("9990000018")], "ELSE", "ONE", "19500101"))
        .0
        .unwrap();
    let (_, outcome) = r.decision(&decision(&item, "link", Some(&other)), 3, &Position::default());
    r.commit();
    assert_eq!(outcome, "nhs_number_conflict");
    assert!(r.view().read().unwrap().contains_key(&item), "the item stays open");
}

#[test]
fn only_state_of_committed_work_is_trusted_at_start_up() {
    let committed: HashMap<(String, i32), i64> = [((names::NORMALISED.to_owned(), 0), 10)].into();
    let at = |key: &str, offset: i64, given: &str| IdentityState {
        key: key.into(),
        record: Some(sluice_model::IdentityRecord {
            key: key.into(),
            names: vec![sluice_model::RecordName {
                given: given.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        input_topic: names::NORMALISED.into(),
        input_partition: 0,
        input_offset: offset,
        ..Default::default()
    };
    let (records, _, untrusted) = latest_trusted([at("a", 3, "OLD"), at("a", 9, "NEW"), at("a", 10, "ABORTED")], &committed);
    assert_eq!(untrusted, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].names[0].given, "NEW");
}

#[test]
fn the_review_api_needs_authentication_and_tls_or_explicit_plaintext() {
    use crate::api::ApiConfig;
    use sluice_runtime::auth::{AuthConfig, Role, StaticToken};
    let off = crate::Config::default();
    assert!(!off.review_api.enabled(), "no address: no api");
    off.validate().expect("an identity stage without the api needs no tokens");
    let on = crate::Config {
        review_api: ApiConfig {
            addr: "127.0.0.1:0".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let e = on.validate().expect_err("no tls, no plaintext").to_string();
    assert!(e.contains("review_api.tls.cert_file"), "{e}");
    let mut plain = on.clone();
    plain.review_api.tls.plaintext = true;
    let e = plain.validate().expect_err("no tokens").to_string();
    assert!(e.contains("auth.tokens"), "{e}");
    plain.auth = AuthConfig {
        tokens: vec![StaticToken {
            actor: "v".into(),
            role: Role::Viewer,
            token: sluice_runtime::config::Secret::new("short"),
        }],
        ..Default::default()
    };
    let e = plain.validate().expect_err("a short token is refused at start-up").to_string();
    assert!(e.contains("auth.tokens[0]") && !e.contains("short\""), "{e}");
}
