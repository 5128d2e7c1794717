//! route: matched events (`clinical.matched.v1`) fanned out to destination topics by the rules
//! in a versioned YAML file (`topology/routes.yaml` by default).
//!
//! An event that no rule takes goes to the default topic and is counted
//! (`sluice_route_unrouted_total`); nothing is dropped. A bad rules file fails start-up with an
//! error naming the rule.

use serde::{Deserialize, Serialize};
use sluice_model::MatchedEvent;
use sluice_model::topology::{Topology, names};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{self, Health};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub const SERVICE: &str = "route";
pub const DEFAULT_RULES: &str = include_str!("../../../topology/routes.yaml");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    /// Rules file; the built-in `topology/routes.yaml` when absent.
    pub rules_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub version: u32,
    pub default: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub when: BTreeMap<String, Vec<String>>,
    pub to: Vec<String>,
}

pub const PREDICATES: &[&str] = &[
    "message_type",
    "trigger_event",
    "kind",
    "sending_facility",
    "sending_application",
    "patient_class",
    "observation_code",
    "match_outcome",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesError {
    #[error("rules file is not valid yaml: {0}")]
    Yaml(String),
    #[error("rules version {0} is not supported (expected 1)")]
    Version(u32),
    #[error("rule {rule}: unknown predicate {predicate}")]
    UnknownPredicate { rule: String, predicate: String },
    #[error("rule {rule}: predicate {predicate} lists no values")]
    EmptyPredicate { rule: String, predicate: String },
    #[error("rule {rule}: destination {topic} is not a topic in the topology")]
    UnknownTopic { rule: String, topic: String },
    #[error("rule {rule}: no destination")]
    NoDestination { rule: String },
    #[error("rule {rule}: name used twice")]
    Duplicate { rule: String },
}

impl Rules {
    pub fn parse(text: &str, topology: &Topology) -> Result<Rules, RulesError> {
        let rules: Rules = serde_yaml::from_str(text).map_err(|e| RulesError::Yaml(e.to_string()))?;
        if rules.version != 1 {
            return Err(RulesError::Version(rules.version));
        }
        let known = |t: &str| topology.topic(t).is_ok();
        if !known(&rules.default) {
            return Err(RulesError::UnknownTopic {
                rule: "default".into(),
                topic: rules.default.clone(),
            });
        }
        let mut names = std::collections::HashSet::new();
        for r in &rules.rules {
            if !names.insert(r.name.as_str()) {
                return Err(RulesError::Duplicate { rule: r.name.clone() });
            }
            if r.to.is_empty() {
                return Err(RulesError::NoDestination { rule: r.name.clone() });
            }
            for (p, values) in &r.when {
                if !PREDICATES.contains(&p.as_str()) {
                    return Err(RulesError::UnknownPredicate {
                        rule: r.name.clone(),
                        predicate: p.clone(),
                    });
                }
                if values.is_empty() {
                    return Err(RulesError::EmptyPredicate {
                        rule: r.name.clone(),
                        predicate: p.clone(),
                    });
                }
            }
            if let Some(t) = r.to.iter().find(|t| !known(t)) {
                return Err(RulesError::UnknownTopic {
                    rule: r.name.clone(),
                    topic: t.clone(),
                });
            }
        }
        Ok(rules)
    }

    /// Every destination topic (for schema registration and topology checks).
    pub fn destinations(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.to.iter().cloned())
            .chain([self.default.clone()])
            .collect();
        d.sort();
        d.dedup();
        d
    }

    /// Destinations of one event, and whether it fell to the default.
    pub fn destinations_of(&self, m: &MatchedEvent) -> (Vec<&str>, bool) {
        let ev = &m.event;
        let mut out: Vec<&str> = Vec::new();
        for r in &self.rules {
            let holds = r.when.iter().all(|(p, values)| {
                let one = |v: &str| values.iter().any(|x| x == v);
                match p.as_str() {
                    "message_type" => one(&ev.message_type),
                    "trigger_event" => one(&ev.trigger_event),
                    "kind" => one(&ev.kind),
                    "sending_facility" => one(&ev.source.sending_facility),
                    "sending_application" => one(&ev.source.sending_application),
                    "patient_class" => ev.encounter.as_ref().and_then(|e| e.patient_class.as_deref()).is_some_and(one),
                    "observation_code" => ev
                        .observations
                        .iter()
                        .any(|o| o.code.as_ref().and_then(|c| c.code.as_deref()).is_some_and(one)),
                    "match_outcome" => one(&m.match_result.outcome),
                    _ => false,
                }
            });
            if holds {
                for t in &r.to {
                    if !out.contains(&t.as_str()) {
                        out.push(t);
                    }
                }
            }
        }
        if out.is_empty() {
            (vec![self.default.as_str()], true)
        } else {
            (out, false)
        }
    }
}

fn unrouted() -> &'static prometheus::IntCounterVec {
    static C: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        telemetry::counter(
            "sluice_route_unrouted_total",
            "events no rule took, sent to the default route",
            &["service"],
        )
    })
}

pub struct Router {
    store: Arc<SchemaStore>,
    rules: Rules,
}

impl Router {
    pub fn new(store: Arc<SchemaStore>, rules: Rules) -> Router {
        Router { store, rules }
    }
}

impl Processor for Router {
    fn process(&mut self, input: &Input<'_>, _: &Context) -> Outcome {
        let m: MatchedEvent = match self.store.decode(input.value) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::Reject {
                    code: e.code(),
                    detail: "matched event could not be decoded".into(),
                };
            }
        };
        let (dests, fell_to_default) = self.rules.destinations_of(&m);
        if fell_to_default {
            unrouted().with_label_values(&[SERVICE]).inc();
        }
        let key = input.key.map(<[u8]>::to_vec).unwrap_or_default();
        // the input's own bytes where its writer schema is the one registered for the
        // destination (the usual case: same schema, same id): re-encoding would write them again
        let writer = sluice_model::wire::split(input.value).ok().map(|(id, _)| id);
        let mut outputs = Vec::with_capacity(dests.len());
        for d in dests {
            if writer.is_some() && self.store.writer_id(d) == writer {
                outputs.push(Output {
                    topic: d.to_owned(),
                    key: key.clone(),
                    value: input.value.to_vec(),
                });
                continue;
            }
            match self.store.encode(d, &m) {
                Ok(value) => outputs.push(Output {
                    topic: d.to_owned(),
                    key: key.clone(),
                    value,
                }),
                Err(_) => {
                    return Outcome::Reject {
                        code: "avro_encode_failed",
                        detail: "routed event could not be encoded".into(),
                    };
                }
            }
        }
        Outcome::Emit(outputs)
    }
}

pub fn load_rules(cfg: &Config) -> anyhow::Result<Rules> {
    let text = match &cfg.rules_file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("rules file {} cannot be read: {e}", p.display()))?,
        None => DEFAULT_RULES.to_owned(),
    };
    Ok(Rules::parse(&text, &Topology::load()?)?)
}

pub async fn run(cfg: Config, shutdown: Shutdown, health: Health) -> anyhow::Result<()> {
    let rules = load_rules(&cfg)?;
    tracing::info!(rules = rules.rules.len(), "routing rules loaded");
    sluice_runtime::stage::run_stage(
        SERVICE,
        vec![names::MATCHED.into()],
        cfg.runtime,
        shutdown,
        health,
        move |store, handle| {
            // destinations come from the rules file, so register them here as well
            for d in rules.destinations() {
                handle.block_on(store.register(&d, sluice_model::schemas::RecordType::MatchedEvent))?;
            }
            Ok(Router::new(store, rules.clone()))
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
mod tests {
    use super::*;
    use sluice_model::ClinicalEvent;

    fn topo() -> Topology {
        Topology::load().expect("topology")
    }

    #[test]
    fn default_rules_route_by_kind_and_type() {
        let rules = Rules::parse(DEFAULT_RULES, &topo()).expect("rules");
        let mut m = MatchedEvent {
            event: ClinicalEvent {
                message_type: "ADT".into(),
                kind: "adt".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(rules.destinations_of(&m), (vec!["routed.adt.v1"], false));
        m.event = ClinicalEvent {
            message_type: "MFN".into(),
            kind: "generic".into(),
            ..Default::default()
        };
        assert_eq!(rules.destinations_of(&m), (vec!["routed.default.v1"], true));
    }

    #[test]
    fn bad_rules_name_the_rule() {
        let t = topo();
        let bad =
            "version: 1\ndefault: routed.default.v1\nrules:\n  - name: lab-feed\n    when: {colour: [red]}\n    to: [routed.results.v1]\n";
        assert_eq!(
            Rules::parse(bad, &t),
            Err(RulesError::UnknownPredicate {
                rule: "lab-feed".into(),
                predicate: "colour".into()
            })
        );
        let bad =
            "version: 1\ndefault: routed.default.v1\nrules:\n  - name: lab-feed\n    when: {kind: [result]}\n    to: [no.such.topic]\n";
        assert!(Rules::parse(bad, &t).expect_err("bad").to_string().contains("lab-feed"));
    }
}
