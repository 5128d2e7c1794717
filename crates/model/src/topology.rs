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
    pub const DL_INGEST: &str = "deadletter.ingest.v1";
    pub const DL_NORMALISE: &str = "deadletter.normalise.v1";
    pub const DL_MATCH: &str = "deadletter.identifier-match.v1";
    pub const DL_ROUTE: &str = "deadletter.route.v1";
    pub const DL_AUDIT: &str = "deadletter.audit.v1";
    pub const ALL: &[&str] = &[
        RAW,
        FHIR_RAW,
        NORMALISED,
        SEEN,
        FHIR,
        MATCHED,
        LINKS,
        REVIEW,
        DL_INGEST,
        DL_NORMALISE,
        DL_MATCH,
        DL_ROUTE,
        DL_AUDIT,
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
