//! The identity decisions of one input, without Kafka: a canonical event or a reviewer's
//! decision in, the records to produce out ([`Out`]). The stage ([`crate::Stage`]) encodes them
//! and commits them in one transaction with the input's offset; [`Resolver::commit`] and
//! [`Resolver::abort`] follow that transaction. The in-process population benchmark drives the
//! same code.

use sluice_matcher::{Change, Edge, Index, Key, Observation, Profile, keys_of};
use sluice_model::ids::uuid_from;
use sluice_model::{
    AppliedDecision, ClinicalEvent, Comparison, IdentityChange, IdentityDecision, IdentityLink, IdentityState, MatchResult, MatchedEvent,
    ReviewCandidate, ReviewItem,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// One record to produce.
#[derive(Debug, Clone)]
pub enum Out {
    /// To `clinical.matched.v1`, keyed by its enterprise id (none: by the source key).
    Matched(MatchedEvent),
    /// To `identity.review.v1`: held.
    Review(MatchedEvent),
    /// To `identity.records.v1`.
    State(IdentityState),
    /// To `identity.changes.v1`.
    Change(IdentityChange),
    /// To `identity.links.v1`.
    Link(IdentityLink),
}

/// How held events are kept inside review items (Avro in the service, anything in tests).
pub trait Codec {
    fn encode(&self, ev: &MatchedEvent) -> Option<Vec<u8>>;
    fn decode(&self, bytes: &[u8]) -> Option<MatchedEvent>;
}

/// Where an input was read: written into the state records, so that at start-up only records
/// of committed work are trusted.
#[derive(Debug, Clone, Default)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The open review items, as the review API shows them (updated when a transaction commits).
pub type ReviewView = Arc<RwLock<BTreeMap<String, ReviewItem>>>;

/// See the module documentation.
pub struct Resolver {
    pub index: Index,
    items: HashMap<String, ReviewItem>,
    pending: BTreeMap<String, ReviewItem>,
    view: ReviewView,
    codec: Box<dyn Codec + Send>,
}

/// Why an event was held (bounded codes, `match.rule`).
pub const HELD_REVIEW_BAND: &str = "review_band";
pub const HELD_UNDER_REVIEW: &str = "record_under_review";
/// A held record's later message answered the question (an NHS number linked it, or ruled the
/// candidates out): its held events are released without a person.
pub const RESOLVED_BY_EVIDENCE: &str = "resolved_by_evidence";

fn comparisons(ix: &Index, e: &Edge) -> Vec<Comparison> {
    e.levels
        .evidence(ix)
        .into_iter()
        .map(|f| Comparison {
            field: f.field.into(),
            level: f.level.into(),
            weight: f64::from(f.weight),
        })
        .collect()
}

impl Resolver {
    pub fn new(index: Index, codec: Box<dyn Codec + Send>) -> Resolver {
        Resolver {
            index,
            items: HashMap::new(),
            pending: BTreeMap::new(),
            view: ReviewView::default(),
            codec,
        }
    }

    /// The open review items (shared with the review API).
    pub fn view(&self) -> ReviewView {
        self.view.clone()
    }

    /// Open review items read back at start-up.
    pub fn load_items(&mut self, items: impl IntoIterator<Item = ReviewItem>) {
        for i in items.into_iter().filter(|i| i.status == "open") {
            self.items.insert(i.item_id.clone(), i);
        }
        self.publish_view();
    }

    fn publish_view(&self) {
        let mut v = self.view.write().unwrap_or_else(|e| e.into_inner());
        *v = self.items.iter().map(|(k, i)| (k.clone(), i.clone())).collect();
        crate::metrics::review_queue(self.items.values().map(|i| i.opened_at));
    }

    pub fn commit(&mut self) {
        self.index.commit();
        if !self.pending.is_empty() {
            for (id, item) in std::mem::take(&mut self.pending) {
                if item.status == "open" {
                    self.items.insert(id, item);
                } else {
                    self.items.remove(&id);
                }
            }
            self.publish_view();
        }
    }

    pub fn abort(&mut self) {
        self.index.abort();
        self.pending.clear();
    }

    fn item(&self, id: &str) -> Option<&ReviewItem> {
        self.pending.get(id).or_else(|| self.items.get(id))
    }

    /// The open item whose subject is this record.
    fn open_item_of(&self, record_key: &str) -> Option<ReviewItem> {
        self.pending
            .values()
            .chain(self.items.values())
            .find(|i| i.status == "open" && i.record_key.as_deref() == Some(record_key))
            .cloned()
    }

    fn base_result(&self, rule: &str, ignored: &[String]) -> MatchResult {
        MatchResult {
            outcome: "review".into(),
            rule: rule.into(),
            ignored: ignored.to_vec(),
            weights_version: self.index.weights().file.version.clone(),
            ..Default::default()
        }
    }

    /// Holds `ev` under a review item (opening one when `record` has none open).
    fn hold(&mut self, ev: MatchedEvent, record: Option<&str>, now: i64, pos: &Position, out: &mut Vec<Out>) {
        let mut item = record.and_then(|r| self.open_item_of(r)).unwrap_or_else(|| ReviewItem {
            item_id: uuid_from(&[b"review", ev.event.event_id.as_bytes()]),
            status: "open".into(),
            rule: ev.match_result.rule.clone(),
            record_key: record.map(str::to_owned),
            enterprise_id: ev.enterprise_id.clone(),
            subject: record.and_then(|r| self.index.find_key(r)).map(|n| self.index.summary(n)),
            candidates: ev.match_result.candidates.clone(),
            opened_at: now,
            ..Default::default()
        });
        let mut ev = ev;
        ev.match_result.review_item = Some(item.item_id.clone());
        if let Some(bytes) = self.codec.encode(&ev)
            && !item.held_event_ids.contains(&ev.event.event_id)
        {
            item.held.push(bytes);
            item.held_event_ids.push(ev.event.event_id.clone());
        }
        out.push(Out::Review(ev));
        self.save_item(item, now, pos, out);
    }

    fn save_item(&mut self, item: ReviewItem, now: i64, pos: &Position, out: &mut Vec<Out>) {
        out.push(Out::State(IdentityState {
            key: format!("item|{}", item.item_id),
            record: None,
            item: Some(item.clone()),
            input_topic: pos.topic.clone(),
            input_partition: pos.partition,
            input_offset: pos.offset,
            updated_at: now,
        }));
        self.pending.insert(item.item_id.clone(), item);
    }

    /// State records, links and change events for everything the index changed.
    fn flush(
        &mut self,
        changes: &[Change],
        rule: &str,
        source: (Option<&str>, Option<&str>),
        now: i64,
        pos: &Position,
        out: &mut Vec<Out>,
    ) {
        for c in changes {
            out.push(Out::Change(IdentityChange {
                change_id: uuid_from(&[
                    b"change",
                    c.from.as_bytes(),
                    c.to.as_bytes(),
                    source.0.or(source.1).unwrap_or("").as_bytes(),
                ]),
                kind: c.kind.into(),
                from_enterprise_id: c.from.clone(),
                to_enterprise_id: c.to.clone(),
                records: c.records.clone(),
                rule: rule.into(),
                source_event_id: source.0.map(str::to_owned),
                decision_id: source.1.map(str::to_owned),
                at: now,
            }));
        }
        for n in self.index.take_dirty() {
            let record = self.index.record(n);
            for key in std::iter::once(&record.key).chain(&record.keys) {
                if !record.enterprise_id.is_empty() {
                    out.push(Out::Link(IdentityLink {
                        key: key.clone(),
                        enterprise_id: record.enterprise_id.clone(),
                        status: if record.merged_into.is_some() { "merged" } else { "active" }.into(),
                        source_event_id: source.0.or(source.1).unwrap_or("").to_owned(),
                        updated_at: now,
                    }));
                }
            }
            out.push(Out::State(IdentityState {
                key: format!("record|{}", record.key),
                record: Some(record),
                item: None,
                input_topic: pos.topic.clone(),
                input_partition: pos.partition,
                input_offset: pos.offset,
                updated_at: now,
            }));
        }
    }

    /// Releases an item's held events to `epi` and closes it.
    #[allow(clippy::too_many_arguments)]
    fn release(
        &mut self,
        mut item: ReviewItem,
        epi: &str,
        rule: &str,
        decision: Option<&str>,
        outcome: &str,
        now: i64,
        pos: &Position,
        out: &mut Vec<Out>,
    ) {
        for bytes in std::mem::take(&mut item.held) {
            if let Some(mut m) = self.codec.decode(&bytes) {
                m.enterprise_id = Some(epi.to_owned());
                m.match_result.outcome = outcome.into();
                m.match_result.rule = rule.into();
                m.match_result.decision_id = decision.map(str::to_owned);
                m.matched_at = now;
                out.push(Out::Matched(m));
            }
        }
        item.status = "closed".into();
        item.closed_at = Some(now);
        self.save_item(item, now, pos, out);
    }

    fn candidates(&self, o: &Observation) -> Vec<ReviewCandidate> {
        o.candidates
            .iter()
            .map(|c| ReviewCandidate {
                enterprise_id: c.epi.clone(),
                record_key: c.key.clone(),
                score: f64::from(c.score),
                comparisons: comparisons(
                    &self.index,
                    &Edge {
                        a: o.node,
                        b: c.node,
                        kind: sluice_matcher::EdgeKind::Score,
                        score: c.score,
                        levels: c.levels,
                    },
                ),
                person: Some(self.index.summary(c.node)),
            })
            .collect()
    }

    /// One canonical event.
    pub fn event(&mut self, ev: ClinicalEvent, now: i64, pos: &Position) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(patient) = &ev.patient else {
            // clinical content about a patient nobody can name is held, never routed as if it
            // needed no patient
            let rule = if ev.kind == "generic" { None } else { Some("no_patient") };
            let mut m = MatchedEvent {
                match_result: self.base_result(rule.unwrap_or("no_patient"), &[]),
                event: ev,
                enterprise_id: None,
                matched_at: now,
            };
            if rule.is_none() {
                m.match_result.outcome = "not_applicable".into();
                out.push(Out::Matched(m));
            } else {
                self.hold(m, None, now, pos, &mut out);
            }
            return out;
        };
        let facility = ev.source.sending_facility.clone();
        let (keys, ignored) = keys_of(&patient.identifiers, &facility);
        let ignored: Vec<String> = ignored.into_iter().map(str::to_owned).collect();
        let profile = Profile::of(patient, &keys);
        let held = |this: &mut Resolver, ev: ClinicalEvent, rule: &str, record: Option<&str>, out: &mut Vec<Out>| {
            let m = MatchedEvent {
                match_result: this.base_result(rule, &ignored),
                event: ev,
                enterprise_id: None,
                matched_at: now,
            };
            this.hold(m, record, now, pos, out);
        };
        if keys.is_empty() {
            held(self, ev, "no_usable_identifier", None, &mut out);
            return out;
        }
        // a move (A43 A44 A45 ...) names another patient in MRG: never link the two; a merge of
        // accounts or visits leaves identity alone; an MRG whose meaning is not known is held
        let merge_kind = ev.merge.as_ref().map(|m| m.kind.as_str());
        let prior: Vec<Key> = ev
            .merge
            .as_ref()
            .map(|m| keys_of(&m.prior_identifiers, &facility).0)
            .unwrap_or_default();
        match merge_kind {
            None | Some("patient_merge" | "identifier_change" | "patient_unlink") => {}
            Some("account_merge" | "visit_merge" | "patient_move" | "account_move" | "visit_move") => {}
            // linking two records as one person is a person's decision
            Some("patient_link") => {
                held(self, ev, "patient_link_requested", None, &mut out);
                return out;
            }
            Some(_) => {
                held(self, ev, "merge_kind_unknown", None, &mut out);
                return out;
            }
        }
        let sp = self.index.savepoint();
        let o = match self.index.observe(&keys, &profile) {
            Ok(o) => o,
            Err(rule) => {
                let record = keys.iter().find(|k| !k.is_nhs()).map(|k| k.key.clone());
                held(self, ev, rule, record.as_deref(), &mut out);
                return out;
            }
        };
        let mut changes = o.changes.clone();
        let mut rule = o.rule;
        let mut outcome = o.outcome;
        match merge_kind {
            Some("patient_merge" | "identifier_change") if !prior.is_empty() => match self.index.merge_into(o.node, &prior) {
                Ok(c) => {
                    if !c.is_empty() {
                        outcome = "merged";
                        rule = "patient_merge";
                    }
                    changes.extend(c);
                }
                Err(r) => {
                    self.index.rollback(sp);
                    held(self, ev, r, Some(&o.record_key), &mut out);
                    return out;
                }
            },
            Some("patient_unlink") => {
                let others: Vec<_> = prior
                    .iter()
                    .filter_map(|k| self.index.find_key(&k.key))
                    .filter(|n| *n != o.node)
                    .collect();
                if !others.is_empty() {
                    changes.extend(self.index.not_same(o.node, &others));
                    rule = "a37_unlink";
                }
            }
            _ => {}
        }
        let epi = self.index.epi_of(o.node);
        let best = o.best.as_ref();
        let mut result = MatchResult {
            outcome: outcome.into(),
            rule: rule.into(),
            evidence: best.map(|b| vec![b.kind.rule().to_owned()]).unwrap_or_default(),
            ignored: ignored.clone(),
            score: best.map(|b| f64::from(b.score)),
            comparisons: best.map(|b| comparisons(&self.index, b)).unwrap_or_default(),
            record_key: Some(o.record_key.clone()),
            weights_version: self.index.weights().file.version.clone(),
            ..Default::default()
        };
        let event_id = ev.event_id.clone();
        let change_rule = if rule == "a37_unlink" || rule == "patient_merge" {
            rule
        } else {
            best.map(|b| b.kind.rule()).unwrap_or("score")
        };
        if o.was_held && !o.hold {
            // new evidence answered the item's question: its held events go first, in order
            if let Some(item) = self.open_item_of(&o.record_key) {
                self.release(item, &epi, RESOLVED_BY_EVIDENCE, None, "matched", now, pos, &mut out);
            }
            self.index.set_held(o.node, false);
        }
        if o.hold {
            result.outcome = "review".into();
            result.rule = if o.was_held { HELD_UNDER_REVIEW } else { HELD_REVIEW_BAND }.into();
            result.candidates = self.candidates(&o);
            self.index.set_held(o.node, true);
            let m = MatchedEvent {
                event: ev,
                enterprise_id: Some(epi),
                match_result: result,
                matched_at: now,
            };
            self.hold(m, Some(&o.record_key), now, pos, &mut out);
        } else {
            out.push(Out::Matched(MatchedEvent {
                event: ev,
                enterprise_id: Some(epi),
                match_result: result,
                matched_at: now,
            }));
        }
        self.flush(&changes, change_rule, (Some(&event_id), None), now, pos, &mut out);
        out
    }

    /// One reviewer's decision. Refusals are recorded in the item (and counted by the stage);
    /// nothing else changes.
    pub fn decision(&mut self, d: &IdentityDecision, now: i64, pos: &Position) -> (Vec<Out>, &'static str) {
        let mut out = Vec::new();
        let item = d.item_id.as_deref().and_then(|i| self.item(i).cloned());
        if d.item_id.is_some() && item.as_ref().is_none_or(|i| i.status != "open") {
            return (out, "item_not_open");
        }
        let record_key = item.as_ref().and_then(|i| i.record_key.clone()).or(d.record_key.clone());
        let subject = record_key.as_deref().and_then(|k| self.index.find_key(k));
        let sp = self.index.savepoint();
        let target = d.target_enterprise_id.clone().unwrap_or_default();
        let result: Result<(Vec<Change>, bool, &'static str), &'static str> = match (d.action.as_str(), subject) {
            ("link", Some(s)) => self.index.link(s, &target).map(|c| (c, true, "reviewer_link")),
            // an event without a record of its own: released to the chosen enterprise id
            ("link", None) if item.is_some() && !self.index.records_of(&target).is_empty() => Ok((Vec::new(), true, "reviewer_link")),
            ("link", None) => Err("target_not_found"),
            ("not_same", Some(s)) => {
                let others: Vec<_> = self.index.records_of(&target).into_iter().filter(|n| *n != s).collect();
                if others.is_empty() {
                    Err("target_not_found")
                } else {
                    let changes = self.index.not_same(s, &others);
                    let remaining = item
                        .as_ref()
                        .is_some_and(|i| i.candidates.iter().any(|c| c.enterprise_id != target));
                    Ok((changes, !remaining, "reviewer_not_same"))
                }
            }
            ("new_patient", Some(s)) => {
                let mut others = Vec::new();
                for c in item.iter().flat_map(|i| &i.candidates) {
                    others.extend(self.index.records_of(&c.enterprise_id).into_iter().filter(|n| *n != s));
                }
                Ok((self.index.not_same(s, &others), true, "reviewer_new_patient"))
            }
            ("new_patient", None) if item.is_some() => Ok((Vec::new(), true, "reviewer_new_patient")),
            _ => Err("decision_not_applicable"),
        };
        let outcome = match &result {
            Ok(_) => "applied",
            Err(code) => code,
        };
        if result.is_err() {
            self.index.rollback(sp);
        }
        if let Some(mut item) = item {
            item.decisions.push(AppliedDecision {
                decision_id: d.decision_id.clone(),
                action: d.action.clone(),
                target_enterprise_id: d.target_enterprise_id.clone(),
                actor: d.actor.clone(),
                reason: d.reason.clone(),
                at: d.at,
                outcome: outcome.into(),
            });
            match &result {
                Ok((_, true, rule)) => {
                    let epi = match (subject, d.action.as_str()) {
                        (Some(s), _) => self.index.epi_of(s),
                        (None, "link") => target.clone(),
                        (None, _) => sluice_matcher::ids::format(&sluice_matcher::ids::epi(&format!("item|{}", item.item_id))),
                    };
                    if let Some(s) = subject {
                        self.index.set_held(s, false);
                    }
                    item.candidates.clear();
                    let outcome = if d.action == "new_patient" { "new" } else { "matched" };
                    self.release(item, &epi, rule, Some(&d.decision_id), outcome, now, pos, &mut out);
                }
                Ok((_, false, _)) => {
                    item.candidates.retain(|c| c.enterprise_id != target);
                    self.save_item(item, now, pos, &mut out);
                }
                Err(_) => self.save_item(item, now, pos, &mut out),
            }
        }
        if let Ok((changes, _, rule)) = &result {
            self.flush(changes, rule, (None, Some(&d.decision_id)), now, pos, &mut out);
        }
        (out, outcome)
    }
}
