//! Layered configuration: defaults in code, then a YAML file, then environment variables
//! (`SLUICE_` prefix, `__` between levels, e.g. `SLUICE_RUNTIME__KAFKA__BOOTSTRAP_SERVERS`).
//! Unknown keys are errors, and errors name the field.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A secret: `Debug` and `Display` print a mask.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("****")
    }
}

/// How to reach Kafka.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub ssl_ca_location: Option<String>,
    /// Consumer group session timeout. 6 s keeps group joins fast (a few seconds instead of
    /// ~23 s with librdkafka's 45 s default against our development broker) and still tolerates
    /// ordinary pauses; raise it where brokers are far away.
    pub session_timeout_ms: u32,
    /// The largest record a service writes (librdkafka `message.max.bytes`). Keep it at or
    /// below the topics' `max.message.bytes` (Kafka's default allows about 1 MB). Input whose
    /// record would be larger is refused with a reason code and kept (truncated at ingest)
    /// instead of being retried for ever.
    pub max_record_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            session_timeout_ms: 6000,
            max_record_bytes: 1_000_000,
        }
    }
}

/// Settings every service shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub kafka: KafkaConfig,
    pub schema_registry_url: String,
    pub schema_registry_username: Option<String>,
    pub schema_registry_password: Option<Secret>,
    /// Stable per instance: part of the transactional id, so a restarted instance fences its
    /// previous incarnation.
    pub instance_id: String,
    pub batch_max_records: usize,
    pub batch_max_ms: u64,
    pub transaction_timeout_ms: u64,
    /// How long SIGTERM/SIGINT waits for in-flight work before giving up.
    pub drain_grace_secs: u64,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub http_addr: String,
    /// json or text
    pub log_format: String,
    /// The longest one record may take to process. An input over it is dead-lettered as
    /// `processing_budget_exceeded` (its outputs dropped) instead of holding the stage and every
    /// patient behind it; the mappers are linear in input size, so this is a backstop.
    pub process_budget_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            kafka: KafkaConfig::default(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            schema_registry_username: None,
            schema_registry_password: None,
            instance_id: "0".into(),
            batch_max_records: 500,
            batch_max_ms: 100,
            transaction_timeout_ms: 60_000,
            drain_grace_secs: 10,
            process_budget_ms: 5_000,
            http_addr: "127.0.0.1:9464".into(),
            log_format: "text".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is invalid: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration field {field} is invalid: {why}")]
    Invalid { field: &'static str, why: &'static str },
}

impl RuntimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, why| Err(ConfigError::Invalid { field, why });
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return invalid("runtime.kafka.bootstrap_servers", "must not be empty");
        }
        if !matches!(
            self.kafka.security_protocol.as_str(),
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
        ) {
            return invalid(
                "runtime.kafka.security_protocol",
                "must be plaintext, ssl, sasl_plaintext or sasl_ssl",
            );
        }
        if self.batch_max_records == 0 {
            return invalid("runtime.batch_max_records", "must be at least 1");
        }
        if self.instance_id.is_empty()
            || !self
                .instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return invalid("runtime.instance_id", "must be non-empty letters, digits, '-', '_' or '.'");
        }
        if !matches!(self.log_format.as_str(), "json" | "text") {
            return invalid("runtime.log_format", "must be json or text");
        }
        Ok(())
    }
}

/// Loads a configuration: `T::default()`, then the file (if given), then `SLUICE_` variables.
pub fn load<T: Serialize + DeserializeOwned + Default>(file: Option<&Path>) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(f) = file {
        fig = fig.merge(Yaml::file_exact(f));
    }
    fig = fig.merge(Env::prefixed("SLUICE_").split("__"));
    fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_unknown_fields_rejected() {
        let c = KafkaConfig {
            sasl_password: Some(Secret::new("hunter2")),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "kafka:\n  bootstrap_servers: a:1\n  bogus: 1\n").expect("write");
        let err = load::<RuntimeConfig>(Some(&f)).expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        std::fs::write(&f, "batch_max_records: 0\n").expect("write");
        let c = load::<RuntimeConfig>(Some(&f)).expect("loads");
        assert!(c.validate().expect_err("invalid").to_string().contains("batch_max_records"));
    }
}
