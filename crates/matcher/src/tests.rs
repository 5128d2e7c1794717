#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::profile::Name;
use std::collections::BTreeMap;
use std::sync::Arc;

fn ix() -> Index {
    Index::new(Arc::new(Weights::default_weights()))
}

#[derive(Clone)]
struct Msg {
    mrn: Option<&'static str>,
    nhs: Option<u64>,
    family: &'static str,
    given: &'static str,
    dob: u32,
    sex: u8,
    postcode: &'static str,
    line: &'static str,
}

const ANN: Msg = Msg {
    mrn: Some("mrn|RTH|1"),
    nhs: Some(9434765919),
    family: "SMITH",
    given: "ANN",
    dob: 19800302,
    sex: b'F',
    postcode: "LS1 4AB",
    line: "12 HIGH STREET",
};

impl Msg {
    fn keys(&self) -> Vec<Key> {
        let mut k = Vec::new();
        if let Some(n) = self.nhs {
            k.push(Key {
                key: format!("nhs|{n:010}"),
                kind: "nhs_number",
            });
        }
        if let Some(m) = self.mrn {
            k.push(Key {
                key: m.into(),
                kind: "mrn",
            });
        }
        k
    }

    fn profile(&self) -> Profile {
        Profile {
            names: vec![Name {
                family: self.family.into(),
                given: self.given.into(),
                other: false,
            }],
            birth_dates: vec![self.dob],
            sex: self.sex,
            postcodes: if self.postcode.is_empty() {
                vec![]
            } else {
                vec![text::postcode(self.postcode)]
            },
            addresses: if self.line.is_empty() {
                vec![]
            } else {
                vec![text::address_line(self.line)]
            },
            nhs: self.nhs,
        }
    }
}

fn see(ix: &mut Index, m: &Msg) -> Observation {
    let o = ix.observe(&m.keys(), &m.profile()).unwrap();
    ix.commit();
    o
}

#[test]
fn the_same_record_keeps_its_enterprise_id() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    assert_eq!((a.outcome, a.rule), ("new", "new_patient"));
    let b = see(&mut ix, &ANN);
    assert_eq!((b.outcome, b.rule, b.epi.clone()), ("matched", "exact_key", a.epi.clone()));
    assert_eq!(a.epi, sluice_model::ids::uuid_from(&[b"epi", b"nhs|9434765919"]));
}

#[test]
fn another_site_without_the_nhs_number_links_on_demographics() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|LGI|77"),
            nhs: None,
            given: "ANNE",
            ..ANN
        },
    );
    assert_eq!(b.epi, a.epi);
    assert_eq!((b.outcome, b.rule), ("matched", "score"));
    let best = b.best.unwrap();
    assert!(best.score >= ix.weights().link_at());
    assert_eq!(best.levels.evidence(&ix)[0].level, "close", "ANN against ANNE");
}

#[test]
fn an_mrn_only_record_that_later_brings_the_nhs_number_merges_and_says_so() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    // another site, another address, no NHS number: not enough to link
    let weak = Msg {
        mrn: Some("mrn|LGI|77"),
        nhs: None,
        postcode: "M1 1AA",
        line: "1 OTHER ROAD",
        ..ANN
    };
    let b = see(&mut ix, &weak);
    assert_ne!(b.epi, a.epi);
    let c = see(&mut ix, &Msg { nhs: ANN.nhs, ..weak });
    assert_eq!(c.epi, a.epi);
    assert_eq!(c.outcome, "merged");
    assert_eq!(c.changes.len(), 1);
    assert_eq!(
        (c.changes[0].kind, &c.changes[0].from, &c.changes[0].to),
        ("merged", &b.epi, &a.epi)
    );
}

#[test]
fn two_nhs_numbers_never_share_an_enterprise_id_even_through_a_chain() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|RTH|2"),
            nhs: Some(9990000018),
            ..ANN
        },
    );
    assert_ne!(a.epi, b.epi);
    // a third record without an NHS number that matches both perfectly
    let c = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|LGI|5"),
            nhs: None,
            ..ANN
        },
    );
    let epis: std::collections::HashSet<String> = [ix.epi_of(a.node), ix.epi_of(b.node), ix.epi_of(c.node)].into();
    assert_eq!(epis.len(), 2, "c joins one of them, never both");
    assert_ne!(ix.epi_of(a.node), ix.epi_of(b.node));
}

#[test]
fn twins_are_never_linked_automatically() {
    let mut ix = ix();
    let a = see(&mut ix, &Msg { nhs: None, ..ANN });
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|RTH|2"),
            nhs: None,
            given: "OLIVIA",
            ..ANN
        },
    );
    assert_ne!(a.epi, b.epi);
    assert!(b.candidates.is_empty(), "twins are not proposed either");
}

#[test]
fn namesakes_with_different_addresses_are_not_linked() {
    let mut ix = ix();
    let a = see(&mut ix, &Msg { nhs: None, ..ANN });
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|LGI|9"),
            nhs: None,
            postcode: "M1 1AA",
            line: "1 OTHER ROAD",
            ..ANN
        },
    );
    assert_ne!(a.epi, b.epi);
}

#[test]
fn not_the_same_person_is_remembered_and_unmerges() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|LGI|77"),
            nhs: None,
            ..ANN
        },
    );
    assert_eq!(a.epi, b.epi);
    let changes = ix.not_same(b.node, &[a.node]);
    ix.commit();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, "unlinked");
    assert_ne!(ix.epi_of(a.node), ix.epi_of(b.node));
    // the next message of b scores as high as before, and stays apart, never proposed
    let again = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|LGI|77"),
            nhs: None,
            ..ANN
        },
    );
    assert_ne!(again.epi, a.epi);
    assert!(again.candidates.is_empty() && !again.hold);
}

#[test]
fn a_reviewer_link_joins_and_a_link_across_nhs_numbers_is_refused() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|LGI|77"),
            nhs: None,
            postcode: "M1 1AA",
            line: "1 OTHER ROAD",
            ..ANN
        },
    );
    let changes = ix.link(b.node, &a.epi).unwrap();
    ix.commit();
    assert_eq!(ix.epi_of(b.node), a.epi);
    assert_eq!(changes[0].kind, "linked");
    let c = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|RTH|3"),
            nhs: Some(9990000018),
            family: "JONES",
            dob: 19700101,
            ..ANN
        },
    );
    assert_eq!(ix.link(c.node, &a.epi), Err("nhs_number_conflict"));
}

#[test]
fn an_abort_undoes_everything_since_the_commit() {
    let mut ix = ix();
    let a = see(&mut ix, &ANN);
    let before: Vec<_> = (0..ix.len() as u32).map(|n| ix.record(n)).collect();
    let o = ix
        .observe(
            &Msg {
                mrn: Some("mrn|LGI|77"),
                nhs: ANN.nhs,
                given: "ANNIE",
                ..ANN
            }
            .keys(),
            &ANN.profile(),
        )
        .unwrap();
    assert_eq!(o.epi, a.epi);
    ix.abort();
    let after: Vec<_> = (0..ix.len() as u32).map(|n| ix.record(n)).collect();
    assert_eq!(before, after);
    assert!(ix.find_key("mrn|LGI|77").is_none());
}

#[test]
fn conflicting_identifiers_are_refused_without_changing_anything() {
    let mut ix = ix();
    see(&mut ix, &ANN);
    see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|RTH|2"),
            nhs: None,
            family: "JONES",
            dob: 19700101,
            ..ANN
        },
    );
    let both = Msg { nhs: None, ..ANN };
    let mut keys = both.keys();
    keys.push(Key {
        key: "mrn|RTH|2".into(),
        kind: "mrn",
    });
    assert_eq!(
        ix.observe(&keys, &both.profile()).err(),
        Some("identifiers_point_to_different_patients")
    );
    assert_eq!(
        ix.observe(
            &Msg {
                nhs: Some(9990000018),
                ..ANN
            }
            .keys(),
            &ANN.profile()
        )
        .err(),
        Some("nhs_number_conflict")
    );
}

#[test]
fn a_patient_merge_moves_the_prior_record() {
    let mut ix = ix();
    let a = see(&mut ix, &Msg { nhs: None, ..ANN });
    let b = see(
        &mut ix,
        &Msg {
            mrn: Some("mrn|RTH|2"),
            nhs: None,
            family: "JONES",
            dob: 19700101,
            ..ANN
        },
    );
    let changes = ix
        .merge_into(
            b.node,
            &[Key {
                key: "mrn|RTH|1".into(),
                kind: "mrn",
            }],
        )
        .unwrap();
    ix.commit();
    assert_eq!(ix.find_key("mrn|RTH|1"), Some(b.node));
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].from.as_str(), changes[0].kind), (a.epi.as_str(), "merged"));
}

#[test]
fn records_stored_and_loaded_give_the_same_index() {
    let mut ix1 = ix();
    let msgs = population(40, 3);
    for m in &msgs {
        let _ = ix1.observe(&m.keys(), &m.profile());
        ix1.commit();
    }
    let records: Vec<_> = (0..ix1.len() as u32).map(|n| ix1.record(n)).collect();
    let mut ix2 = ix();
    ix2.load(records.clone().into_iter().rev());
    let mut a: Vec<_> = records;
    let mut b: Vec<_> = (0..ix2.len() as u32).map(|n| ix2.record(n)).collect();
    a.sort_by(|x, y| x.key.cmp(&y.key));
    b.sort_by(|x, y| x.key.cmp(&y.key));
    for r in a.iter_mut().chain(b.iter_mut()) {
        r.not_same.sort();
        r.linked.sort();
    }
    assert_eq!(a, b);
}

/// Messages of `people` synthetic people at three sites, several per record.
fn population(people: usize, per: usize) -> Vec<Msg> {
    const FAM: &[&str] = &["SMITH", "JONES", "PATEL", "KHAN", "BROWN"];
    const GIV: &[&str] = &["ANN", "ANNE", "JOHN", "JON", "MARY", "OLIVIA"];
    const PC: &[&str] = &["LS1 4AB", "LS1 9ZZ", "M1 1AA"];
    const LINES: &[&str] = &["12 HIGH STREET", "1 OTHER ROAD", "3 MILL LANE"];
    const MRNS: &[&str] = &[
        "mrn|A|0", "mrn|A|1", "mrn|A|2", "mrn|A|3", "mrn|A|4", "mrn|A|5", "mrn|A|6", "mrn|A|7", "mrn|A|8", "mrn|A|9", "mrn|B|0", "mrn|B|1",
        "mrn|B|2", "mrn|B|3", "mrn|B|4", "mrn|B|5", "mrn|B|6", "mrn|B|7", "mrn|B|8", "mrn|B|9", "mrn|C|0", "mrn|C|1", "mrn|C|2", "mrn|C|3",
        "mrn|C|4", "mrn|C|5", "mrn|C|6", "mrn|C|7", "mrn|C|8", "mrn|C|9",
    ];
    const NHS: &[u64] = &[9434765919, 9990000018, 9990000026, 9990000034, 9990000042];
    let mut out = Vec::new();
    for p in 0..people {
        for r in 0..per {
            let site = (p + r) % 3;
            out.push(Msg {
                mrn: Some(MRNS[(site * 10 + p) % MRNS.len()]),
                nhs: (site == 0).then(|| NHS[p % NHS.len()]),
                family: FAM[p % FAM.len()],
                given: GIV[(p / 2 + r) % GIV.len()],
                dob: 19800101 + (p % 3) as u32,
                sex: if p % 2 == 0 { b'F' } else { b'M' },
                postcode: PC[(p + r) % PC.len()],
                line: LINES[p % LINES.len()],
            });
        }
    }
    out
}

#[test]
fn enterprise_ids_do_not_depend_on_how_partitions_interleave() {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let msgs = population(30, 3);
    // per record (a partition keeps each record's order), the messages in order
    let mut streams: BTreeMap<&str, Vec<&Msg>> = BTreeMap::new();
    for m in &msgs {
        streams.entry(m.mrn.unwrap()).or_default().push(m);
    }
    let mut results: Vec<BTreeMap<String, String>> = Vec::new();
    for seed in 0..12 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut queues: Vec<std::collections::VecDeque<&Msg>> = streams.values().map(|v| v.iter().copied().collect()).collect();
        queues.shuffle(&mut rng);
        let mut ix = ix();
        while queues.iter().any(|q| !q.is_empty()) {
            let live: Vec<usize> = (0..queues.len()).filter(|i| !queues[*i].is_empty()).collect();
            let q = live[rng.random_range(0..live.len())];
            let m = queues[q].pop_front().unwrap();
            let _ = ix.observe(&m.keys(), &m.profile());
            ix.commit();
        }
        results.push((0..ix.len() as u32).map(|n| (ix.key_of(n).to_owned(), ix.epi_of(n))).collect());
    }
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    let distinct: std::collections::HashSet<&String> = results[0].values().collect();
    assert!(
        distinct.len() > 3 && distinct.len() < results[0].len(),
        "a test that links some records and not all"
    );
}
