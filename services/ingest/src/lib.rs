//! ingest: an MLLP listener that writes every received HL7 v2 message to Kafka.
//!
//! Guarantees:
//! - a sender gets `AA` only after the broker has acknowledged the raw message (idempotent
//!   producer, `acks=all`): an ACK means the message is durably in `hl7v2.raw.v1`;
//! - a message that cannot be accepted (unparseable MSH, missing MSH-9/MSH-10, oversized frame)
//!   gets `AR` with an ERR segment and its bytes are kept in `deadletter.ingest.v1`; if even
//!   that write fails the sender gets `AR` with error 207 and should resend;
//! - if Kafka is unavailable the sender gets `AR` (207, application internal error) and
//!   nothing is acknowledged; the connection stays open;
//! - the raw bytes are kept exactly as received (MLLP framing removed); segment separators may
//!   be CR, LF or CRLF.

pub mod ack;
pub mod fhir_http;
pub mod mllp;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use sluice_hl7::Message;
use sluice_model::topology::names;
use sluice_model::{DeadLetter, MshSummary, RawMessage};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{self, Health, Readiness};
use sluice_runtime::{kafka, now_micros, trace};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub const SERVICE: &str = "ingest";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub listen_addr: String,
    /// Name of this listener in the raw record and metrics (keep it to a small set).
    pub listener_name: String,
    pub max_frame_bytes: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    /// How long a message may wait for Kafka to confirm it before the sender gets `AR` (207)
    /// and is asked to resend. Keep it below the senders' own ACK timeout.
    pub ack_timeout_ms: u64,
    /// Where the FHIR R4 HTTP endpoint (`POST /fhir`, `POST /fhir/{type}`) listens; empty: off.
    pub fhir_listen_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runtime: RuntimeConfig::default(),
            listen_addr: "127.0.0.1:2575".into(),
            listener_name: "mllp".into(),
            max_frame_bytes: 16 * 1024 * 1024,
            idle_timeout_secs: 300,
            max_connections: 1024,
            ack_timeout_ms: 20_000,
            fhir_listen_addr: String::new(),
        }
    }
}

pub struct Metrics {
    pub messages: prometheus::IntCounterVec,
    pub ack_seconds: prometheus::HistogramVec,
    pub connections: prometheus::IntGaugeVec,
    pub bytes: prometheus::IntCounterVec,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        messages: telemetry::counter(
            "sluice_ingest_messages_total",
            "messages received, by listener and result (accepted, rejected, failed)",
            &["listener", "result"],
        ),
        ack_seconds: telemetry::histogram(
            "sluice_ingest_ack_duration_seconds",
            "time from a complete frame to its ACK being written",
            &["listener"],
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
        ),
        connections: telemetry::gauge("sluice_ingest_connections", "open MLLP connections", &["listener"]),
        bytes: telemetry::counter("sluice_ingest_received_bytes_total", "payload bytes received", &["listener"]),
    })
}

/// What the listener needs to answer one message.
pub struct Ingest {
    pub(crate) cfg: Config,
    /// Replaced when librdkafka reports a fatal producer error (an idempotent producer is
    /// unusable after one, for example when fenced after its in-flight writes timed out).
    producer: std::sync::RwLock<FutureProducer>,
    pub(crate) store: Arc<SchemaStore>,
    readiness: Readiness,
}

/// Headers, key framing and batch overhead of one record, kept free under the size limit.
pub(crate) const RECORD_OVERHEAD: usize = 1024;

/// Whether a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// Larger than a record may be: refuse the input (no resend can succeed).
    TooLarge,
    /// Kafka did not confirm: the sender resends.
    No,
}

/// The result of handling one frame: the ACK to send.
pub struct Handled {
    pub ack: Vec<u8>,
    pub result: &'static str,
}

impl Ingest {
    pub async fn new(cfg: Config, health: &Health, shutdown: &Shutdown) -> anyhow::Result<Arc<Ingest>> {
        cfg.runtime.validate()?;
        let store = sluice_runtime::stage::schema_store(&cfg.runtime)?;
        sluice_runtime::stage::register_with_retry(&store, SERVICE, shutdown).await?;
        if cfg.ack_timeout_ms < 1_000 {
            anyhow::bail!("configuration field ack_timeout_ms is invalid: must be at least 1000");
        }
        let producer = make_producer(&cfg)?;
        let readiness = health.service(SERVICE);
        Ok(Arc::new(Ingest {
            cfg,
            producer: std::sync::RwLock::new(producer),
            store,
            readiness,
        }))
    }

    /// Writes one record and waits for the broker's confirmation. A record larger than a
    /// record may be (`runtime.kafka.max_record_bytes`, or the broker's limit) is
    /// [`Written::TooLarge`] without being tried: no resend could ever succeed.
    pub(crate) async fn produce(&self, topic: &str, key: &[u8], value: &[u8], tp: &str) -> Written {
        if value.len() + key.len() + RECORD_OVERHEAD > self.cfg.runtime.kafka.max_record_bytes {
            return Written::TooLarge;
        }
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: trace::HEADER,
            value: Some(tp.as_bytes()),
        });
        let rec = FutureRecord::to(topic).key(key).payload(value).headers(headers);
        let producer = self.producer();
        match producer.send(rec, Duration::from_millis(self.cfg.ack_timeout_ms)).await {
            Ok(_) => {
                self.readiness.set(true);
                Written::Yes
            }
            Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge) => {
                tracing::warn!(topic, "record larger than the broker accepts");
                Written::TooLarge
            }
            Err((e, _)) => {
                // the error names the broker-side cause only; the record is not logged
                tracing::warn!(topic, error = %e, "write to kafka failed, answering AR 207");
                self.replace_if_broken(&producer, &e);
                self.readiness.set(false);
                Written::No
            }
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a fatal error librdkafka refuses every further write from that producer, and a
    /// producer whose identity the broker no longer accepts (fenced, stale epoch, unknown id,
    /// sequence out of order; seen after writes timed out during a broker outage) keeps
    /// failing: build a new one (once, whichever connection notices first). The senders whose
    /// writes failed got AR 207 and resend; a resend that was in fact written is
    /// de-duplicated downstream by its event id.
    fn replace_if_broken(&self, failed: &FutureProducer, error: &rdkafka::error::KafkaError) {
        use rdkafka::types::RDKafkaErrorCode as Code;
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
            return; // another connection already replaced it
        }
        match make_producer(&self.cfg) {
            Ok(p) => {
                tracing::warn!(code = ?error.rdkafka_error_code(), "kafka producer lost its identity, replaced it with a new one");
                sluice_runtime::telemetry::runtime_metrics()
                    .infrastructure_errors
                    .with_label_values(&[SERVICE, "producer_replaced"])
                    .inc();
                *current = p;
            }
            Err(e) => tracing::error!(error = %e, "kafka producer could not be recreated"),
        }
    }

    /// Keeps input that cannot be accepted in `deadletter.ingest.v1` with its reason code;
    /// `false` when even that write failed (the sender must then resend).
    pub(crate) async fn keep_rejected(&self, payload: &[u8], code: &str, detail: String, peer: &str, tp: &str) -> bool {
        let now = now_micros();
        // a dead letter must fit in a record too: keep the first part of very large input
        let keep = (self.cfg.runtime.kafka.max_record_bytes / 2).min(payload.len());
        let detail = if keep < payload.len() {
            format!("{detail}; first {keep} of {} bytes kept", payload.len())
        } else {
            detail
        };
        let dl = DeadLetter {
            dead_letter_id: sluice_model::ids::uuid_from(&[b"ingest", payload, &now.to_be_bytes()]),
            stage: SERVICE.into(),
            reason_code: code.into(),
            detail,
            original_value: payload[..keep].to_vec(),
            attempt: 1,
            first_failed_at: now,
            failed_at: now,
            trace_parent: Some(tp.to_owned()),
            peer: Some(peer.to_owned()),
            ..Default::default()
        };
        match self.store.encode(names::DL_INGEST, &dl) {
            Ok(v) => self.produce(names::DL_INGEST, dl.dead_letter_id.as_bytes(), &v, tp).await == Written::Yes,
            Err(_) => false,
        }
    }

    /// Handles one complete frame (or an oversized one, truncated to the limit).
    pub async fn handle(&self, payload: &[u8], oversized: bool, peer: &str) -> Handled {
        let listener = self.cfg.listener_name.as_str();
        metrics().bytes.with_label_values(&[listener]).inc_by(payload.len() as u64);
        let msg = Message::parse(payload);
        let now = now_micros();
        let tp = trace::new_root();
        let problem = if oversized {
            Some(("frame_too_large", "message larger than the configured maximum", "100"))
        } else {
            msg.fatal_problem()
                .map(|p| (p.code.as_str(), p.code.as_str(), p.code.hl7_error_code()))
        };
        if let Some((code, text, hl7_code)) = problem {
            let detail = if oversized {
                format!("frame exceeded {} bytes; first bytes kept", self.cfg.max_frame_bytes)
            } else {
                text.to_owned()
            };
            let kept = self.keep_rejected(payload, code, detail, peer, &tp).await;
            return if kept {
                metrics().messages.with_label_values(&[listener, "rejected"]).inc();
                Handled {
                    ack: ack::build(&msg, "AR", Some((hl7_code, text))),
                    result: "rejected",
                }
            } else {
                failed(&msg, listener)
            };
        }
        let msh = msg.segment(0);
        let t = |n: usize| String::from_utf8_lossy(msh.field(n).raw()).into_owned();
        let typ = msh.field(9).repetition(0);
        let c = |n: usize| String::from_utf8_lossy(typ.component(n).raw()).into_owned();
        let raw = RawMessage {
            raw_id: sluice_model::ids::sha256_hex(payload),
            transport: "mllp".into(),
            listener: listener.to_owned(),
            peer: peer.to_owned(),
            received_at: now,
            detected_charset: sluice_hl7::detect_charset(payload, msg.charset()).into(),
            payload: payload.to_vec(),
            msh: Some(MshSummary {
                sending_application: t(3),
                sending_facility: t(4),
                receiving_application: t(5),
                receiving_facility: t(6),
                message_datetime: t(7),
                message_type: c(1),
                trigger_event: c(2),
                message_structure: c(3),
                control_id: t(10),
                processing_id: t(11),
                version: t(12),
                charset: t(18),
            }),
            warnings: msg.problems().iter().map(|p| p.code.as_str().to_owned()).collect(),
        };
        let written = match self.store.encode(names::RAW, &raw) {
            Ok(v) => {
                self.produce(names::RAW, &sluice_model::ids::source_patient_key(&msg), &v, &tp)
                    .await
            }
            Err(_) => Written::No,
        };
        match written {
            Written::Yes => {
                metrics().messages.with_label_values(&[listener, "accepted"]).inc();
                Handled {
                    ack: ack::build(&msg, "AA", None),
                    result: "accepted",
                }
            }
            // larger than Kafka takes: a resend cannot help, so refuse it and keep its start
            Written::TooLarge => {
                let text = "message larger than a Kafka record may be";
                if self.keep_rejected(payload, "message_too_large", text.into(), peer, &tp).await {
                    metrics().messages.with_label_values(&[listener, "rejected"]).inc();
                    Handled {
                        ack: ack::build(&msg, "AR", Some(("100", text))),
                        result: "rejected",
                    }
                } else {
                    failed(&msg, listener)
                }
            }
            Written::No => failed(&msg, listener),
        }
    }
}

/// Accepts connections until shutdown, then waits (up to the drain grace) for open
/// connections to finish the message they are on.
pub async fn serve(ingest: Arc<Ingest>, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let name = ingest.cfg.listener_name.clone();
    let limit = Arc::new(tokio::sync::Semaphore::new(ingest.cfg.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    ingest.readiness.set(true);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(listener = %name, "connection limit reached, refusing connection");
                    continue;
                };
                let ing = ingest.clone();
                let sd = shutdown.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let listener = ing.cfg.listener_name.clone();
                    metrics().connections.with_label_values(&[&listener]).inc();
                    let r = mllp::connection(stream, &peer.to_string(), &ing, &sd).await;
                    metrics().connections.with_label_values(&[&listener]).dec();
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    let grace = Duration::from_secs(ingest.cfg.runtime.drain_grace_secs);
    let started = Instant::now();
    while !tasks.is_empty() && started.elapsed() < grace {
        let _ = tokio::time::timeout(grace.saturating_sub(started.elapsed()), tasks.join_next()).await;
    }
    tasks.abort_all();
    tracing::info!("ingest stopped");
    Ok(())
}

/// Kafka did not confirm the write: nothing was kept, the sender gets AR 207 and resends.
fn failed(msg: &Message<'_>, listener: &str) -> Handled {
    metrics().messages.with_label_values(&[listener, "failed"]).inc();
    Handled {
        ack: ack::build(msg, "AR", Some(("207", "application internal error, resend"))),
        result: "failed",
    }
}

fn make_producer(cfg: &Config) -> anyhow::Result<FutureProducer> {
    Ok(
        kafka::idempotent_producer(&cfg.runtime.kafka, &format!("ingest-{}", cfg.runtime.instance_id))
            .set("message.timeout.ms", cfg.ack_timeout_ms.to_string())
            .create()?,
    )
}

pub async fn run(cfg: Config, shutdown: Shutdown, health: Health) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&cfg.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "mllp listener bound");
    let fhir_listener = match cfg.fhir_listen_addr.as_str() {
        "" => None,
        addr => {
            let l = TcpListener::bind(addr).await?;
            tracing::info!(addr = %l.local_addr()?, "fhir http listener bound");
            Some(l)
        }
    };
    let ingest = Ingest::new(cfg, &health, &shutdown).await?;
    tokio::spawn(probe_broker(ingest.clone(), shutdown.clone()));
    let fhir = fhir_listener.map(|l| tokio::spawn(fhir_http::serve(ingest.clone(), l, shutdown.clone())));
    let mllp = serve(ingest, listener, shutdown).await;
    if let Some(f) = fhir {
        f.await??;
    }
    mllp
}

/// Keeps readiness true to the broker's reachability even without traffic: a failed write
/// makes ingest not ready, and only a metadata round trip (or a later successful write)
/// makes it ready again, so a load balancer that stops sending on not-ready can recover.
async fn probe_broker(ingest: Arc<Ingest>, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        let ing = ingest.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            ing.producer()
                .client()
                .fetch_metadata(Some(names::RAW), Duration::from_secs(2))
                .is_ok_and(|m| m.topics().iter().any(|t| t.error().is_none() && !t.partitions().is_empty()))
        })
        .await
        .unwrap_or(false);
        ingest.readiness.set(reachable);
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}
