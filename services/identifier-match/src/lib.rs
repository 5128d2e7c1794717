//! identifier-match: canonical events (`clinical.normalised.v1`) to matched events with an
//! enterprise patient id (`clinical.matched.v1`).
//!
//! Match keys are valid NHS numbers (`nhs|<number>`) and local identifiers with their assigning
//! authority (`mrn|<authority>|<value>`; when a feed sends none, the sending facility stands in
//! and the evidence says so). The index (key to enterprise id) lives in the compacted
//! `identity.links.v1`, written in the same transaction as the matched event and read back at
//! start-up.
//!
//! Rules that protect patients:
//! - an NHS number that fails its modulus 11 check is never a key;
//! - keys that point at different enterprise ids, or an MRN whose patient already has a
//!   different NHS number, send the event to `identity.review.v1` and link nothing;
//! - an event with a patient but no usable key is held for review too, and so is clinical
//!   content (anything but `generic` messages) that names no patient at all;
//! - merges (MRG) re-point the prior record's keys to the surviving id, unless the two carry
//!   different NHS numbers, which goes to review.

use serde::{Deserialize, Serialize};
use sluice_model::ids::uuid_from;
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, Identifier, IdentityLink, MatchResult, MatchedEvent};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

pub const SERVICE: &str = "identifier-match";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
}

/// Identifier type codes treated as local record numbers (empty counts: most feeds leave it out).
const LOCAL_ID_TYPES: &[&str] = &["", "MR", "MRN", "PI", "PT", "PN", "MEDREC", "HOSP", "LR"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub key: String,
    pub kind: &'static str,
}

/// Whether a value can be part of a match key: something with a letter or digit in it, never
/// the HL7 explicit null `""` (present and null: "delete this value"), blanks or punctuation.
/// The normaliser already keeps `""` out of identifiers; this is the last line of defence,
/// because a key every patient of a feed shares would overlay them all.
pub fn usable(value: &str) -> bool {
    let v = value.trim();
    v != "\"\"" && v.chars().any(char::is_alphanumeric)
}

/// The match keys of a set of identifiers, and the codes of identifiers not used as keys.
pub fn keys_of(ids: &[Identifier], implied_authority: &str) -> (Vec<Key>, Vec<&'static str>) {
    let mut keys = Vec::new();
    let mut ignored = Vec::new();
    let implied_authority = if usable(implied_authority) { implied_authority } else { "" };
    for id in ids {
        if !usable(&id.value) {
            ignored.push("identifier_value_unusable");
            continue;
        }
        if id.system.as_deref() == Some("https://fhir.nhs.uk/Id/nhs-number") {
            if id.nhs_number_valid == Some(true) {
                keys.push(Key {
                    key: format!("nhs|{}", id.value),
                    kind: "nhs_number",
                });
            } else {
                ignored.push("nhs_number_invalid");
            }
            continue;
        }
        let t = id.type_code.as_deref().unwrap_or("").to_ascii_uppercase();
        if !LOCAL_ID_TYPES.contains(&t.as_str()) {
            ignored.push("identifier_type_not_matched");
            continue;
        }
        match id
            .assigning_authority
            .as_deref()
            .filter(|a| usable(a))
            .or(id.assigning_facility.as_deref().filter(|a| usable(a)))
        {
            Some(a) => keys.push(Key {
                key: format!("mrn|{a}|{}", id.value),
                kind: "mrn",
            }),
            None if !implied_authority.is_empty() => keys.push(Key {
                key: format!("mrn|{implied_authority}|{}", id.value),
                kind: "mrn_implied_authority",
            }),
            None => ignored.push("identifier_without_authority"),
        }
    }
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys.dedup_by(|a, b| a.key == b.key);
    // NHS numbers first: they decide the enterprise id of a new patient when present
    keys.sort_by_key(|k| k.kind != "nhs_number");
    (keys, ignored)
}

/// The index: committed links, plus the links of the open transaction.
#[derive(Default)]
pub struct Index {
    committed: HashMap<String, String>,
    pending: HashMap<String, String>,
}

impl Index {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.pending.get(key).or_else(|| self.committed.get(key))
    }

    /// Follows merges: the enterprise id an id now lives on.
    pub fn resolve(&self, epi: &str) -> String {
        let mut cur = epi.to_owned();
        for _ in 0..32 {
            match self.get(&format!("epi|{cur}")) {
                Some(next) if *next != cur => cur = next.clone(),
                _ => break,
            }
        }
        cur
    }

    /// The NHS numbers linked to an enterprise id (there should be at most one).
    fn nhs_numbers_of(&self, epi: &str) -> BTreeSet<String> {
        self.committed
            .iter()
            .chain(self.pending.iter())
            .filter(|(k, v)| k.starts_with("nhs|") && self.resolve(v) == epi)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn load(&mut self, key: String, epi: String) {
        self.committed.insert(key, epi);
    }

    pub fn len(&self) -> usize {
        self.committed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }
}

pub struct Matcher {
    store: Arc<SchemaStore>,
    pub index: Index,
}

pub enum Decision {
    Link {
        epi: String,
        outcome: &'static str,
        rule: &'static str,
        evidence: Vec<String>,
        links: Vec<(String, String, &'static str)>,
    },
    Review(&'static str),
    NotApplicable,
}

impl Matcher {
    pub fn new(store: Arc<SchemaStore>, index: Index) -> Matcher {
        Matcher { store, index }
    }
}

pub fn decide(index: &Index, ev: &ClinicalEvent) -> (Decision, Vec<String>) {
    let Some(patient) = &ev.patient else {
        // clinical content about a patient nobody can name (an ORU without PID, a FHIR result
        // whose subject is not in the Bundle) is held, never routed as if it needed no patient
        return if ev.kind == "generic" {
            (Decision::NotApplicable, Vec::new())
        } else {
            (Decision::Review("no_patient"), Vec::new())
        };
    };
    let facility = ev.source.sending_facility.as_str();
    let (keys, ignored) = keys_of(&patient.identifiers, facility);
    let ignored: Vec<String> = ignored.into_iter().map(str::to_owned).collect();
    if keys.is_empty() {
        return (Decision::Review("no_usable_identifier"), ignored);
    }
    let found: BTreeSet<String> = keys.iter().filter_map(|k| index.get(&k.key)).map(|e| index.resolve(e)).collect();
    if found.len() > 1 {
        return (Decision::Review("identifiers_point_to_different_patients"), ignored);
    }
    let incoming_nhs: BTreeSet<String> = keys.iter().filter(|k| k.kind == "nhs_number").map(|k| k.key.clone()).collect();
    if incoming_nhs.len() > 1 {
        return (Decision::Review("several_nhs_numbers"), ignored);
    }
    let (epi, mut outcome, rule) = match found.into_iter().next() {
        Some(epi) => {
            let known = index.nhs_numbers_of(&epi);
            if !incoming_nhs.is_empty() && !known.is_empty() && known != incoming_nhs {
                return (Decision::Review("nhs_number_conflict"), ignored);
            }
            (epi, "matched", "exact_key")
        }
        None => (uuid_from(&[b"epi", keys[0].key.as_bytes()]), "new", "new_patient"),
    };
    let evidence: Vec<String> = keys
        .iter()
        .filter(|k| index.get(&k.key).is_some())
        .map(|k| k.kind.to_owned())
        .collect();
    let mut links: Vec<(String, String, &'static str)> = keys
        .iter()
        .filter(|k| index.get(&k.key).map(|e| index.resolve(e)) != Some(epi.clone()))
        .map(|k| (k.key.clone(), epi.clone(), "active"))
        .collect();

    // a move (A43 A44 A45 ...) names another patient in MRG: never link the two; a merge of
    // accounts or visits leaves identity alone; an MRG whose meaning is not known is held
    let merge = match ev.merge.as_ref().map(|m| m.kind.as_str()) {
        Some("patient_merge" | "identifier_change") => ev.merge.as_ref(),
        Some("account_merge" | "visit_merge" | "patient_move" | "account_move" | "visit_move") => None,
        // linking two records as one person, or undoing such a link, is a person's decision
        Some("patient_link") => return (Decision::Review("patient_link_requested"), ignored),
        Some("patient_unlink") => return (Decision::Review("patient_unlink_requested"), ignored),
        Some(_) => return (Decision::Review("merge_kind_unknown"), ignored),
        None => None,
    };
    if let Some(merge) = merge {
        let (prior_keys, _) = keys_of(&merge.prior_identifiers, facility);
        let prior_nhs: BTreeSet<String> = prior_keys
            .iter()
            .filter(|k| k.kind == "nhs_number")
            .map(|k| k.key.clone())
            .collect();
        if !prior_nhs.is_empty() && !incoming_nhs.is_empty() && prior_nhs != incoming_nhs {
            return (Decision::Review("merge_nhs_number_conflict"), ignored);
        }
        let prior_epis: BTreeSet<String> = prior_keys
            .iter()
            .filter_map(|k| index.get(&k.key))
            .map(|e| index.resolve(e))
            .filter(|e| *e != epi)
            .collect();
        for p in &prior_epis {
            let other = index.nhs_numbers_of(p);
            let mine = if incoming_nhs.is_empty() {
                index.nhs_numbers_of(&epi)
            } else {
                incoming_nhs.clone()
            };
            if !other.is_empty() && !mine.is_empty() && other != mine {
                return (Decision::Review("merge_nhs_number_conflict"), ignored);
            }
            links.push((format!("epi|{p}"), epi.clone(), "merged"));
        }
        for k in &prior_keys {
            links.push((k.key.clone(), epi.clone(), "merged"));
        }
        outcome = "merged";
    }
    (
        Decision::Link {
            epi,
            outcome,
            rule,
            evidence,
            links,
        },
        ignored,
    )
}

impl Processor for Matcher {
    fn process(&mut self, input: &Input<'_>, ctx: &Context) -> Outcome {
        let ev: ClinicalEvent = match self.store.decode(input.value) {
            Ok(e) => e,
            Err(e) => {
                return Outcome::Reject {
                    code: e.code(),
                    detail: "canonical event could not be decoded".into(),
                };
            }
        };
        let source_key = input.key.map(<[u8]>::to_vec).unwrap_or_default();
        let event_id = ev.event_id.clone();
        let (decision, ignored) = decide(&self.index, &ev);
        let mut outputs = Vec::new();
        let (topic, key, epi, result) = match decision {
            Decision::NotApplicable => (
                names::MATCHED,
                source_key,
                None,
                MatchResult {
                    outcome: "not_applicable".into(),
                    rule: "no_patient".into(),
                    evidence: vec![],
                    ignored,
                },
            ),
            Decision::Review(rule) => (
                names::REVIEW,
                source_key,
                None,
                MatchResult {
                    outcome: "review".into(),
                    rule: rule.into(),
                    evidence: vec![],
                    ignored,
                },
            ),
            Decision::Link {
                epi,
                outcome,
                rule,
                evidence,
                links,
            } => {
                for (key, target, status) in links {
                    let link = IdentityLink {
                        key: key.clone(),
                        enterprise_id: target.clone(),
                        status: status.into(),
                        source_event_id: event_id.clone(),
                        updated_at: ctx.now_micros,
                    };
                    let Ok(value) = self.store.encode(names::LINKS, &link) else {
                        return Outcome::Reject {
                            code: "avro_encode_failed",
                            detail: "identity link could not be encoded".into(),
                        };
                    };
                    self.index.pending.insert(key.clone(), target);
                    outputs.push(Output {
                        topic: names::LINKS.into(),
                        key: key.into_bytes(),
                        value,
                    });
                }
                (
                    names::MATCHED,
                    epi.clone().into_bytes(),
                    Some(epi),
                    MatchResult {
                        outcome: outcome.into(),
                        rule: rule.into(),
                        evidence,
                        ignored,
                    },
                )
            }
        };
        let matched = MatchedEvent {
            event: ev,
            enterprise_id: epi,
            match_result: result,
            matched_at: ctx.now_micros,
        };
        match self.store.encode(topic, &matched) {
            Ok(value) => outputs.push(Output {
                topic: topic.into(),
                key,
                value,
            }),
            Err(_) => {
                return Outcome::Reject {
                    code: "avro_encode_failed",
                    detail: "matched event could not be encoded".into(),
                };
            }
        }
        Outcome::Emit(outputs)
    }

    fn committed(&mut self) {
        let pending = std::mem::take(&mut self.index.pending);
        self.index.committed.extend(pending);
    }

    fn aborted(&mut self) {
        self.index.pending.clear();
    }
}

/// Reads the index back from `identity.links.v1`.
pub fn load_index(cfg: &RuntimeConfig, store: &SchemaStore, handle: &tokio::runtime::Handle) -> anyhow::Result<Index> {
    let mut index = Index::default();
    let mut bad = 0u64;
    sluice_runtime::state::read_topic(&cfg.kafka, names::LINKS, |_, value| {
        let Some(v) = value else { return };
        if handle.block_on(store.prefetch(v)).is_err() {
            bad += 1;
            return;
        }
        match store.decode::<IdentityLink>(v) {
            Ok(l) => index.load(l.key, l.enterprise_id),
            Err(_) => bad += 1,
        }
    })?;
    if bad > 0 {
        anyhow::bail!("{bad} identity links could not be read: refusing to match on a partial index");
    }
    tracing::info!(links = index.len(), "identity index loaded");
    Ok(index)
}

pub async fn run(cfg: Config, shutdown: Shutdown, health: Health) -> anyhow::Result<()> {
    let rt = cfg.runtime.clone();
    sluice_runtime::stage::run_stage(
        SERVICE,
        vec![names::NORMALISED.into()],
        cfg.runtime,
        shutdown,
        health,
        move |store, handle| {
            let index = load_index(&rt, &store, &handle)?;
            Ok(Matcher::new(store, index))
        },
    )
    .await
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}

#[cfg(test)]
mod tests;
