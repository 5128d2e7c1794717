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
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (required with sasl_plaintext and sasl_ssl)
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA(s) that signed the brokers' certificates (default: the system's)
    pub ssl_ca_location: Option<String>,
    /// PEM client certificate for mutual TLS (with `ssl_key_location`)
    pub ssl_certificate_location: Option<String>,
    /// PEM private key of the client certificate
    pub ssl_key_location: Option<String>,
    /// Password of an encrypted `ssl_key_location`
    pub ssl_key_password: Option<Secret>,
    /// Consumer group session timeout. 6 s keeps group joins fast (a few seconds instead of
    /// ~23 s with librdkafka's 45 s default against our development broker) and still tolerates
    /// ordinary pauses; raise it where brokers are far away.
    pub session_timeout_ms: u32,
    /// The largest record a service writes (librdkafka `message.max.bytes`). Keep it at or
    /// below the topics' `max.message.bytes` (Kafka's default allows about 1 MB). Input whose
    /// record would be larger is refused with a reason code and kept (truncated at ingest)
    /// instead of being retried for ever.
    pub max_record_bytes: usize,
    /// How long a consumer's fetch may wait at the broker for new records (librdkafka
    /// `fetch.wait.max.ms`). Each hop of the pipeline can wait this long before it sees a
    /// committed record, so it bounds end-to-end latency; lower means more idle fetch requests.
    /// librdkafka's 500 ms default cost about 300 ms of end-to-end p99 in `sluice bench
    /// pipeline`; 50 ms costs twenty small requests a second per idle consumer.
    pub fetch_wait_max_ms: u32,
    /// How long a producer holds records to batch them (librdkafka `linger.ms`).
    pub linger_ms: u32,
    /// How producers compress record batches (librdkafka `compression.type`): `lz4` (the
    /// default), `zstd`, `snappy`, `gzip` or `none`. Consumers decompress whatever they are
    /// given, so this can differ between services and change at any time. A FHIR bundle is
    /// JSON, a third of the bytes the pipeline writes, and compresses about fourfold; on the
    /// two-core bench, lz4 took the broker's CPU per pipeline message from about 180 to a
    /// median of 151 µs without adding to the services' own.
    pub compression: String,
}

/// What `kafka.compression` may be.
pub const COMPRESSION_CODECS: [&str; 5] = ["lz4", "zstd", "snappy", "gzip", "none"];

const FETCH_WAIT_MAX_MS: u32 = 50;

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            session_timeout_ms: 6000,
            max_record_bytes: 1_000_000,
            fetch_wait_max_ms: FETCH_WAIT_MAX_MS,
            linger_ms: 2,
            compression: "lz4".into(),
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
    /// A transaction (batch) commits when it holds this many inputs, ...
    pub batch_max_records: usize,
    /// ... or is this old, ...
    pub batch_max_ms: u64,
    /// ... or no further input has arrived for this long. Under light load a batch is then a
    /// few records committed within milliseconds (low latency); under heavy load records keep
    /// arriving and batches grow to the limits above (throughput). 0 turns it off.
    pub batch_idle_ms: u64,
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
    /// OpenTelemetry trace export (off unless `tracing.otlp_endpoint` is set).
    pub tracing: TracingConfig,
}

/// Where and how much to export traces. Spans carry only bounded values (service, topic,
/// partition, offset, outcome and reason codes), never message content; see `docs/runbook.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP collector's base URL. With `http/protobuf`, for example
    /// `http://otel-collector:4318` (spans go to `<endpoint>/v1/traces`; a URL already ending
    /// in `/v1/traces` is used as it is); with `grpc`, for example `http://otel-collector:4317`
    /// (used as it is; `https://` for TLS against the web PKI roots). Empty: no export, the
    /// default. Headers for the collector (an API key) come from the standard
    /// `OTEL_EXPORTER_OTLP_HEADERS` variable, with either transport.
    pub otlp_endpoint: String,
    /// `http/protobuf` (the default; collectors serve it on 4318) or `grpc` (on 4317).
    pub otlp_protocol: String,
    /// The fraction of new traces that are sampled, 0.0 to 1.0. A trace is started per message
    /// at ingest; every later stage follows the decision carried in the record's `traceparent`,
    /// so a message's trace is exported whole or not at all.
    pub sample_ratio: f64,
    /// How long one export to the collector may take before it is abandoned (spans dropped,
    /// never the records: export runs beside the pipeline, not in it).
    pub export_timeout_ms: u64,
}

/// The OTLP transports [`TracingConfig::otlp_protocol`] accepts.
pub const OTLP_HTTP_PROTOBUF: &str = "http/protobuf";
pub const OTLP_GRPC: &str = "grpc";

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            otlp_protocol: OTLP_HTTP_PROTOBUF.into(),
            sample_ratio: 1.0,
            export_timeout_ms: 10_000,
        }
    }
}

impl TracingConfig {
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// Where spans are sent: the URL they are posted to (http/protobuf), or the collector's
    /// gRPC endpoint.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim();
        if self.otlp_protocol == OTLP_GRPC || base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{}/v1/traces", base.trim_end_matches('/'))
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, why| Err(ConfigError::Invalid { field, why });
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return invalid("runtime.tracing.sample_ratio", "must be between 0.0 and 1.0");
        }
        match self.otlp_protocol.as_str() {
            OTLP_HTTP_PROTOBUF | OTLP_GRPC => {}
            _ => return invalid("runtime.tracing.otlp_protocol", "must be http/protobuf or grpc"),
        }
        let endpoint = self.otlp_endpoint.trim();
        let url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !endpoint.is_empty() && !url {
            return invalid("runtime.tracing.otlp_endpoint", "must be an http:// or https:// URL");
        }
        if self.export_timeout_ms == 0 {
            return invalid("runtime.tracing.export_timeout_ms", "must be at least 1");
        }
        Ok(())
    }
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
            batch_idle_ms: 5,
            transaction_timeout_ms: 60_000,
            drain_grace_secs: 10,
            process_budget_ms: 5_000,
            http_addr: "127.0.0.1:9464".into(),
            log_format: "text".into(),
            tracing: TracingConfig::default(),
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

impl KafkaConfig {
    /// The security settings agree with each other. Files are not opened here (a configuration
    /// may be checked where they are not mounted); the client names a missing file at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, why| Err(ConfigError::Invalid { field, why });
        if self.bootstrap_servers.trim().is_empty() {
            return invalid("runtime.kafka.bootstrap_servers", "must not be empty");
        }
        if !COMPRESSION_CODECS.contains(&self.compression.as_str()) {
            return invalid("runtime.kafka.compression", "must be lz4, zstd, snappy, gzip or none");
        }
        let protocol = self.security_protocol.as_str();
        if !matches!(protocol, "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl") {
            return invalid(
                "runtime.kafka.security_protocol",
                "must be plaintext, ssl, sasl_plaintext or sasl_ssl",
            );
        }
        let sasl = protocol.starts_with("sasl_");
        let tls = protocol.ends_with("ssl");
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        match self.sasl_mechanism.as_deref() {
            Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") if sasl => {
                if !set(&self.sasl_username) {
                    return invalid("runtime.kafka.sasl_username", "is required with a sasl_ security_protocol");
                }
                if self.sasl_password.as_ref().is_none_or(|p| p.expose().is_empty()) {
                    return invalid("runtime.kafka.sasl_password", "is required with a sasl_ security_protocol");
                }
            }
            Some(_) if sasl => {
                return invalid("runtime.kafka.sasl_mechanism", "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
            }
            None if sasl => return invalid("runtime.kafka.sasl_mechanism", "is required with a sasl_ security_protocol"),
            _ => {}
        }
        if !sasl && (self.sasl_mechanism.is_some() || self.sasl_username.is_some() || self.sasl_password.is_some()) {
            return invalid(
                "runtime.kafka.security_protocol",
                "must be sasl_plaintext or sasl_ssl when sasl_* settings are given",
            );
        }
        let tls_fields = [
            ("runtime.kafka.ssl_ca_location", set(&self.ssl_ca_location)),
            ("runtime.kafka.ssl_certificate_location", set(&self.ssl_certificate_location)),
            ("runtime.kafka.ssl_key_location", set(&self.ssl_key_location)),
            ("runtime.kafka.ssl_key_password", self.ssl_key_password.is_some()),
        ];
        if let Some((field, _)) = tls_fields.iter().find(|(_, given)| *given && !tls) {
            return invalid(field, "is only used with security_protocol ssl or sasl_ssl");
        }
        if set(&self.ssl_certificate_location) != set(&self.ssl_key_location) {
            let field = if set(&self.ssl_key_location) {
                "runtime.kafka.ssl_certificate_location"
            } else {
                "runtime.kafka.ssl_key_location"
            };
            return invalid(
                field,
                "a client certificate needs both ssl_certificate_location and ssl_key_location",
            );
        }
        if self.ssl_key_password.is_some() && !set(&self.ssl_key_location) {
            return invalid("runtime.kafka.ssl_key_password", "is only used with ssl_key_location");
        }
        Ok(())
    }
}

impl RuntimeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, why| Err(ConfigError::Invalid { field, why });
        self.kafka.validate()?;
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
        self.tracing.validate()?;
        Ok(())
    }
}

/// Loads a configuration: `T::default()`, then the file (if given), then `SLUICE_` variables.
pub fn load<T: Serialize + DeserializeOwned + Default>(file: Option<&Path>) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(f) = file {
        fig = fig.merge(Yaml::file_exact(f));
    }
    // SLUICE_CORPUS and SLUICE_TEST_* belong to the project's tests, not to any service
    let not_settings = |k: &figment::value::UncasedStr| {
        let k = k.as_str().to_ascii_lowercase();
        k == "corpus" || k.starts_with("test_")
    };
    fig = fig.merge(Env::prefixed("SLUICE_").filter(move |k| !not_settings(k)).split("__"));
    fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))
}

/// Kafka settings from `SLUICE_RUNTIME__KAFKA__*` variables alone (the ones every service
/// reads), for commands that are not a service, such as `sluice topology apply`.
pub fn kafka_from_env() -> Result<KafkaConfig, ConfigError> {
    let cfg: KafkaConfig = Figment::from(Serialized::defaults(KafkaConfig::default()))
        .merge(Env::prefixed("SLUICE_RUNTIME__KAFKA__"))
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail decides the closure's type
    fn secrets_are_masked_and_unknown_fields_rejected() {
        let c = KafkaConfig {
            sasl_password: Some(Secret::new("hunter2")),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        // in a Jail: another test of this module sets SLUICE_ variables (in its own Jail), and
        // load() reads the environment; Jails take turns
        figment::Jail::expect_with(|_| {
            let dir = tempfile::tempdir().expect("tempdir");
            let f = dir.path().join("c.yaml");
            std::fs::write(&f, "kafka:\n  bootstrap_servers: a:1\n  bogus: 1\n").expect("write");
            let err = load::<RuntimeConfig>(Some(&f)).expect_err("unknown field");
            assert!(err.to_string().contains("bogus"), "{err}");
            std::fs::write(&f, "batch_max_records: 0\n").expect("write");
            let c = load::<RuntimeConfig>(Some(&f)).expect("loads");
            assert!(c.validate().expect_err("invalid").to_string().contains("batch_max_records"));
            Ok(())
        });
    }

    #[test]
    fn compression_is_lz4_unless_set_and_only_a_codec_librdkafka_knows() {
        let c = KafkaConfig::default();
        assert_eq!(c.compression, "lz4");
        let producer = crate::kafka::idempotent_producer(&c, "t");
        assert_eq!(producer.get("compression.type"), Some("lz4"));
        for codec in COMPRESSION_CODECS {
            let c = KafkaConfig {
                compression: codec.into(),
                ..Default::default()
            };
            c.validate().expect("a known codec");
            assert_eq!(crate::kafka::idempotent_producer(&c, "t").get("compression.type"), Some(codec));
        }
        let bad = KafkaConfig {
            compression: "lzma".into(),
            ..Default::default()
        };
        let err = bad.validate().expect_err("unknown codec");
        assert!(err.to_string().contains("runtime.kafka.compression"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail decides the closure's type
    fn the_tests_own_variables_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_CORPUS", "/somewhere/corpus");
            jail.set_env("SLUICE_TEST_BROKER", "kafka");
            jail.set_env("SLUICE_BATCH_MAX_RECORDS", "7");
            let c = load::<RuntimeConfig>(None).expect("loads beside the tests' variables");
            assert_eq!(c.batch_max_records, 7);
            jail.set_env("SLUICE_BOGUS", "1");
            assert!(load::<RuntimeConfig>(None).is_err(), "other unknown settings are still refused");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail decides the closure's type
    fn tracing_is_off_by_default_and_checked_when_on() {
        let off = RuntimeConfig::default();
        assert!(!off.tracing.enabled());
        off.validate().expect("the default is valid");
        figment::Jail::expect_with(|_| {
            let dir = tempfile::tempdir().expect("tempdir");
            let f = dir.path().join("c.yaml");
            std::fs::write(&f, "tracing:\n  otlp_endpoint: http://collector:4318/\n  sample_ratio: 0.25\n").expect("write");
            let c = load::<RuntimeConfig>(Some(&f)).expect("loads");
            assert!(c.tracing.enabled());
            assert_eq!(c.tracing.traces_url(), "http://collector:4318/v1/traces");
            assert_eq!(c.tracing.sample_ratio, 0.25);
            c.validate().expect("valid");
            Ok(())
        });
        let full = TracingConfig {
            otlp_endpoint: "https://c.example/v1/traces".into(),
            ..Default::default()
        };
        assert_eq!(full.traces_url(), "https://c.example/v1/traces");
        // grpc takes the collector's endpoint as it is (no http path)
        let grpc = TracingConfig {
            otlp_endpoint: "http://collector:4317".into(),
            otlp_protocol: OTLP_GRPC.into(),
            ..Default::default()
        };
        grpc.validate().expect("valid");
        assert_eq!(grpc.traces_url(), "http://collector:4317");
        for (bad, field) in [
            (
                TracingConfig {
                    sample_ratio: 1.5,
                    ..Default::default()
                },
                "runtime.tracing.sample_ratio",
            ),
            (
                TracingConfig {
                    otlp_protocol: "http/json".into(),
                    ..Default::default()
                },
                "runtime.tracing.otlp_protocol",
            ),
            (
                TracingConfig {
                    otlp_endpoint: "collector:4318".into(),
                    ..Default::default()
                },
                "runtime.tracing.otlp_endpoint",
            ),
        ] {
            let e = bad.validate().expect_err("invalid").to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    fn kafka_error(k: KafkaConfig) -> String {
        k.validate().expect_err("invalid").to_string()
    }

    #[test]
    fn security_settings_are_checked_and_errors_name_the_field() {
        let scram = KafkaConfig {
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("ingest".into()),
            sasl_password: Some(Secret::new("pw")),
            ssl_ca_location: Some("/etc/kafka/ca.pem".into()),
            ..Default::default()
        };
        scram.validate().expect("scram over tls is valid");
        let mtls = KafkaConfig {
            security_protocol: "ssl".into(),
            ssl_certificate_location: Some("/c.pem".into()),
            ssl_key_location: Some("/k.pem".into()),
            ssl_key_password: Some(Secret::new("kp")),
            ..Default::default()
        };
        mtls.validate().expect("mutual tls is valid");
        assert!(!format!("{mtls:?}").contains("\"kp\""), "the key password is masked");
        let cases = [
            (
                KafkaConfig {
                    sasl_mechanism: Some("GSSAPI".into()),
                    ..scram.clone()
                },
                "runtime.kafka.sasl_mechanism",
            ),
            (
                KafkaConfig {
                    sasl_mechanism: None,
                    ..scram.clone()
                },
                "runtime.kafka.sasl_mechanism",
            ),
            (
                KafkaConfig {
                    sasl_username: None,
                    ..scram.clone()
                },
                "runtime.kafka.sasl_username",
            ),
            (
                KafkaConfig {
                    sasl_password: Some(Secret::new("")),
                    ..scram.clone()
                },
                "runtime.kafka.sasl_password",
            ),
            (
                KafkaConfig {
                    security_protocol: "ssl".into(),
                    ..scram.clone()
                },
                "runtime.kafka.security_protocol",
            ),
            (
                KafkaConfig {
                    ssl_key_location: None,
                    ..mtls.clone()
                },
                "runtime.kafka.ssl_key_location",
            ),
            (
                KafkaConfig {
                    ssl_certificate_location: None,
                    ..mtls.clone()
                },
                "runtime.kafka.ssl_certificate_location",
            ),
            (
                KafkaConfig {
                    security_protocol: "plaintext".into(),
                    ..mtls.clone()
                },
                "runtime.kafka.ssl_certificate_location",
            ),
            (
                KafkaConfig {
                    security_protocol: "tls".into(),
                    ..mtls
                },
                "runtime.kafka.security_protocol",
            ),
        ];
        for (k, field) in cases {
            let e = kafka_error(k);
            assert!(e.contains(field), "{e}");
        }
    }
}
