//! Client settings shared by every Kafka client of Sluice.

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

/// Base settings: brokers, security, and a client id naming the service.
pub fn base(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", client_id)
        .set("security.protocol", &cfg.security_protocol)
        // fail fast on a missing topic instead of auto-creating it with broker defaults
        .set("allow.auto.create.topics", "false")
        .set("message.max.bytes", cfg.max_record_bytes.max(1000).to_string());
    if let Some(m) = &cfg.sasl_mechanism {
        c.set("sasl.mechanism", m);
    }
    if let Some(u) = &cfg.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(p) = &cfg.sasl_password {
        c.set("sasl.password", p.expose());
    }
    if let Some(ca) = &cfg.ssl_ca_location {
        c.set("ssl.ca.location", ca);
    }
    c
}

/// An idempotent producer that waits for all in-sync replicas.
pub fn idempotent_producer(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = base(cfg, client_id);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    c
}

/// A consumer that reads only committed records and never commits on its own.
pub fn read_committed_consumer(cfg: &KafkaConfig, client_id: &str, group_id: &str) -> ClientConfig {
    let mut c = base(cfg, client_id);
    c.set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (cfg.session_timeout_ms / 3).max(100).to_string());
    c
}
