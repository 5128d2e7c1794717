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
//!   be CR, LF or CRLF;
//! - every entrance is encrypted: MLLP over TLS (`mllp_tls`, optionally mutual: a sender
//!   without a certificate from `client_ca_file` is refused in the handshake, counted in
//!   `sluice_ingest_refusals_total{reason="tls_..."}` and logged) and the FHIR endpoint over
//!   HTTPS (`fhir_tls`), with certificates reloaded when their files change. Plaintext only
//!   when a listener's `plaintext: true` says so;
//! - the FHIR endpoint accepts a body only with a bearer token of the `sender` role
//!   ([`sluice_runtime::auth`]); a refused request is not read, kept or acknowledged.

pub mod ack;
pub mod fhir_http;
pub mod interfaces;
pub mod limits;
pub mod mllp;

use serde::{Deserialize, Serialize};
use sluice_hl7::Message;
use sluice_model::topology::names;
use sluice_model::{DeadLetter, MshSummary, RawMessage};
use sluice_registry::SchemaStore;
use sluice_runtime::auth::{AuthConfig, Authenticator};
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::kafka::{AckedProducer, SendError};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{self, Health, Readiness, Throttle};
use sluice_runtime::tls::{Acceptor, ListenerTls};
use sluice_runtime::{now_micros, trace};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::Instrument;

pub const SERVICE: &str = "ingest";

/// A log line that can repeat once per message is written at most once per this window.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

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
    /// Connections one peer address may hold open (MLLP and HTTP each).
    pub max_connections_per_peer: usize,
    /// A frame (or an HTTP request's headers and body) must arrive within this long.
    pub frame_timeout_secs: u64,
    /// An ACK or HTTP answer the peer does not take within this long closes the connection.
    pub write_timeout_secs: u64,
    /// Bytes all connections together may hold buffered (unfinished frames and bodies). Past
    /// it, senders get AR 207 / 503 and resend.
    pub buffer_budget_bytes: usize,
    /// A frame holding several messages (several MSH, or a batch) is refused with
    /// `multiple_messages_in_frame`; with this on, each message is handled and answered on its own.
    pub split_batched_frames: bool,
    /// How long parsing one FHIR body may take before it is refused and kept as a dead letter.
    pub parse_budget_ms: u64,
    /// TLS of the MLLP listener (mutual with `client_ca_file`); `plaintext: true` to serve
    /// plain MLLP, only ever explicitly.
    pub mllp_tls: ListenerTls,
    /// TLS of the FHIR endpoint.
    pub fhir_tls: ListenerTls,
    /// Who may POST FHIR (the `sender` role): static tokens and/or OIDC.
    pub auth: AuthConfig,
    /// Per-interface metrics (MSH-3/MSH-4): the label cap and each feed's expected silence.
    pub interfaces: interfaces::InterfacesConfig,
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
            max_connections_per_peer: 64,
            frame_timeout_secs: 120,
            write_timeout_secs: 30,
            buffer_budget_bytes: 256 * 1024 * 1024,
            split_batched_frames: false,
            parse_budget_ms: 5_000,
            mllp_tls: ListenerTls::default(),
            fhir_tls: ListenerTls::default(),
            auth: AuthConfig::default(),
            interfaces: interfaces::InterfacesConfig::default(),
        }
    }
}

impl Config {
    /// Every setting agrees with the others; errors name the field, never a secret. Files
    /// (certificates, tokens) are opened at start-up, not here.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.runtime.validate()?;
        if self.ack_timeout_ms < 1_000 {
            anyhow::bail!("configuration field ack_timeout_ms is invalid: must be at least 1000");
        }
        for (field, v) in [
            ("frame_timeout_secs", self.frame_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("parse_budget_ms", self.parse_budget_ms),
        ] {
            if v == 0 {
                anyhow::bail!("configuration field {field} is invalid: must be at least 1");
            }
        }
        if self.buffer_budget_bytes < self.max_frame_bytes {
            anyhow::bail!("configuration field buffer_budget_bytes is invalid: must be at least max_frame_bytes");
        }
        self.mllp_tls.validate("mllp_tls")?;
        self.interfaces.validate()?;
        if !self.fhir_listen_addr.is_empty() {
            self.fhir_tls.validate("fhir_tls")?;
            self.auth.validate("auth")?;
        }
        Ok(())
    }
}

pub struct Metrics {
    pub messages: prometheus::IntCounterVec,
    pub refusals: prometheus::IntCounterVec,
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
        refusals: telemetry::counter(
            "sluice_ingest_refusals_total",
            "connections or inputs refused for a limit (connection limits, memory budget, timeouts), by bounded reason",
            &["listener", "reason"],
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
    producer: AckedProducer,
    pub(crate) store: Arc<SchemaStore>,
    readiness: Readiness,
    pub(crate) budget: limits::Budget,
    /// One FHIR parse per core at a time, on blocking threads.
    pub(crate) parse_slots: Arc<tokio::sync::Semaphore>,
    /// TLS of the MLLP listener; `None`: explicitly plaintext.
    pub(crate) mllp_tls: Option<Arc<Acceptor>>,
    pub(crate) fhir_tls: Option<Arc<Acceptor>>,
    /// Bearer tokens of the FHIR endpoint; `None` when it is off.
    pub(crate) auth: Option<Arc<Authenticator>>,
    /// The interfaces (sending application and facility) labelled in metrics.
    pub(crate) interfaces: interfaces::Interfaces,
}

/// Whether a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// Larger than a record may be: refuse the input (no resend can succeed).
    TooLarge,
    /// Kafka did not confirm: the sender resends.
    No,
}

/// Why a message is refused before it is parsed (framing, size): a bounded code, the fixed
/// text of the ERR segment, its HL7 table 0357 code and the dead letter's detail.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    pub text: &'static str,
    pub hl7_code: &'static str,
    pub detail: String,
}

/// The result of handling one frame: the ACK to send.
pub struct Handled {
    pub ack: Vec<u8>,
    pub result: &'static str,
}

impl Ingest {
    pub async fn new(cfg: Config, health: &Health, shutdown: &Shutdown) -> anyhow::Result<Arc<Ingest>> {
        cfg.validate()?;
        // certificates and tokens first: a service that cannot secure its entrances does not start
        let mllp_tls = Acceptor::new(&cfg.mllp_tls, "mllp_tls", &cfg.listener_name, &[])?;
        let (fhir_tls, auth) = if cfg.fhir_listen_addr.is_empty() {
            (None, None)
        } else {
            (
                Acceptor::new(&cfg.fhir_tls, "fhir_tls", fhir_http::LISTENER, &[b"http/1.1"])?,
                Some(Authenticator::new(&cfg.auth, "auth")?),
            )
        };
        if mllp_tls.is_none() {
            tracing::warn!(listener = %cfg.listener_name, "mllp served without tls (mllp_tls.plaintext)");
        }
        let store = sluice_runtime::stage::schema_store(&cfg.runtime)?;
        sluice_runtime::stage::register_with_retry(&store, SERVICE, shutdown).await?;
        let fds = limits::check_file_descriptors(2 * cfg.max_connections).map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(limit = fds, "open-file limit");
        let producer = AckedProducer::new(
            &cfg.runtime.kafka,
            SERVICE,
            &format!("ingest-{}", cfg.runtime.instance_id),
            Duration::from_millis(cfg.ack_timeout_ms),
        )?;
        let readiness = health.service(SERVICE);
        let budget = limits::Budget::new(cfg.buffer_budget_bytes);
        let interfaces = interfaces::Interfaces::new(&cfg.interfaces);
        Ok(Arc::new(Ingest {
            cfg,
            producer,
            store,
            readiness,
            budget,
            parse_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            )),
            mllp_tls,
            fhir_tls,
            auth,
            interfaces,
        }))
    }

    /// Writes one record and waits for the broker's confirmation. A record larger than a
    /// record may be (`runtime.kafka.max_record_bytes`, or the broker's limit) is
    /// [`Written::TooLarge`] without being tried: no resend could ever succeed.
    ///
    /// Both failures can repeat once per message (every write fails while the brokers are
    /// away), so each is logged at most once per [`LOG_WINDOW`] with the count left out; the
    /// metrics count every one.
    pub(crate) async fn produce(&self, topic: &str, key: &[u8], value: &[u8], tp: &str) -> Written {
        static TOO_LARGE: Throttle = Throttle::new(LOG_WINDOW);
        static FAILED: Throttle = Throttle::new(LOG_WINDOW);
        match self.producer.send(topic, key, value, &[(trace::HEADER, tp.as_bytes())]).await {
            Ok((partition, offset)) => {
                let span = tracing::Span::current();
                span.record("messaging.destination.name", topic);
                span.record("messaging.destination.partition.id", partition);
                span.record("messaging.kafka.offset", offset);
                self.readiness.set(true);
                Written::Yes
            }
            Err(SendError::TooLarge) => {
                if let Some(left_out) = TOO_LARGE.check() {
                    tracing::warn!(
                        topic,
                        left_out,
                        "record larger than a kafka record may be{}",
                        TOO_LARGE.more(left_out)
                    );
                }
                Written::TooLarge
            }
            Err(e) => {
                // the error names the broker-side cause only; the record is not logged
                if let Some(left_out) = FAILED.check() {
                    tracing::warn!(topic, error = %e, left_out, "write to kafka failed, answering AR 207{}", FAILED.more(left_out));
                }
                self.readiness.set(false);
                Written::No
            }
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

    /// Answers one thing the MLLP decoder found: the ACKs to send, in order (none for bytes
    /// outside any frame, which are only kept).
    pub async fn answer(&self, found: mllp::Decoded, peer: &str) -> Vec<Vec<u8>> {
        match found {
            mllp::Decoded::Frame(p) => self.handle_frame(&p, peer).await,
            mllp::Decoded::Oversized(p) => {
                let detail = format!("frame exceeded {} bytes; first bytes kept", self.cfg.max_frame_bytes);
                let refusal = Refusal {
                    code: "frame_too_large",
                    text: "message larger than the configured maximum",
                    hl7_code: "100",
                    detail,
                };
                vec![self.handle(&p, Some(refusal), peer).await.ack]
            }
            mllp::Decoded::Broken(p, code) => {
                let refusal = Refusal {
                    code,
                    text: "mllp framing error: frame cut short",
                    hl7_code: "100",
                    detail: "the frame was cut short by a framing error; its bytes are kept".into(),
                };
                vec![self.handle(&p, Some(refusal), peer).await.ack]
            }
            mllp::Decoded::Noise(p, n) => {
                let listener = self.cfg.listener_name.as_str();
                metrics().refusals.with_label_values(&[listener, "data_outside_frame"]).inc();
                let detail = format!("{n} bytes outside any MLLP frame");
                if !self
                    .keep_rejected(&p, "mllp_data_outside_frame", detail, peer, &trace::new_root())
                    .await
                {
                    tracing::warn!(listener, "bytes outside any frame could not be kept");
                }
                Vec::new()
            }
        }
    }

    /// A complete frame: one message, or several that are refused together (or, with
    /// `split_batched_frames`, each handled and answered on its own). One AA never covers two
    /// messages.
    pub async fn handle_frame(&self, payload: &[u8], peer: &str) -> Vec<Vec<u8>> {
        let msg = Message::parse(payload);
        let headers = msg.segments().filter(|s| matches!(s.name(), b"MSH" | b"FHS" | b"BHS")).count();
        if headers <= 1 {
            return vec![self.handle(payload, None, peer).await.ack];
        }
        let batch = msg.segments().any(|s| matches!(s.name(), b"FHS" | b"BHS"));
        if self.cfg.split_batched_frames && !batch {
            let mut acks = Vec::new();
            for part in sluice_hl7::split_messages(payload) {
                acks.push(self.handle(part, None, peer).await.ack);
            }
            return acks;
        }
        let refusal = Refusal {
            code: "multiple_messages_in_frame",
            text: "one frame holds several messages: send one message per frame",
            hl7_code: "100",
            detail: format!("{headers} message or batch headers in one frame"),
        };
        vec![self.handle(payload, Some(refusal), peer).await.ack]
    }

    /// Handles one message; `refusal` names why it cannot be accepted, when the framing
    /// already decided that.
    ///
    /// Each message starts a trace: its span (`ingest.message`) is the parent of every stage's
    /// span for it, through the `traceparent` header of what is written. The span holds the
    /// listener, the interface labels, the result and where the record went, nothing else.
    pub async fn handle(&self, payload: &[u8], refusal: Option<Refusal>, peer: &str) -> Handled {
        let span = message_span("mllp", &self.cfg.listener_name);
        let tp = trace::header_for(&span, None);
        let handled = self.handle_in(payload, refusal, peer, &tp).instrument(span.clone()).await;
        span.record("result", handled.result);
        handled
    }

    async fn handle_in(&self, payload: &[u8], refusal: Option<Refusal>, peer: &str, tp: &str) -> Handled {
        let listener = self.cfg.listener_name.as_str();
        metrics().bytes.with_label_values(&[listener]).inc_by(payload.len() as u64);
        let msg = Message::parse(payload);
        let now = now_micros();
        let interface = self.interface_of(&msg);
        let problem = refusal.map(|r| (r.code, r.text, r.hl7_code, r.detail)).or_else(|| {
            msg.fatal_problem().map(|p| {
                (
                    p.code.as_str(),
                    p.code.as_str(),
                    p.code.hl7_error_code(),
                    p.code.as_str().to_owned(),
                )
            })
        });
        if let Some((code, text, hl7_code, detail)) = problem {
            tracing::Span::current().record("reason", code);
            let kept = self.keep_rejected(payload, code, detail, peer, tp).await;
            let handled = if kept {
                metrics().messages.with_label_values(&[listener, "rejected"]).inc();
                Handled {
                    ack: ack::build(&msg, "AR", Some((hl7_code, text))),
                    result: "rejected",
                }
            } else {
                failed(&msg, listener)
            };
            self.interfaces.seen(&interface, handled.result);
            return handled;
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
            Ok(v) => self.produce(names::RAW, &sluice_model::ids::source_patient_key(&msg), &v, tp).await,
            Err(_) => Written::No,
        };
        let handled = match written {
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
                tracing::Span::current().record("reason", "message_too_large");
                if self.keep_rejected(payload, "message_too_large", text.into(), peer, tp).await {
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
        };
        self.interfaces.seen(&interface, handled.result);
        handled
    }

    /// The interface labels of a message (MSH-3 and MSH-4), also on its span.
    fn interface_of(&self, msg: &Message<'_>) -> (String, String) {
        let msh = msg.segment(0);
        let first = |n: usize| msh.field(n).repetition(0).component(1).raw();
        let labels = if msh.name() == b"MSH" {
            self.interfaces.labels(first(3), first(4))
        } else {
            self.interfaces.labels(b"", b"")
        };
        let span = tracing::Span::current();
        span.record("hl7.sending_application", labels.0.as_str());
        span.record("hl7.sending_facility", labels.1.as_str());
        labels
    }
}

/// The span of one message received (MLLP or FHIR): a trace's root.
pub(crate) fn message_span(transport: &'static str, listener: &str) -> tracing::Span {
    tracing::info_span!(
        target: trace::SPAN_TARGET,
        parent: None,
        "ingest.message",
        otel.kind = "producer",
        service = SERVICE,
        transport,
        listener,
        hl7.sending_application = tracing::field::Empty,
        hl7.sending_facility = tracing::field::Empty,
        result = tracing::field::Empty,
        reason = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.destination.name = tracing::field::Empty,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
    )
}

/// Accepts connections until shutdown, then waits (up to the drain grace) for open
/// connections to finish the message they are on.
///
/// Past the connection limit (overall or for one peer address) a sender is still answered: its
/// first frame gets `AR` 207 ("resend later") before the connection closes, by a small bounded
/// set of refusers; a refusal is counted, never a silent close.
pub async fn serve(ingest: Arc<Ingest>, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let name = ingest.cfg.listener_name.clone();
    let limit = Arc::new(tokio::sync::Semaphore::new(ingest.cfg.max_connections));
    let refusers = Arc::new(tokio::sync::Semaphore::new(REFUSERS));
    let peers = limits::PeerLimits::new(ingest.cfg.max_connections_per_peer);
    let mut tasks = tokio::task::JoinSet::new();
    // ready only once the brokers answered (probe_broker): a listener whose brokers refuse its
    // credentials must not take traffic
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // out of file descriptors or similar: say so, and do not spin
                    metrics().refusals.with_label_values(&[&name, "accept_failed"]).inc();
                    tracing::warn!(listener = %name, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let slot = peers.acquire(peer.ip());
                let permit = limit.clone().try_acquire_owned().ok();
                let (Some(slot), Some(permit)) = (slot, permit) else {
                    let reason = if limit.available_permits() == 0 { "connection_limit" } else { "peer_connection_limit" };
                    refuse_connection(&ingest, stream, reason, &refusers, &mut tasks);
                    continue;
                };
                let ing = ingest.clone();
                let sd = shutdown.clone();
                tasks.spawn(async move {
                    let _held = (permit, slot);
                    let listener = ing.cfg.listener_name.clone();
                    mllp::tune_accepted(&stream);
                    let Some(stream) = secure(&ing, stream, &peer).await else { return };
                    metrics().connections.with_label_values(&[&listener]).inc();
                    let r = mllp::connection(stream, &peer.to_string(), &ing, &sd).await;
                    metrics().connections.with_label_values(&[&listener]).dec();
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
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

/// How many refused connections are answered at once; past that they are closed (and counted).
const REFUSERS: usize = 128;

/// A stream MLLP can be read from: TLS or, explicitly configured, plain TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// The connection after the TLS handshake, or as it is on an explicitly plaintext listener;
/// `None` when the handshake was refused (counted by reason and logged, without data: none was
/// read).
async fn secure(ingest: &Ingest, stream: tokio::net::TcpStream, peer: &std::net::SocketAddr) -> Option<Box<dyn Stream>> {
    let Some(tls) = &ingest.mllp_tls else {
        return Some(Box::new(stream));
    };
    match tls.handshake(stream).await {
        Ok(s) => Some(Box::new(s)),
        Err(refusal) => {
            let listener = ingest.cfg.listener_name.as_str();
            metrics().refusals.with_label_values(&[listener, refusal.as_str()]).inc();
            sluice_runtime::tls::log_refusal(listener, refusal, &peer.ip().to_string());
            None
        }
    }
}

/// Answers a connection over a limit: its first frame gets AR 207, then it is closed.
fn refuse_connection(
    ingest: &Arc<Ingest>,
    stream: tokio::net::TcpStream,
    reason: &'static str,
    refusers: &Arc<tokio::sync::Semaphore>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let listener = ingest.cfg.listener_name.clone();
    let ing = ingest.clone();
    metrics().refusals.with_label_values(&[&listener, reason]).inc();
    let Ok(permit) = refusers.clone().try_acquire_owned() else {
        metrics().refusals.with_label_values(&[&listener, "refused_unanswered"]).inc();
        return;
    };
    tasks.spawn(async move {
        let _permit = permit;
        let Ok(peer) = stream.peer_addr() else { return };
        let Some(mut stream) = secure(&ing, stream, &peer).await else {
            return;
        };
        let mut dec = mllp::Decoder::new(64 * 1024);
        let mut buf = vec![0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(5);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let first = match dec.next_frame() {
                Some(mllp::Decoded::Frame(p) | mllp::Decoded::Oversized(p) | mllp::Decoded::Broken(p, _)) => Some(p),
                _ => None,
            };
            if let Some(p) = first {
                let ack = ack::build(&Message::parse(&p), "AR", Some(("207", "too many connections, resend later")));
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&mllp::frame(&ack))).await;
                return;
            }
            match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => dec.push(&buf[..n]),
                _ => return,
            }
        }
    });
}

/// Kafka did not confirm the write: nothing was kept, the sender gets AR 207 and resends.
fn failed(msg: &Message<'_>, listener: &str) -> Handled {
    metrics().messages.with_label_values(&[listener, "failed"]).inc();
    Handled {
        ack: ack::build(msg, "AR", Some(("207", "application internal error, resend"))),
        result: "failed",
    }
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
        let reachable = tokio::task::spawn_blocking(move || ing.producer.reachable(names::RAW, Duration::from_secs(2)))
            .await
            .unwrap_or(false);
        // nearly out of file descriptors: new senders would be refused, so say not ready
        let fds_left = limits::file_descriptors().is_none_or(|(limit, open)| open < limit / 10 * 9);
        if !fds_left {
            tracing::warn!("open file descriptors above 90% of the limit: not ready");
        }
        ingest.readiness.set(reachable && fds_left);
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

    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self)
    }
}
