//! The topics of the pipeline, read from `topology/topics.yaml` (compiled in).

use serde::Deserialize;

pub const TOPICS_YAML: &str = include_str!("../../../topology/topics.yaml");

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: String,
    pub partitions: i32,
    pub cleanup_policy: String,
    pub retention_ms: i64,
    pub key: String,
    pub value_schema: String,
    pub producers: Vec<String>,
    pub consumers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub topics: Vec<Topic>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("topology file is invalid: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("topic {0} is not in the topology")]
    UnknownTopic(String),
}

impl Topology {
    pub fn load() -> Result<Topology, TopologyError> {
        Self::parse(TOPICS_YAML)
    }

    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        Ok(serde_yaml::from_str(text)?)
    }

    pub fn topic(&self, name: &str) -> Result<&Topic, TopologyError> {
        self.topics
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TopologyError::UnknownTopic(name.to_owned()))
    }

    /// Topics a service produces to.
    pub fn produced_by<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Topic> + 'a {
        self.topics.iter().filter(move |t| t.producers.iter().any(|p| p == service))
    }

    /// Topics a service consumes.
    pub fn consumed_by<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Topic> + 'a {
        self.topics.iter().filter(move |t| t.consumers.iter().any(|p| p == service))
    }

    /// The dead-letter topic of a stage.
    pub fn dead_letter_topic(stage: &str) -> String {
        format!("deadletter.{stage}.v1")
    }
}

/// The services of the pipeline, each a Kafka principal of its own.
pub const SERVICES: [&str; 5] = ["ingest", "normalise", "identifier-match", "route", "dead-letter"];

/// What a Kafka ACL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclResource {
    Topic,
    Group,
    TransactionalId,
}

/// How the resource name is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclPattern {
    Literal,
    Prefixed,
}

/// One allow ACL: a principal may do `operation` on a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acl {
    pub principal: String,
    pub resource: AclResource,
    pub name: String,
    pub pattern: AclPattern,
    pub operation: &'static str,
}

impl AclResource {
    pub fn as_str(self) -> &'static str {
        match self {
            AclResource::Topic => "topic",
            AclResource::Group => "group",
            AclResource::TransactionalId => "transactionalId",
        }
    }
}

impl AclPattern {
    pub fn as_str(self) -> &'static str {
        match self {
            AclPattern::Literal => "literal",
            AclPattern::Prefixed => "prefix",
        }
    }
}

/// The consumer group a state loader reads compacted topics with (by assignment; no offsets).
pub const STATE_LOADER_GROUP: &str = "sluice-state-loader";

impl Topology {
    /// The least-privilege ACLs of one service, from the producers and consumers this file lists:
    /// Write and Describe on the topics it produces, Read and Describe on those it consumes, Read
    /// on its own consumer groups (`sluice-<service>`, and the state loader's), and for the
    /// transactional services Write and Describe on their transactional ids (`sluice-<service>-`).
    /// Nothing else: a service is refused every other topic, group and transaction.
    pub fn acls(&self, service: &str, principal: &str) -> Vec<Acl> {
        let mut out = Vec::new();
        let mut add = |resource, name: &str, pattern, operations: &[&'static str]| {
            for op in operations {
                out.push(Acl {
                    principal: principal.to_owned(),
                    resource,
                    name: name.to_owned(),
                    pattern,
                    operation: op,
                });
            }
        };
        for t in self.produced_by(service) {
            add(AclResource::Topic, &t.name, AclPattern::Literal, &["Write", "Describe"]);
        }
        for t in self.consumed_by(service) {
            add(AclResource::Topic, &t.name, AclPattern::Literal, &["Read", "Describe"]);
        }
        if self.consumed_by(service).next().is_some() {
            add(
                AclResource::Group,
                &format!("sluice-{service}"),
                AclPattern::Prefixed,
                &["Read", "Describe"],
            );
            add(AclResource::Group, STATE_LOADER_GROUP, AclPattern::Literal, &["Read", "Describe"]);
        }
        if service != "ingest" && self.produced_by(service).next().is_some() {
            add(
                AclResource::TransactionalId,
                &format!("sluice-{service}-"),
                AclPattern::Prefixed,
                &["Write", "Describe"],
            );
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Topic names used in code. Each one is checked against topics.yaml by `sluice topology check`
/// and by the tests, so the constants cannot drift from the topology.
pub mod names {
    pub const RAW: &str = "hl7v2.raw.v1";
    pub const FHIR_RAW: &str = "fhir.raw.v1";
    pub const NORMALISED: &str = "clinical.normalised.v1";
    pub const SEEN: &str = "normalise.seen.v1";
    pub const FHIR: &str = "fhir.bundles.v1";
    pub const MATCHED: &str = "clinical.matched.v1";
    pub const LINKS: &str = "identity.links.v1";
    pub const REVIEW: &str = "identity.review.v1";
    pub const RECORDS: &str = "identity.records.v1";
    pub const CHANGES: &str = "identity.changes.v1";
    pub const DECISIONS: &str = "identity.decisions.v1";
    pub const DL_INGEST: &str = "deadletter.ingest.v1";
    pub const DL_NORMALISE: &str = "deadletter.normalise.v1";
    pub const DL_MATCH: &str = "deadletter.identifier-match.v1";
    pub const DL_ROUTE: &str = "deadletter.route.v1";
    pub const DL_AUDIT: &str = "deadletter.audit.v1";
    pub const AUDIT: &str = "audit.events.v1";
    pub const ALL: &[&str] = &[
        RAW,
        FHIR_RAW,
        NORMALISED,
        SEEN,
        FHIR,
        MATCHED,
        LINKS,
        REVIEW,
        RECORDS,
        CHANGES,
        DECISIONS,
        DL_INGEST,
        DL_NORMALISE,
        DL_MATCH,
        DL_ROUTE,
        DL_AUDIT,
        AUDIT,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::RecordType;

    #[test]
    fn topology_names_and_schemas_agree() {
        let t = Topology::load().expect("topology loads");
        for n in names::ALL {
            assert!(t.topic(n).is_ok(), "{n} missing from topics.yaml");
        }
        for topic in &t.topics {
            assert!(
                RecordType::from_name(&topic.value_schema).is_some(),
                "{} has unknown schema",
                topic.name
            );
            assert!(topic.partitions > 0);
        }
    }
}

#[cfg(test)]
mod acl_tests {
    use super::*;

    fn allows(acls: &[Acl], resource: AclResource, name: &str, op: &str) -> bool {
        acls.iter().any(|a| {
            a.resource == resource
                && a.operation == op
                && match a.pattern {
                    AclPattern::Literal => a.name == name,
                    AclPattern::Prefixed => name.starts_with(&a.name),
                }
        })
    }

    #[test]
    fn each_service_may_do_its_job_and_nothing_else() {
        let t = Topology::load().expect("topology");
        let route = t.acls("route", "User:route");
        assert!(allows(&route, AclResource::Topic, names::MATCHED, "Read"));
        assert!(allows(&route, AclResource::Topic, "routed.adt.v1", "Write"));
        assert!(
            !allows(&route, AclResource::Topic, names::LINKS, "Write"),
            "route writes no identity link"
        );
        assert!(allows(&route, AclResource::TransactionalId, "sluice-route-0", "Write"));
        assert!(!allows(&route, AclResource::TransactionalId, "sluice-normalise-0", "Write"));
        let ingest = t.acls("ingest", "User:ingest");
        assert!(allows(&ingest, AclResource::Topic, names::RAW, "Write"));
        assert!(
            !allows(&ingest, AclResource::Topic, "routed.adt.v1", "Read"),
            "ingest reads no routed topic"
        );
        assert!(ingest.iter().all(|a| a.operation != "Read"), "ingest reads nothing");
        let normalise = t.acls("normalise", "User:normalise");
        assert!(
            allows(&normalise, AclResource::Topic, names::SEEN, "Read")
                && allows(&normalise, AclResource::Group, "sluice-normalise", "Read")
        );
        assert!(!allows(&normalise, AclResource::Group, "sluice-route", "Read"));
        for s in SERVICES {
            assert!(t.acls(s, "User:x").iter().all(|a| a.principal == "User:x"));
        }
    }
}
