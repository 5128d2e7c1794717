//! Every Kafka client of Sluice is built here, so each setting (brokers, security, timeouts, size
//! limits, transactional ids) lives in one place and no service crate depends on rdkafka.
//!
//! - [`base`], [`idempotent_producer`], [`read_committed_consumer`], [`transactional_producer`]:
//!   the librdkafka settings of every client;
//! - [`AckedProducer`]: ingest's writer, which answers only once the brokers confirmed a write
//!   and replaces itself when librdkafka declares it unusable;
//! - [`TransactionalWriter`]: a few records written together in one transaction (dead-letter's
//!   replays and their audit records);
//! - [`follow`]: reading topics from the beginning with `read_committed`;
//! - [`ClientLog`]: the context of every client, which logs a broker refusing this client's
//!   credentials or certificate as an ERROR an operator must act on.

use crate::config::{KafkaConfig, RuntimeConfig};
use crate::shutdown::Shutdown;
use crate::telemetry::{Throttle, runtime_metrics};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Headers, key framing and batch overhead of one record, kept free under
/// `runtime.kafka.max_record_bytes`.
pub const RECORD_OVERHEAD_BYTES: usize = 1024;

/// Whether a record with this key and value fits under `runtime.kafka.max_record_bytes`.
pub fn fits(cfg: &KafkaConfig, key: usize, value: usize) -> bool {
    key + value + RECORD_OVERHEAD_BYTES <= cfg.max_record_bytes
}

/// Base settings: brokers, security, and a client id naming the service.
pub fn base(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", client_id)
        .set("security.protocol", &cfg.security_protocol)
        // fail fast on a missing topic instead of auto-creating it with broker defaults
        .set("allow.auto.create.topics", "false")
        .set("message.max.bytes", cfg.max_record_bytes.max(1000).to_string());
    let optional = [
        ("sasl.mechanism", cfg.sasl_mechanism.as_deref()),
        ("sasl.username", cfg.sasl_username.as_deref()),
        ("sasl.password", cfg.sasl_password.as_ref().map(|p| p.expose())),
        ("ssl.ca.location", cfg.ssl_ca_location.as_deref()),
        ("ssl.certificate.location", cfg.ssl_certificate_location.as_deref()),
        ("ssl.key.location", cfg.ssl_key_location.as_deref()),
        ("ssl.key.password", cfg.ssl_key_password.as_ref().map(|p| p.expose())),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            c.set(key, v);
        }
    }
    c
}

/// An idempotent producer that waits for all in-sync replicas.
pub fn idempotent_producer(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut c = base(cfg, client_id);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", cfg.linger_ms.to_string())
        .set("compression.type", &cfg.compression)
        .set("message.timeout.ms", "30000");
    c
}

/// A transactional producer: `transactional.id` is `sluice-<client_id>`, stable per instance, so
/// a restarted instance fences its previous incarnation.
pub fn transactional_producer(cfg: &RuntimeConfig, client_id: &str) -> ClientConfig {
    let mut c = idempotent_producer(&cfg.kafka, client_id);
    c.set("transactional.id", format!("sluice-{client_id}"))
        .set("transaction.timeout.ms", cfg.transaction_timeout_ms.to_string());
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
        .set("fetch.wait.max.ms", cfg.fetch_wait_max_ms.to_string())
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (cfg.session_timeout_ms / 3).max(100).to_string());
    c
}

/// The context of every Sluice client: librdkafka's errors go to the log under the service's
/// name, a refused login or TLS handshake as an ERROR (the client retries, but only an operator
/// can fix credentials), other connection errors as WARN; each kind at most every 10 s.
#[derive(Clone, Copy)]
pub struct ClientLog {
    pub service: &'static str,
}

impl ClientContext for ClientLog {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(self.service, &error, reason);
    }
}

impl ConsumerContext for ClientLog {}

impl ProducerContext for ClientLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Whether librdkafka's error means the brokers refused this client's identity: a failed SASL
/// login, or a TLS handshake or certificate failure (under TLS 1.3 a refused client certificate
/// only shows up at the first read, as a transport error naming SSL).
pub fn is_refused_identity(error: &KafkaError, reason: &str) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
    ) || reason.contains("SSL")
        || reason.contains("certificate")
}

/// Logs one error reported by librdkafka (see [`ClientLog`]): each kind at most once per 10 s,
/// with how many were left out in between.
pub fn log_client_error(service: &'static str, error: &KafkaError, reason: &str) {
    static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
    static OTHER: Throttle = Throttle::new(Duration::from_secs(10));
    let refused = is_refused_identity(error, reason);
    if refused {
        runtime_metrics()
            .infrastructure_errors
            .with_label_values(&[service, "kafka_refused_identity"])
            .inc();
    }
    let throttle = if refused { &REFUSED } else { &OTHER };
    let Some(left_out) = throttle.check() else {
        return;
    };
    if refused {
        tracing::error!(
            service,
            error = %error,
            reason,
            left_out,
            "kafka refused this client's credentials or certificate: check runtime.kafka security settings{}",
            throttle.more(left_out)
        );
    } else {
        tracing::warn!(service, error = %error, reason, left_out, "kafka client error{}", throttle.more(left_out));
    }
}

/// Why a write was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Larger than a record may be (`runtime.kafka.max_record_bytes`, or the broker's limit):
    /// no resend can succeed.
    #[error("record larger than a kafka record may be")]
    TooLarge,
    /// Kafka did not confirm in time, or refused it: the sender should resend.
    #[error("kafka did not confirm the write: {0}")]
    NotConfirmed(KafkaError),
}

/// An idempotent `acks=all` producer whose [`send`](AckedProducer::send) returns only when the
/// brokers confirmed the write (or it failed), within `delivery_timeout`.
pub struct AckedProducer {
    cfg: KafkaConfig,
    service: &'static str,
    client_id: String,
    delivery_timeout: Duration,
    /// Replaced when librdkafka reports a fatal producer error (an idempotent producer is
    /// unusable after one, for example when fenced after its in-flight writes timed out).
    producer: RwLock<FutureProducer<ClientLog>>,
}

impl AckedProducer {
    pub fn new(cfg: &KafkaConfig, service: &'static str, client_id: &str, delivery_timeout: Duration) -> Result<AckedProducer, KafkaError> {
        let producer = Self::create(cfg, service, client_id, delivery_timeout)?;
        Ok(AckedProducer {
            cfg: cfg.clone(),
            service,
            client_id: client_id.to_owned(),
            delivery_timeout,
            producer: RwLock::new(producer),
        })
    }

    fn create(
        cfg: &KafkaConfig,
        service: &'static str,
        client_id: &str,
        delivery_timeout: Duration,
    ) -> Result<FutureProducer<ClientLog>, KafkaError> {
        idempotent_producer(cfg, client_id)
            .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
            .create_with_context(ClientLog { service })
    }

    fn current(&self) -> FutureProducer<ClientLog> {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes one record and waits for the brokers' confirmation; returns where it was written
    /// (partition, offset). A record that does not [`fits`] is [`SendError::TooLarge`] without
    /// being tried.
    pub async fn send(&self, topic: &str, key: &[u8], value: &[u8], headers: &[(&str, &[u8])]) -> Result<(i32, i64), SendError> {
        if !fits(&self.cfg, key.len(), value.len()) {
            return Err(SendError::TooLarge);
        }
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: Some(*v) });
        }
        let rec = FutureRecord::to(topic).key(key).payload(value).headers(h);
        let producer = self.current();
        match producer.send(rec, self.delivery_timeout).await {
            Ok(delivered) => Ok((delivered.partition, delivered.offset)),
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => Err(SendError::TooLarge),
            Err((e, _)) => {
                self.replace_if_broken(&producer, &e);
                Err(SendError::NotConfirmed(e))
            }
        }
    }

    /// After a fatal error librdkafka refuses every further write from that producer, and a
    /// producer whose identity the broker no longer accepts (fenced, stale epoch, unknown id,
    /// sequence out of order; seen after writes timed out during a broker outage) keeps
    /// failing: build a new one (once, whichever caller notices first). The writes that failed
    /// were answered "resend"; a resend that was in fact written is de-duplicated downstream.
    fn replace_if_broken(&self, failed: &FutureProducer<ClientLog>, error: &KafkaError) {
        use RDKafkaErrorCode as Code;
        let identity_lost = matches!(
            error.rdkafka_error_code(),
            Some(
                Code::ProducerFenced
                    | Code::InvalidProducerEpoch
                    | Code::OutOfOrderSequenceNumber
                    | Code::UnknownProducerId
                    | Code::InvalidProducerIdMapping
            )
        );
        if !identity_lost && failed.client().fatal_error().is_none() {
            return;
        }
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(current.client(), failed.client()) {
            return; // another caller already replaced it
        }
        match Self::create(&self.cfg, self.service, &self.client_id, self.delivery_timeout) {
            Ok(p) => {
                tracing::warn!(service = self.service, code = ?error.rdkafka_error_code(), "kafka producer lost its identity, replaced it with a new one");
                runtime_metrics()
                    .infrastructure_errors
                    .with_label_values(&[self.service, "producer_replaced"])
                    .inc();
                *current = p;
            }
            Err(e) => tracing::error!(service = self.service, error = %e, "kafka producer could not be recreated"),
        }
    }

    /// Whether the brokers answer a metadata request for `topic` with its partitions (blocking:
    /// call it from a blocking thread).
    pub fn reachable(&self, topic: &str, timeout: Duration) -> bool {
        self.current()
            .client()
            .fetch_metadata(Some(topic), timeout)
            .is_ok_and(|m| m.topics().iter().any(|t| t.error().is_none() && !t.partitions().is_empty()))
    }
}

/// One record for a [`TransactionalWriter`].
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: Vec<(&'a str, &'a [u8])>,
}

/// A transactional producer for a service that writes a few records together now and then
/// (not a consume-transform-produce stage: that is [`crate::transactional`]).
pub struct TransactionalWriter {
    service: &'static str,
    producer: Mutex<BaseProducer<ClientLog>>,
}

impl TransactionalWriter {
    /// Creates the producer (`transactional.id` `sluice-<service>-<instance_id>`) and
    /// initialises transactions, fencing a previous incarnation; retries with backoff until it
    /// succeeds, shutdown (`Ok(None)`) or a fatal error. Blocking.
    pub fn start(
        cfg: &RuntimeConfig,
        service: &'static str,
        shutdown: &Shutdown,
    ) -> Result<Option<TransactionalWriter>, crate::transactional::RuntimeError> {
        TransactionalWriter::start_as(cfg, service, &format!("{service}-{}", cfg.instance_id), shutdown)
    }

    /// As [`TransactionalWriter::start`], with the client id (`transactional.id`
    /// `sluice-<client_id>`) given: a second writer in a service that already has a
    /// transactional producer must not fence it. Keep `<service>-` as its prefix (the service's
    /// ACLs grant that transactional-id prefix).
    pub fn start_as(
        cfg: &RuntimeConfig,
        service: &'static str,
        client_id: &str,
        shutdown: &Shutdown,
    ) -> Result<Option<TransactionalWriter>, crate::transactional::RuntimeError> {
        use crate::transactional::RuntimeError;
        let producer: BaseProducer<ClientLog> = transactional_producer(cfg, client_id)
            .create_with_context(ClientLog { service })
            .map_err(RuntimeError::Client)?;
        if !crate::transactional::init_transactions(&producer, service, shutdown)? {
            return Ok(None);
        }
        Ok(Some(TransactionalWriter {
            service,
            producer: Mutex::new(producer),
        }))
    }

    /// Writes `records` in one transaction: all of them or, on any error, none (the
    /// transaction is aborted). Blocking.
    pub fn write(&self, records: &[Record<'_>], timeout: Duration) -> Result<(), KafkaError> {
        let p = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        p.begin_transaction()?;
        let send = || -> Result<(), KafkaError> {
            for r in records {
                let mut headers = OwnedHeaders::new();
                for (k, v) in &r.headers {
                    headers = headers.insert(Header { key: k, value: Some(*v) });
                }
                let mut rec = BaseRecord::to(r.topic).payload(r.value).headers(headers);
                if let Some(k) = r.key {
                    rec = rec.key(k);
                }
                p.send(rec).map_err(|(e, _)| e)?;
            }
            // one deadline for the whole write: callers promise an answer within `timeout`
            let deadline = std::time::Instant::now() + timeout;
            crate::transactional::serve_deliveries(&p, timeout);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            p.commit_transaction(left.max(Duration::from_millis(1)))
        };
        send().inspect_err(|_| {
            if let Err(e) = crate::transactional::abort(&p, self.service) {
                tracing::warn!(service = self.service, error = %e, "aborting a transaction failed");
            }
        })
    }
}

/// What [`follow`] hands over.
pub enum Followed<'a> {
    /// Partitions are assigned and nothing new arrived within a poll: caught up for now.
    Idle,
    Record {
        topic: &'a str,
        value: &'a [u8],
    },
}

/// Reads `topics` from the beginning with `read_committed` in its own consumer group `group`
/// (every caller sees everything), handing each record and each idle poll to `f`, until
/// shutdown. Blocking: run it on its own thread.
pub fn follow(
    cfg: &KafkaConfig,
    service: &'static str,
    group: &str,
    topics: &[&str],
    shutdown: &Shutdown,
    mut f: impl FnMut(Followed<'_>),
) -> Result<(), KafkaError> {
    let consumer: BaseConsumer<ClientLog> = read_committed_consumer(cfg, service, group).create_with_context(ClientLog { service })?;
    consumer.subscribe(topics)?;
    while !shutdown.is_triggered() {
        match consumer.poll(Duration::from_millis(200)) {
            // caught up only once partitions are assigned: a client the brokers refuse (or
            // cannot reach) also polls nothing
            None if consumer.assignment().is_ok_and(|a| a.count() > 0) => f(Followed::Idle),
            None => {}
            Some(Err(e)) => tracing::debug!(service, error = %e, "consumer error"),
            Some(Ok(m)) => {
                if let Some(value) = m.payload() {
                    f(Followed::Record { topic: m.topic(), value });
                }
            }
        }
    }
    Ok(())
}
