//! Enterprise ids from records: constrained clustering, recomputed around a changed record.
//!
//! The records reachable from the changed one through *strong* edges (a shared valid NHS
//! number, a reviewer's link, or a score at or above the link threshold), together with every
//! record of their current enterprise ids, are clustered again from scratch:
//! edges are taken reviewer links first, then NHS numbers, then by score (ties by the records'
//! keys), and two clusters are joined only if the hard rules allow it for the *whole* of both:
//! - never two different valid NHS numbers in one enterprise id (so no chain of records without
//!   one can bridge two numbers);
//! - never two records a reviewer (or an A37 unlink) said are different people;
//! - a score never joins twins (same surname, birth date and address, different given names).
//!
//! The result depends only on the records and decisions, not on the order they arrived in, and
//! so do the ids: a cluster with an NHS number is `epi(nhs|<number>)`, any other
//! `epi(<smallest record key>)`.

use crate::compare::Levels;
use crate::ids;
use crate::index::{Index, NONE, NodeId};
use crate::profile::{Key, Profile};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// At most this many records are clustered again at once (a bound on per-message work).
pub const MAX_COMPONENT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EdgeKind {
    Reviewer = 0,
    NhsNumber = 1,
    Score = 2,
}

impl EdgeKind {
    pub fn rule(self) -> &'static str {
        match self {
            EdgeKind::Reviewer => "reviewer_link",
            EdgeKind::NhsNumber => "nhs_number",
            EdgeKind::Score => "score",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub a: NodeId,
    pub b: NodeId,
    pub kind: EdgeKind,
    pub score: f32,
    pub levels: Levels,
}

/// Why enterprise ids are being recomputed: evidence in a message, or a person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Evidence,
    Decision,
}

/// An enterprise id that changed. `kind`: `merged` (every record of `from` now belongs to
/// `to`, on evidence), `linked` (the same, by a person's decision), `unmerged` (some records of
/// `from`, which goes on, now belong to `to`, on evidence), `unlinked` (the same, by a decision
/// or an A37 unlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: &'static str,
    pub from: String,
    pub to: String,
    pub records: Vec<String>,
}

/// A record outside the subject's enterprise id that scored in the review band.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: NodeId,
    pub epi: String,
    pub key: String,
    pub score: f32,
    pub levels: Levels,
}

/// What one message did to the index.
#[derive(Debug, Clone)]
pub struct Observation {
    pub node: NodeId,
    pub record_key: String,
    pub epi: String,
    /// `new`, `matched` or `merged`
    pub outcome: &'static str,
    /// `exact_key`, `nhs_number`, `score`, `reviewer_link` or `new_patient`
    pub rule: &'static str,
    /// The strongest edge that holds the record in its enterprise id, or the best candidate.
    pub best: Option<Edge>,
    pub candidates: Vec<Candidate>,
    /// The message must be held for review: the record is new to its enterprise id and
    /// scores in the review band against another (or it is already held and still does).
    pub hold: bool,
    /// The record was held (subject of an open review item) before this message.
    pub was_held: bool,
    pub changes: Vec<Change>,
}

pub(crate) struct Reclustered {
    pub changes: Vec<Change>,
    /// Accepted edges (both ends in one cluster afterwards).
    pub accepted: Vec<Edge>,
    /// Edges of the first seed scoring at least the review threshold.
    pub scored: Vec<Edge>,
}

impl Index {
    fn pair_allowed(&self, xs: &[NodeId], ys: &[NodeId], kind: EdgeKind) -> bool {
        for &x in xs {
            for &y in ys {
                if self.node(x).not_same().contains(&y) || self.node(y).not_same().contains(&x) {
                    return false;
                }
                if kind == EdgeKind::Score && self.compare(x, y).twins() {
                    return false;
                }
            }
        }
        true
    }

    pub(crate) fn recluster(&mut self, seeds: &[NodeId], cause: Cause) -> Reclustered {
        let link_at = self.weights.link_at();
        let review_at = self.weights.review_at();
        let first = seeds.first().map(|s| self.follow(*s));
        let mut set: Vec<NodeId> = Vec::new();
        let mut pos: HashMap<NodeId, usize> = HashMap::new();
        let mut queue: VecDeque<NodeId> = seeds.iter().map(|s| self.follow(*s)).collect();
        let mut edges: Vec<Edge> = Vec::new();
        let mut pairs: HashSet<(NodeId, NodeId)> = HashSet::new();
        let mut scored: Vec<Edge> = Vec::new();
        while let Some(n) = queue.pop_front() {
            if pos.contains_key(&n) || !self.node(n).live() {
                continue;
            }
            if set.len() >= MAX_COMPONENT {
                break;
            }
            pos.insert(n, set.len());
            set.push(n);
            let epi = self.node(n).epi;
            queue.extend(self.members(&epi));
            let mut strong: Vec<(NodeId, EdgeKind)> = self
                .with_nhs(self.node(n).nhs)
                .into_iter()
                .map(|m| (m, EdgeKind::NhsNumber))
                .collect();
            strong.extend(self.node(n).linked().iter().map(|m| (self.follow(*m), EdgeKind::Reviewer)));
            for (m, kind) in strong {
                if m != n && self.node(m).live() && pairs.insert((n.min(m), n.max(m))) {
                    let levels = self.compare(n, m);
                    let score = levels.total(self);
                    edges.push(Edge {
                        a: n,
                        b: m,
                        kind,
                        score,
                        levels,
                    });
                    queue.push_back(m);
                }
            }
            for c in self.candidates(n) {
                let levels = self.compare(n, c);
                let score = levels.total(self);
                if Some(n) == first && score >= review_at {
                    scored.push(Edge {
                        a: n,
                        b: c,
                        kind: EdgeKind::Score,
                        score,
                        levels,
                    });
                }
                if score >= link_at && !levels.nhs_conflict() && pairs.insert((n.min(c), n.max(c))) {
                    edges.push(Edge {
                        a: n,
                        b: c,
                        kind: EdgeKind::Score,
                        score,
                        levels,
                    });
                    queue.push_back(c);
                }
            }
        }
        edges.retain(|e| pos.contains_key(&e.a) && pos.contains_key(&e.b));
        let key = |ix: &Index, e: &Edge| {
            let (ka, kb) = (&ix.node(e.a).key, &ix.node(e.b).key);
            if ka <= kb {
                (ka.clone(), kb.clone())
            } else {
                (kb.clone(), ka.clone())
            }
        };
        edges.sort_by(|x, y| {
            x.kind
                .cmp(&y.kind)
                .then(y.score.total_cmp(&x.score))
                .then_with(|| key(self, x).cmp(&key(self, y)))
        });

        // union-find over positions in `set`, each root knowing its members and NHS number
        let mut parent: Vec<usize> = (0..set.len()).collect();
        let mut members: Vec<Vec<NodeId>> = set.iter().map(|n| vec![*n]).collect();
        let mut nhs: Vec<u64> = set.iter().map(|n| self.node(*n).nhs).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let mut accepted = Vec::new();
        for e in edges {
            let (Some(&pa), Some(&pb)) = (pos.get(&e.a), pos.get(&e.b)) else {
                continue;
            };
            let (ra, rb) = (root(&mut parent, pa), root(&mut parent, pb));
            if ra == rb {
                accepted.push(e);
                continue;
            }
            if nhs[ra] != 0 && nhs[rb] != 0 && nhs[ra] != nhs[rb] {
                continue;
            }
            if !self.pair_allowed(&members[ra], &members[rb], e.kind) {
                continue;
            }
            let (big, small) = if members[ra].len() >= members[rb].len() {
                (ra, rb)
            } else {
                (rb, ra)
            };
            parent[small] = big;
            let moved = std::mem::take(&mut members[small]);
            members[big].extend(moved);
            nhs[big] = nhs[big].max(nhs[small]);
            accepted.push(e);
        }

        // ids: the NHS number's for the cluster holding the smallest-keyed record with it
        let mut nhs_owner: BTreeMap<u64, (Box<str>, usize)> = BTreeMap::new();
        for (i, id) in set.iter().enumerate() {
            let n = self.node(*id);
            if n.nhs != 0 {
                let r = root(&mut parent, i);
                let e = nhs_owner.entry(n.nhs).or_insert_with(|| (n.key.clone(), r));
                if n.key < e.0 {
                    *e = (n.key.clone(), r);
                }
            }
        }
        let mut group_epi: HashMap<usize, [u8; 16]> = HashMap::new();
        for i in 0..set.len() {
            let r = root(&mut parent, i);
            if group_epi.contains_key(&r) {
                continue;
            }
            let owned_nhs = nhs_owner.iter().find(|(_, (_, owner))| *owner == r).map(|(n, _)| *n);
            let anchor = match owned_nhs {
                Some(n) => format!("nhs|{n:010}"),
                None => members[r]
                    .iter()
                    .map(|m| self.node(*m).key.clone())
                    .min()
                    .map(String::from)
                    .unwrap_or_default(),
            };
            group_epi.insert(r, ids::epi(&anchor));
        }
        let old: Vec<[u8; 16]> = set.iter().map(|n| self.node(*n).epi).collect();
        let new: Vec<[u8; 16]> = (0..set.len()).map(|i| group_epi[&root(&mut parent, i)]).collect();
        let before: HashSet<[u8; 16]> = old.iter().copied().collect();
        let after: HashSet<[u8; 16]> = new.iter().copied().collect();
        let mut moves: BTreeMap<([u8; 16], [u8; 16]), Vec<String>> = BTreeMap::new();
        for i in 0..set.len() {
            if old[i] != [0; 16] && old[i] != new[i] {
                moves.entry((old[i], new[i])).or_default().push(self.node(set[i]).key.to_string());
            }
        }
        let mut changes = Vec::new();
        for ((from, to), mut records) in moves {
            records.sort();
            let kind = match (after.contains(&from), cause) {
                (false, Cause::Evidence) => "merged",
                (false, Cause::Decision) => "linked",
                (true, Cause::Evidence) => "unmerged",
                (true, Cause::Decision) => "unlinked",
            };
            let _ = before.contains(&to);
            changes.push(Change {
                kind,
                from: ids::format(&from),
                to: ids::format(&to),
                records,
            });
        }
        for i in 0..set.len() {
            self.set_epi(set[i], new[i]);
        }
        Reclustered { changes, accepted, scored }
    }

    /// The NHS numbers of an enterprise id's records.
    fn cluster_nhs(&self, epi: &[u8; 16]) -> Vec<u64> {
        let mut v: Vec<u64> = self.members(epi).iter().map(|m| self.node(*m).nhs).filter(|n| *n != 0).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Adds what one message says about its patient and recomputes its enterprise id.
    /// `Err` is a review rule: the message names something only a person can sort out, and
    /// nothing was changed.
    pub fn observe(&mut self, keys: &[Key], profile: &Profile) -> Result<Observation, &'static str> {
        let local: Vec<&Key> = keys.iter().filter(|k| !k.is_nhs()).collect();
        let nhs: Vec<&Key> = keys.iter().filter(|k| k.is_nhs()).collect();
        if nhs.len() > 1 {
            return Err("several_nhs_numbers");
        }
        let mut found: Vec<NodeId> = local.iter().filter_map(|k| self.find_key(&k.key)).collect();
        found.sort_unstable();
        found.dedup();
        if found.len() > 1 {
            return Err("identifiers_point_to_different_patients");
        }
        let existing = match (found.first(), local.is_empty(), nhs.first()) {
            (Some(n), _, _) => Some(*n),
            (None, true, Some(k)) => self.find_key(&k.key),
            _ => None,
        };
        let Some(first_key) = local.first().or(nhs.first()) else {
            return Err("no_usable_identifier");
        };
        // the NHS number is the key's, whatever the profile was built from
        let incoming = nhs.first().and_then(|k| crate::profile::nhs_of(&k.key));
        if let Some(n) = existing
            && let Some(p) = incoming
            && self.node(n).nhs != 0
            && self.node(n).nhs != p
        {
            return Err("nhs_number_conflict");
        }
        let profile = &Profile {
            nhs: incoming,
            ..profile.clone()
        };
        let id = match existing {
            Some(n) => n,
            None => self.push_node(&first_key.key),
        };
        let old_epi = self.node(id).epi;
        self.absorb(id, keys, profile);
        let r = self.recluster(&[id], Cause::Evidence);
        let epi = self.node(id).epi;
        let group = self.members(&epi);
        let best = r
            .accepted
            .iter()
            .filter(|e| e.a == id || e.b == id)
            .min_by(|x, y| x.kind.cmp(&y.kind).then(y.score.total_cmp(&x.score)))
            .cloned();
        let my_nhs = self.cluster_nhs(&epi);
        let mut by_epi: BTreeMap<[u8; 16], Candidate> = BTreeMap::new();
        for e in &r.scored {
            let c = if e.a == id { e.b } else { e.a };
            let cn = self.node(c);
            if cn.epi == epi || cn.held() || e.levels.twins() || e.levels.nhs_conflict() {
                continue;
            }
            if self.node(id).not_same().contains(&c) || cn.not_same().contains(&id) {
                continue;
            }
            let theirs = self.cluster_nhs(&cn.epi);
            if !my_nhs.is_empty() && !theirs.is_empty() && my_nhs != theirs {
                continue;
            }
            let cand = Candidate {
                node: c,
                epi: ids::format(&cn.epi),
                key: cn.key.to_string(),
                score: e.score,
                levels: e.levels,
            };
            match by_epi.get(&cn.epi) {
                Some(b) if b.score >= cand.score => {}
                _ => {
                    by_epi.insert(cn.epi, cand);
                }
            }
        }
        let mut candidates: Vec<Candidate> = by_epi.into_values().collect();
        candidates.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| x.key.cmp(&y.key)));
        // held while the question stands: alone, with a candidate in the review band; a
        // record already held whose new evidence answered the question is released
        let was_held = self.node(id).held();
        let hold = group.len() == 1 && !candidates.is_empty();
        let merged = r.changes.iter().any(|c| c.kind == "merged");
        let (outcome, rule) = match (&best, existing.is_some(), merged) {
            (_, _, true) => ("merged", best.as_ref().map(|b| b.kind.rule()).unwrap_or("exact_key")),
            (Some(b), false, _) => ("matched", b.kind.rule()),
            (Some(b), true, _) if old_epi != epi => ("matched", b.kind.rule()),
            (_, true, _) => ("matched", "exact_key"),
            (None, false, _) => ("new", "new_patient"),
        };
        let best = best.or_else(|| {
            candidates.first().map(|c| Edge {
                a: id,
                b: c.node,
                kind: EdgeKind::Score,
                score: c.score,
                levels: c.levels,
            })
        });
        Ok(Observation {
            node: id,
            record_key: self.node(id).key.to_string(),
            epi: ids::format(&epi),
            outcome,
            rule,
            best,
            candidates,
            hold,
            was_held,
            changes: r.changes,
        })
    }

    /// A patient merge (MRG of A40 and the like): the prior record's keys and values move to
    /// the surviving record, which is clustered again. `Err` (nothing changed) when the two
    /// carry different NHS numbers.
    pub fn merge_into(&mut self, survivor: NodeId, prior: &[Key]) -> Result<Vec<Change>, &'static str> {
        let mut priors: Vec<NodeId> = prior
            .iter()
            .filter_map(|k| self.find_key(&k.key))
            .filter(|p| *p != survivor)
            .collect();
        priors.sort_unstable();
        priors.dedup();
        let prior_nhs = prior.iter().find_map(|k| crate::profile::nhs_of(&k.key));
        let s_nhs = self.node(survivor).nhs;
        for p in &priors {
            let pn = self.node(*p).nhs;
            if pn != 0 && s_nhs != 0 && pn != s_nhs {
                return Err("merge_nhs_number_conflict");
            }
        }
        if let Some(n) = prior_nhs
            && s_nhs != 0
            && n != s_nhs
        {
            return Err("merge_nhs_number_conflict");
        }
        let mut seeds = vec![survivor];
        let mut retired: Vec<([u8; 16], String)> = Vec::new();
        for p in priors {
            let old = self.node(p).clone();
            retired.push((old.epi, old.key.to_string()));
            seeds.extend(self.members(&old.epi));
            let keys: Vec<Key> = old
                .keys()
                .map(|k| Key {
                    key: k.to_owned(),
                    kind: "mrn",
                })
                .collect();
            let profile = self.profile_of(p);
            self.absorb(survivor, &keys, &profile);
            for other in old.not_same().to_vec() {
                self.add_not_same(survivor, other);
            }
            for other in old.linked().to_vec() {
                self.add_linked(survivor, other);
            }
            if old.epi != [0; 16] {
                self.set_epi(p, [0; 16]);
            }
            let n = self.node_mut(p);
            n.flags |= crate::index::RETIRED;
            n.more_mut().merged_into = survivor;
        }
        // keys of a prior record never seen: later messages with them find the survivor
        let new_keys: Vec<Key> = prior
            .iter()
            .filter(|k| !k.is_nhs() && self.find_key(&k.key).is_none())
            .cloned()
            .collect();
        self.absorb(survivor, &new_keys, &Profile::default());
        seeds.retain(|s| self.node(*s).live());
        let mut changes = self.recluster(&seeds, Cause::Evidence).changes;
        let to = self.node(survivor).epi;
        for (from, key) in retired {
            if from == [0; 16] || from == to {
                continue;
            }
            let kind = if self.members(&from).is_empty() { "merged" } else { "unmerged" };
            match changes
                .iter_mut()
                .find(|c| c.kind == kind && c.from == ids::format(&from) && c.to == ids::format(&to))
            {
                Some(c) => c.records.push(key),
                None => changes.push(Change {
                    kind,
                    from: ids::format(&from),
                    to: ids::format(&to),
                    records: vec![key],
                }),
            }
        }
        Ok(changes)
    }

    pub(crate) fn add_not_same(&mut self, a: NodeId, b: NodeId) {
        if a == b {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            if !self.node(x).not_same().contains(&y) {
                let m = self.node_mut(x).more_mut();
                m.not_same.push(y);
                m.linked.retain(|l| *l != y);
            }
        }
    }

    pub(crate) fn add_linked(&mut self, a: NodeId, b: NodeId) {
        if a == b {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            if !self.node(x).linked().contains(&y) {
                let m = self.node_mut(x).more_mut();
                m.linked.push(y);
                m.not_same.retain(|l| *l != y);
            }
        }
    }

    /// A person's decision that a record is the patient of enterprise id `target`. Refused
    /// (nothing changed) when it would put two different NHS numbers in one enterprise id.
    pub fn link(&mut self, subject: NodeId, target: &str) -> Result<Vec<Change>, &'static str> {
        let targets = self.records_of(target);
        let Some(&first) = targets.first() else {
            return Err("target_not_found");
        };
        let epi = self.node(subject).epi;
        if self.node(first).epi == epi {
            return Ok(Vec::new());
        }
        let mut all: Vec<u64> = self.cluster_nhs(&epi);
        if all.is_empty() && self.node(subject).nhs != 0 {
            all.push(self.node(subject).nhs);
        }
        all.extend(self.cluster_nhs(&self.node(first).epi));
        all.sort_unstable();
        all.dedup();
        if all.len() > 1 {
            return Err("nhs_number_conflict");
        }
        let best = targets
            .iter()
            .copied()
            .max_by(|a, b| {
                self.compare(subject, *a)
                    .total(self)
                    .total_cmp(&self.compare(subject, *b).total(self))
            })
            .unwrap_or(first);
        let mine = self.members(&epi);
        for m in mine.iter().chain(std::iter::once(&subject)) {
            for t in &targets {
                let (m, t) = (*m, *t);
                if self.node(m).not_same().contains(&t) {
                    for (x, y) in [(m, t), (t, m)] {
                        self.node_mut(x).more_mut().not_same.retain(|l| *l != y);
                    }
                }
            }
        }
        self.add_linked(subject, best);
        let r = self.recluster(&[subject, best], Cause::Decision);
        if self.node(subject).epi != self.node(best).epi {
            return Err("link_refused_by_hard_rule");
        }
        Ok(r.changes)
    }

    /// A person's decision (or an A37 unlink) that a record is not the patient of the records
    /// in `others`; remembered, so the pair is never proposed or linked again.
    pub fn not_same(&mut self, subject: NodeId, others: &[NodeId]) -> Vec<Change> {
        for o in others {
            self.add_not_same(subject, *o);
        }
        let mut seeds = vec![subject];
        seeds.extend(others);
        self.recluster(&seeds, Cause::Decision).changes
    }

    /// What a record knows, as a profile (for merging it into another).
    pub(crate) fn profile_of(&self, id: NodeId) -> Profile {
        let n = self.node(id);
        Profile {
            names: n
                .names()
                .map(|(f, g, other)| crate::profile::Name {
                    family: self.names.get(f).to_owned(),
                    given: self.names.get(g).to_owned(),
                    other,
                })
                .collect(),
            birth_dates: n.dobs().collect(),
            sex: n.sex,
            postcodes: n.postcodes().collect(),
            addresses: n.addrs().map(|a| self.addr_text(a).to_owned()).collect(),
            nhs: (n.nhs != 0).then_some(n.nhs),
        }
    }

    /// Whether the record is the live one (not merged into another).
    pub fn is_live(&self, id: NodeId) -> bool {
        self.node(id).live() && self.node(id).merged_into() == NONE
    }
}
