//! `sluice topology apply` creates the topics idempotently; `sluice topology check` verifies
//! that topics, schemas, route rules and the services' own topic names agree.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use sluice_model::schemas::{RecordType, schema};
use sluice_model::topology::{Topology, names};
use sluice_runtime::config::KafkaConfig;
use sluice_runtime::kafka::{self, ClientLog};
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create every topic that does not exist yet. Security settings come from the
    /// SLUICE_RUNTIME__KAFKA__* variables the services read (an admin's credentials)
    Apply {
        /// Overrides SLUICE_RUNTIME__KAFKA__BOOTSTRAP_SERVERS
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Replication factor for new topics (use 3 on a production cluster); with 3 or more
        /// the topics get min.insync.replicas=2
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
    /// Print (or apply) the least-privilege ACLs of every service
    Acls(crate::acls::Args),
    /// Print the topics and each service's ACLs as the Helm chart reads them
    /// (`helm/sluice/files/topology.json`, from which it renders Strimzi KafkaTopic and
    /// KafkaUser objects)
    ChartData,
    /// Check topology, schemas, route rules and service configuration against each other
    Check {
        /// Route rules file to check (the built-in one when absent)
        #[arg(long)]
        rules: Option<std::path::PathBuf>,
    },
}

/// The `min.insync.replicas` of topics with this replication factor: 2 from 3 replicas up (an
/// `acks=all` write survives the loss of any one broker and waits when two are gone), else 1.
pub fn min_insync_replicas(replication: i32) -> i32 {
    if replication >= 3 { 2 } else { 1 }
}

/// Creates every topic of the topology that does not exist yet; returns how many it created.
pub async fn apply(cfg: &KafkaConfig, replication: i32) -> anyhow::Result<usize> {
    let topology = Topology::load()?;
    let admin: AdminClient<ClientLog> = kafka::base(cfg, "sluice-topology").create_with_context(ClientLog { service: "topology" })?;
    let retention: Vec<String> = topology.topics.iter().map(|t| t.retention_ms.to_string()).collect();
    let min_insync = min_insync_replicas(replication).to_string();
    let new: Vec<NewTopic<'_>> = topology
        .topics
        .iter()
        .zip(&retention)
        .map(|(t, r)| {
            let topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(replication))
                .set("cleanup.policy", &t.cleanup_policy)
                .set("retention.ms", r);
            // 1 is every broker's default (and all a one-replica topic can have)
            if replication > 1 {
                topic.set("min.insync.replicas", &min_insync)
            } else {
                topic
            }
        })
        .collect();
    let results = admin
        .create_topics(new.iter(), &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
        .await?;
    let mut created = 0;
    for r in results {
        match r {
            Ok(_) => created += 1,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("topic {name} could not be created: {code}"),
        }
    }
    Ok(created)
}

/// The topics (name, partitions, topic configuration) and every service's ACLs in Strimzi's
/// terms, for the chart. Config values are strings, as Helm would print large numbers read
/// from JSON in exponent notation.
pub fn chart_data() -> anyhow::Result<serde_json::Value> {
    use sluice_model::topology::AclPattern;
    let topology = Topology::load()?;
    let topics: Vec<serde_json::Value> = topology
        .topics
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "partitions": t.partitions,
                "config": {"cleanup.policy": t.cleanup_policy, "retention.ms": t.retention_ms.to_string()},
            })
        })
        .collect();
    let users: Vec<serde_json::Value> = sluice_model::topology::SERVICES
        .iter()
        .map(|service| {
            // one Strimzi ACL rule per resource, with all its operations
            let mut rules: std::collections::BTreeMap<(String, String, String), Vec<&str>> = Default::default();
            for a in topology.acls(service, "") {
                let pattern = if a.pattern == AclPattern::Prefixed { "prefix" } else { "literal" };
                rules
                    .entry((a.resource.as_str().to_owned(), a.name.clone(), pattern.to_owned()))
                    .or_default()
                    .push(a.operation);
            }
            let acls: Vec<serde_json::Value> = rules
                .into_iter()
                .map(|((kind, name, pattern), ops)| {
                    serde_json::json!({"resource": {"type": kind, "name": name, "patternType": pattern}, "operations": ops})
                })
                .collect();
            serde_json::json!({"service": service, "acls": acls})
        })
        .collect();
    Ok(serde_json::json!({
        "generated_by": "sluice topology chart-data (from topology/topics.yaml); tests/helm.rs checks it is current",
        "topics": topics,
        "users": users,
    }))
}

/// Every disagreement found, as readable lines. Empty means all agree.
pub fn check(rules_file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let topology = Topology::load()?;
    let mut problems = Vec::new();
    for t in &topology.topics {
        match RecordType::from_name(&t.value_schema) {
            None => problems.push(format!("topic {}: value schema {} is not in schemas/", t.name, t.value_schema)),
            Some(r) => {
                if let Err(e) = schema(r) {
                    problems.push(format!("topic {}: schema {} does not parse: {e}", t.name, t.value_schema));
                }
            }
        }
        if !t.name.ends_with(".v1") || t.name.split('.').count() != 3 {
            problems.push(format!("topic {}: name is not <domain>.<stage>.v<major>", t.name));
        }
    }
    for n in names::ALL {
        if topology.topic(n).is_err() {
            problems.push(format!("code uses topic {n}, which is not in topology/topics.yaml"));
        }
    }
    // each stage's input and dead-letter topics as the services use them
    let stages: [(&str, &[&str]); 3] = [
        (sluice_normalise::SERVICE, &[names::RAW]),
        (sluice_identifier_match::SERVICE, &[names::NORMALISED]),
        (sluice_route::SERVICE, &[names::MATCHED]),
    ];
    for (svc, inputs) in stages {
        for i in inputs {
            if !topology.consumed_by(svc).any(|t| t.name == *i) {
                problems.push(format!("{svc} consumes {i}, but topics.yaml does not list it as a consumer"));
            }
        }
        let dl = Topology::dead_letter_topic(svc);
        if !topology.produced_by(svc).any(|t| t.name == dl) {
            problems.push(format!("{svc} dead-letters to {dl}, which topics.yaml does not list"));
        }
    }
    for dl in sluice_dead_letter::DEAD_LETTER_TOPICS {
        if !topology.consumed_by(sluice_dead_letter::SERVICE).any(|t| t.name == *dl) {
            problems.push(format!("dead-letter reads {dl}, but topics.yaml does not list it as a consumer"));
        }
    }
    let cfg = sluice_route::Config {
        rules_file: rules_file.map(Into::into),
        ..Default::default()
    };
    match sluice_route::load_rules(&cfg) {
        Err(e) => problems.push(format!("route rules: {e}")),
        Ok(rules) => {
            for d in rules.destinations() {
                match topology.topic(&d) {
                    Ok(t) if t.value_schema != "MatchedEvent" => {
                        problems.push(format!("route destination {d} does not carry MatchedEvent"))
                    }
                    Ok(t) if !t.producers.iter().any(|p| p == "route") => {
                        problems.push(format!("route destination {d} does not list route as a producer"))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(problems)
}

pub async fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Apply {
            bootstrap_servers,
            replication_factor,
        } => {
            let mut cfg = sluice_runtime::config::kafka_from_env()?;
            if let Some(b) = bootstrap_servers {
                cfg.bootstrap_servers = b;
            }
            let n = apply(&cfg, replication_factor).await?;
            println!("topology applied: {n} topics created");
            Ok(())
        }
        Command::Acls(a) => crate::acls::run(a),
        Command::ChartData => {
            println!("{}", serde_json::to_string_pretty(&chart_data()?)?);
            Ok(())
        }
        Command::Check { rules } => {
            let problems = check(rules.as_deref())?;
            if problems.is_empty() {
                println!("topology, schemas, route rules and services agree");
                Ok(())
            } else {
                for p in &problems {
                    println!("{p}");
                }
                anyhow::bail!("{} problems found", problems.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn topology_schemas_rules_and_services_agree() {
        let problems = super::check(None).expect("check runs");
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_rule_pointing_at_a_missing_topic_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("routes.yaml");
        std::fs::write(&f, "version: 1\ndefault: routed.default.v1\nrules:\n  - name: to-nowhere\n    when: {kind: [result]}\n    to: [routed.nowhere.v1]\n").expect("write");
        let problems = super::check(Some(&f)).expect("check runs");
        assert!(problems.iter().any(|p| p.contains("to-nowhere")), "{problems:?}");
    }
}
