//! The exactly-once-style consume-transform-produce loop.
//!
//! One batch is one Kafka transaction: every output record, every dead letter and the offsets of
//! every input consumed for them are committed together (`send_offsets_to_transaction` with the
//! consumer's group metadata), so a crash at any point either commits all of a batch or none of
//! it, and a consumer reading with `read_committed` never sees half a batch.
//!
//! Errors are handled the way librdkafka classifies them:
//! - retriable (e.g. a commit that timed out): the same call is made again, nothing is re-sent;
//! - abortable (`txn_requires_abort`): the transaction is aborted, the consumer is rewound to the
//!   committed offsets, the processor forgets its uncommitted state, and the batch is redone;
//! - fatal (e.g. fenced by a newer instance with the same transactional id): the loop returns an
//!   error and the process exits non-zero so its supervisor restarts it.
//!
//! Infrastructure failures (broker or registry unavailable) are retried with backoff and make
//! the service not ready; they never dead-letter data.
//!
//! The loop runs on its own OS thread: librdkafka's transactional calls block, and the consumer
//! is polled synchronously so rebalance callbacks run where we expect them.

use crate::config::RuntimeConfig;
use crate::processor::{Context, Input, Outcome, Processor};
use crate::shutdown::Shutdown;
use crate::telemetry::{Readiness, runtime_metrics};
use crate::{kafka, now_micros, trace};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_model::DeadLetter;
use sluice_registry::SchemaStore;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Header marking a record re-produced by the dead-letter service.
pub const REPLAY_HEADER: &str = "sluice-replay";
const OP_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka client could not be created: {0}")]
    Client(KafkaError),
    #[error("fatal kafka error in {op}: {source}")]
    Fatal { op: &'static str, source: KafkaError },
    #[error("processor could not start: {0}")]
    Init(anyhow::Error),
    #[error("schema registration failed: {0}")]
    Registry(#[from] sluice_registry::RegistryError),
}

/// What a stage needs to run.
pub struct Stage<'a> {
    /// Service name: metric label, consumer group (`sluice-<name>`) and transactional id prefix.
    pub name: &'static str,
    pub inputs: Vec<String>,
    pub dead_letter_topic: String,
    pub config: &'a RuntimeConfig,
    pub store: Arc<SchemaStore>,
    pub shutdown: Shutdown,
    pub readiness: Readiness,
    /// Used only to fetch unknown writer schemas from the registry.
    pub handle: tokio::runtime::Handle,
}

/// Sets a flag when partitions are revoked, so an open batch holding records of a revoked
/// partition is aborted instead of committed under a stale assignment; and another while this
/// member holds an assignment from the group (possibly empty: an idle spare member), so the
/// stage reports ready only once it consumes its partitions, not while it waits to join.
///
/// It also turns the consumer's statistics (every [`LAG_INTERVAL`], served by the loop's own
/// polls, so nothing waits on the brokers for it) into `sluice_runtime_consumer_lag_records`.
struct RebalanceFlag {
    revoked: Arc<AtomicBool>,
    assigned: Arc<AtomicBool>,
    service: &'static str,
    /// Offsets this instance committed since its last rebalance (the loop's, shared).
    committed: Committed,
    /// The lag series this instance exports, so a partition that moved away stops being one.
    lag_series: Mutex<HashSet<(String, i32)>>,
    /// Whether the loop has a transaction open (set before each poll, which serves `stats`).
    batch_open: Arc<AtomicBool>,
    /// Set by every assignment after the first: the processor reads its state again.
    reassigned: Arc<AtomicBool>,
    first_assignment_seen: AtomicBool,
}

/// Input offsets committed by this instance since its last rebalance: the rewind target after
/// an abort, and the committed side of the lag.
type Committed = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// How often the stage's consumer reports its statistics, and so its lag.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

impl ClientContext for RebalanceFlag {
    fn error(&self, error: KafkaError, reason: &str) {
        kafka::log_client_error(self.service, &error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lags = lag_of(&statistics, &committed, !self.batch_open.load(Ordering::SeqCst));
        let gauge = &runtime_metrics().consumer_lag;
        let mut series = self.lag_series.lock().unwrap_or_else(|e| e.into_inner());
        for gone in series.iter().filter(|k| !lags.contains_key(*k)) {
            let _ = gauge.remove_label_values(&[self.service, &gone.0, &gone.1.to_string()]);
        }
        for ((topic, partition), lag) in &lags {
            gauge.with_label_values(&[self.service, topic, &partition.to_string()]).set(*lag);
        }
        *series = lags.into_keys().collect();
    }
}

/// The lag of every partition assigned to this consumer (see [`partition_lag`]).
fn lag_of(statistics: &rdkafka::Statistics, committed_here: &HashMap<(String, i32), i64>, idle: bool) -> BTreeMap<(String, i32), i64> {
    let mut out = BTreeMap::new();
    for (topic, t) in &statistics.topics {
        for (id, p) in &t.partitions {
            // -1 is librdkafka's internal unassigned partition; `desired`: ours
            if *id < 0 || !p.desired {
                continue;
            }
            let key = (topic.clone(), *id);
            let committed = committed_here
                .get(&key)
                .copied()
                .or((p.committed_offset >= 0).then_some(p.committed_offset));
            let position = Position {
                end: if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset },
                committed,
                next_fetch: p.next_offset,
                delivered: p.app_offset,
                queued: p.fetchq_cnt,
                idle,
            };
            let lag = partition_lag(&position);
            tracing::debug!(topic, partition = id, ?position, ?lag, "consumer lag");
            if let Some(lag) = lag {
                out.insert(key, lag);
            }
        }
    }
    out
}

/// What a consumer's statistics say about one partition.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// The last stable offset (what `read_committed` can see), else the high watermark.
    end: i64,
    /// The offset committed for it: by this instance since its assignment, else the group's
    /// as the consumer last read it.
    committed: Option<i64>,
    /// The next offset the consumer will fetch.
    next_fetch: i64,
    /// The offset after the last record handed to the stage (negative: none yet).
    delivered: i64,
    /// Records fetched and not yet handed to the stage.
    queued: i64,
    /// The stage has no transaction open: everything handed to it is committed (or was
    /// aborted and rewound).
    idle: bool,
}

/// Records of a partition the stage has not committed: `end` minus the committed offset. A
/// committed transaction leaves a control record (its commit marker) after its last record, and
/// aborted transactions leave records `read_committed` skips: when the stage has no transaction
/// open (so all it was handed is committed) and nothing more is queued, the offsets up to the
/// consumer's position hold only those, and count as done: a stage that is caught up has no
/// lag, not one per transaction. `None` when nothing is known yet.
fn partition_lag(p: &Position) -> Option<i64> {
    if p.end < 0 {
        return None;
    }
    let committed = p.committed.or((p.next_fetch >= 0).then_some(p.next_fetch))?;
    let done = if p.idle && p.queued == 0 {
        committed.max(p.next_fetch).max(p.delivered)
    } else {
        committed
    };
    Some((p.end - done).max(0))
}

impl ConsumerContext for RebalanceFlag {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            self.revoked.store(true, Ordering::SeqCst);
            self.assigned.store(false, Ordering::SeqCst);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            runtime_metrics()
                .assigned_partitions
                .with_label_values(&[self.service])
                .set(i64::try_from(partitions.count()).unwrap_or(i64::MAX));
            self.assigned.store(true, Ordering::SeqCst);
            if self.first_assignment_seen.swap(true, Ordering::SeqCst) {
                self.reassigned.store(true, Ordering::SeqCst);
            }
        } else {
            runtime_metrics().assigned_partitions.with_label_values(&[self.service]).set(0);
        }
    }
}

/// Initialises transactions (which fences any previous incarnation of the transactional id),
/// retrying with backoff while the brokers are unreachable or refuse this client. `Ok(false)`
/// when shutdown came first; an error only when librdkafka calls it fatal.
pub(crate) fn init_transactions<C: ProducerContext>(
    producer: &BaseProducer<C>,
    svc: &'static str,
    shutdown: &Shutdown,
) -> Result<bool, RuntimeError> {
    let mut backoff = Backoff::new();
    loop {
        let result = producer.init_transactions(OP_TIMEOUT);
        // serves librdkafka's queued events, among them its error events: a refused login or
        // certificate is reported there, not by init_transactions, which only times out
        producer.poll(Duration::from_millis(100));
        match result {
            Ok(()) => return Ok(true),
            Err(e) if matches!(classify(&e), Action::Fatal) => {
                return Err(RuntimeError::Fatal {
                    op: "init_transactions",
                    source: e,
                });
            }
            Err(e) => {
                runtime_metrics()
                    .infrastructure_errors
                    .with_label_values(&[svc, "init_transactions"])
                    .inc();
                tracing::warn!(service = svc, error = %e, "init_transactions failed, retrying");
                if shutdown.is_triggered() {
                    return Ok(false);
                }
                backoff.sleep();
            }
        }
    }
}

enum Action {
    Retry,
    Abort,
    Fatal,
}

fn classify(e: &KafkaError) -> Action {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => Action::Fatal,
        KafkaError::Transaction(t) if t.txn_requires_abort() => Action::Abort,
        KafkaError::Transaction(t) if t.is_retriable() => Action::Retry,
        _ => Action::Abort,
    }
}

fn error_kind(e: &KafkaError) -> &'static str {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => "fatal",
        KafkaError::Transaction(t) if t.txn_requires_abort() => "abortable",
        KafkaError::Transaction(t) if t.is_retriable() => "retriable",
        _ => "other",
    }
}

struct Batch {
    started: Instant,
    records: usize,
    offsets: HashMap<(String, i32), i64>,
    /// The transaction's span (a root of its own: its records belong to their messages' traces
    /// and link to it).
    span: tracing::Span,
}

impl Batch {
    fn new(service: &'static str) -> Batch {
        Batch {
            started: Instant::now(),
            records: 0,
            offsets: HashMap::new(),
            span: tracing::info_span!(
                target: trace::SPAN_TARGET,
                parent: None,
                "stage.batch",
                service,
                records = tracing::field::Empty,
                result = tracing::field::Empty,
                abort_reason = tracing::field::Empty,
            ),
        }
    }

    /// Ends the batch's span with how the transaction ended (bounded codes only).
    fn finish(self, result: &'static str, abort_reason: Option<&'static str>) {
        self.span.record("records", self.records);
        self.span.record("result", result);
        if let Some(r) = abort_reason {
            self.span.record("abort_reason", r);
        }
    }
}

/// Runs the loop until shutdown. Returns an error only for fatal conditions.
/// `make` builds the processor after this instance's producer has fenced its previous
/// incarnation, so state it rebuilds from topics sees no half-finished transaction of ours.
pub fn run<P: Processor>(stage: Stage<'_>, make: impl FnOnce() -> anyhow::Result<P>) -> Result<(), RuntimeError> {
    let cfg = stage.config;
    let metrics = runtime_metrics();
    let svc = stage.name;
    let instance = format!("{svc}-{}", cfg.instance_id);

    let producer: BaseProducer<kafka::ClientLog> = kafka::transactional_producer(cfg, &instance)
        .create_with_context(kafka::ClientLog { service: svc })
        .map_err(RuntimeError::Client)?;
    let revoked = Arc::new(AtomicBool::new(false));
    let assigned = Arc::new(AtomicBool::new(false));
    let reassigned = Arc::new(AtomicBool::new(false));
    // offsets this instance committed since its last rebalance: the rewind target after an
    // abort, without asking the coordinator (which may be the thing that is failing)
    let committed_here: Committed = Arc::default();
    let batch_open = Arc::new(AtomicBool::new(false));
    let consumer: BaseConsumer<RebalanceFlag> = kafka::read_committed_consumer(&cfg.kafka, &instance, &crate::group_id(svc))
        .set("statistics.interval.ms", LAG_INTERVAL.as_millis().to_string())
        // dynamic membership on purpose: with a static group.instance.id, librdkafka turns a
        // session timeout during a network cut into a fatal "fenced by other consumer with
        // the same group.instance.id" (measured in the chaos suite; confluentinc/librdkafka#3437)
        .create_with_context(RebalanceFlag {
            revoked: revoked.clone(),
            assigned: assigned.clone(),
            service: svc,
            committed: committed_here.clone(),
            lag_series: Mutex::default(),
            batch_open: batch_open.clone(),
            reassigned: reassigned.clone(),
            first_assignment_seen: AtomicBool::new(false),
        })
        .map_err(RuntimeError::Client)?;

    // init_transactions also fences any previous incarnation of this instance
    if !init_transactions(&producer, svc, &stage.shutdown)? {
        return Ok(());
    }
    let mut backoff = Backoff::new();
    let mut processor = make().map_err(RuntimeError::Init)?;
    let topics: Vec<&str> = stage.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(RuntimeError::Client)?;
    tracing::info!(service = svc, "consuming");

    let mut batch: Option<Batch> = None;
    // inputs whose outputs were larger than a record may be: refused when the batch is redone
    let mut oversized: HashSet<(String, i32, i64)> = HashSet::new();
    let batch_max = Duration::from_millis(cfg.batch_max_ms);
    let mut draining_since: Option<Instant> = None;
    // the committed offsets of the current assignment were read (readiness)
    let mut resumable = false;
    let grace = Duration::from_secs(cfg.drain_grace_secs);

    loop {
        let shutting_down = stage.shutdown.is_triggered();
        if shutting_down && draining_since.is_none() {
            draining_since = Some(Instant::now());
        }
        if shutting_down && batch.is_none() {
            break;
        }
        if draining_since.is_some_and(|t| t.elapsed() > grace) {
            tracing::warn!(service = svc, "drain grace period over, aborting the open transaction");
            let _ = producer.abort_transaction(OP_TIMEOUT);
            break;
        }
        producer.poll(Duration::ZERO);

        let mut failed: Option<(&'static str, Option<KafkaError>)> = None;
        // an open batch waits only batch_idle_ms for more input before it commits
        let mut idle = false;
        if !shutting_down {
            let wait = match (&batch, cfg.batch_idle_ms) {
                (Some(_), ms) if ms > 0 => Duration::from_millis(ms),
                _ => Duration::from_millis(50),
            };
            batch_open.store(batch.is_some(), Ordering::SeqCst);
            let polled = consumer.poll(wait);
            let rebalanced = revoked.swap(false, Ordering::SeqCst);
            if rebalanced {
                // another member may own (and advance) these partitions now
                committed_here.lock().unwrap_or_else(|e| e.into_inner()).clear();
                resumable = false;
            }
            if rebalanced && batch.is_some() {
                failed = Some(("rebalance", None));
            } else {
                match polled {
                    None => {
                        idle = batch.is_some() && cfg.batch_idle_ms > 0;
                        // nothing waiting, the group has given it its partitions and the
                        // coordinator has said where to resume on each of them: it is consuming
                        if batch.is_none() && assigned.load(Ordering::SeqCst) {
                            if !resumable {
                                resumable = consumer.committed(Duration::from_secs(5)).is_ok();
                            }
                            if resumable {
                                stage.readiness.set(true);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        metrics.infrastructure_errors.with_label_values(&[svc, "consume"]).inc();
                        tracing::debug!(service = svc, error = %e, "consumer error");
                        // a consumer librdkafka has given up on never recovers: stop, so the
                        // process exits and its supervisor starts a fresh one
                        if let Some((code, reason)) = consumer.client().fatal_error() {
                            tracing::error!(service = svc, ?code, reason, "fatal consumer error, stopping");
                            if batch.is_some() {
                                let _ = abort(&producer, svc);
                            }
                            return Err(RuntimeError::Fatal { op: "consume", source: e });
                        }
                    }
                    Some(Ok(msg)) => {
                        metrics.consumed.with_label_values(&[svc]).inc();
                        // partitions that moved here may carry state another instance wrote
                        if batch.is_none()
                            && reassigned.swap(false, Ordering::SeqCst)
                            && let Err(e) = processor.reassigned()
                        {
                            tracing::warn!(service = svc, error = %e, "reading state again after a rebalance failed, retrying");
                            reassigned.store(true, Ordering::SeqCst);
                            failed = Some(("reassigned", None));
                        }
                        if failed.is_none() && batch.is_none() {
                            if let Err(e) = producer.begin_transaction() {
                                if matches!(classify(&e), Action::Fatal) {
                                    return Err(RuntimeError::Fatal {
                                        op: "begin_transaction",
                                        source: e,
                                    });
                                }
                                failed = Some(("begin_transaction", Some(e)));
                            } else {
                                batch = Some(Batch::new(svc));
                            }
                        }
                        if failed.is_none()
                            && let Some(b) = batch.as_mut()
                        {
                            let (span, record) = open_record(svc, &msg, b);
                            let _in_span = span.enter();
                            if let Err(code) = handle_record(&stage, &producer, &mut processor, &msg, b, &mut oversized, &span, record) {
                                span.record("outcome", "not_processed");
                                span.record("reason", code);
                                failed = Some((code, None));
                            }
                        }
                    }
                }
            }
        }

        let due = batch
            .as_ref()
            .is_some_and(|b| b.records >= cfg.batch_max_records || b.started.elapsed() >= batch_max || idle || shutting_down);
        if failed.is_none()
            && due
            && let Some(b) = batch.take()
        {
            match commit(&stage, &producer, &consumer, &b) {
                Ok(()) => {
                    processor.committed();
                    committed_here
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(b.offsets.iter().map(|(k, v)| (k.clone(), *v)));
                    metrics.transactions.with_label_values(&[svc, "committed"]).inc();
                    metrics
                        .transaction_seconds
                        .with_label_values(&[svc])
                        .observe(b.started.elapsed().as_secs_f64());
                    stage.readiness.set(true);
                    backoff.reset();
                    b.finish("committed", None);
                }
                Err(CommitError::Fatal(op, e)) => {
                    b.finish("fatal", Some(op));
                    return Err(RuntimeError::Fatal { op, source: e });
                }
                Err(CommitError::Abort(op, e)) => {
                    b.finish("aborted", Some(op));
                    failed = Some((op, Some(e)));
                }
            }
        }

        if let Some((op, err)) = failed {
            if let Some(e) = &err {
                metrics.infrastructure_errors.with_label_values(&[svc, error_kind(e)]).inc();
                tracing::warn!(service = svc, op, error = %e, "transaction aborted, rewinding");
            } else {
                metrics.infrastructure_errors.with_label_values(&[svc, op]).inc();
                tracing::info!(service = svc, op, "transaction aborted, rewinding");
            }
            if batch.is_some() || err.is_some() {
                if let Err(e) = abort(&producer, svc) {
                    return Err(RuntimeError::Fatal {
                        op: "abort_transaction",
                        source: e,
                    });
                }
                metrics.transactions.with_label_values(&[svc, "aborted"]).inc();
            }
            if let Some(b) = batch.take() {
                b.finish("aborted", Some(op));
            }
            processor.aborted();
            let here = committed_here.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Err(e) = rewind(&consumer, &here, svc) {
                return Err(RuntimeError::Fatal { op: "rewind", source: e });
            }
            if op != "rebalance" && op != OUTPUT_TOO_LARGE {
                stage.readiness.set(false);
                backoff.sleep();
            }
        }
    }
    consumer.unsubscribe();
    tracing::info!(service = svc, "stopped");
    Ok(())
}

/// The reason code of an input whose outputs would not fit in a record.
const OUTPUT_TOO_LARGE: &str = "output_too_large";
/// An input whose processing took longer than `runtime.process_budget_ms`.
const PROCESSING_BUDGET_EXCEEDED: &str = "processing_budget_exceeded";

/// Reads a record's headers and opens its span (`stage.record`): a child of the span that
/// produced the record (its `traceparent`), linked to the batch's span, and the parent of
/// whatever the next stage does with its outputs. Its attributes are the record's position and
/// the outcome, nothing of its content.
fn open_record(service: &'static str, msg: &rdkafka::message::BorrowedMessage<'_>, batch: &Batch) -> (tracing::Span, Record) {
    let mut parent_trace = None;
    let mut replay = false;
    let mut headers_map = BTreeMap::new();
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            let v = header.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            if header.key == trace::HEADER {
                parent_trace = Some(v.clone());
            }
            if header.key == REPLAY_HEADER {
                replay = true;
            }
            headers_map.insert(header.key.to_owned(), v);
        }
    }
    let span = tracing::info_span!(
        target: trace::SPAN_TARGET,
        parent: None,
        "stage.record",
        otel.kind = "consumer",
        service,
        messaging.system = "kafka",
        messaging.destination.name = msg.topic(),
        messaging.destination.partition.id = msg.partition(),
        messaging.kafka.offset = msg.offset(),
        replay,
        outcome = tracing::field::Empty,
        reason = tracing::field::Empty,
        outputs = tracing::field::Empty,
    );
    trace::continue_from(&span, parent_trace.as_deref());
    trace::link(&span, &batch.span);
    let tp = trace::header_for(&span, parent_trace.as_deref());
    let record = Record {
        replay,
        headers: headers_map,
        tp,
    };
    (span, record)
}

/// What [`open_record`] read from a record's headers.
struct Record {
    replay: bool,
    headers: BTreeMap<String, String>,
    /// The `traceparent` of everything produced from this record.
    tp: String,
}

/// Processes one record into the open transaction. An `Err` is an infrastructure failure code.
///
/// An input whose outputs would be larger than `kafka.max_record_bytes` would fail every
/// attempt to commit and stop the stage for everyone behind it. It is remembered in
/// `oversized` and the batch is redone (so the processor forgets what it emitted for it); on
/// the redo the input is dead-lettered as `output_too_large` without being processed.
#[allow(clippy::too_many_arguments)]
fn handle_record<P: Processor>(
    stage: &Stage<'_>,
    producer: &BaseProducer<kafka::ClientLog>,
    processor: &mut P,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    batch: &mut Batch,
    oversized: &mut HashSet<(String, i32, i64)>,
    span: &tracing::Span,
    record: Record,
) -> Result<(), &'static str> {
    let metrics = runtime_metrics();
    let svc = stage.name;
    let value = msg.payload().unwrap_or(&[]);
    let Record {
        replay,
        headers: headers_map,
        tp,
    } = record;
    if stage.handle.block_on(stage.store.prefetch(value)).is_err() {
        return Err("schema_fetch");
    }
    let input = Input {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key(),
        value,
        replay,
    };
    let ctx = Context { now_micros: now_micros() };
    let started = Instant::now();
    let position = (input.topic.to_owned(), input.partition, input.offset);
    let limit = stage.config.kafka.max_record_bytes;
    let outcome = if oversized.contains(&position) {
        Outcome::Reject {
            code: OUTPUT_TOO_LARGE,
            detail: format!("an output record would exceed {limit} bytes (runtime.kafka.max_record_bytes)"),
        }
    } else {
        processor.process(&input, &ctx)
    };
    let budget = Duration::from_millis(stage.config.process_budget_ms);
    let outcome = match outcome {
        Outcome::Emit(_) | Outcome::Skip(_) if started.elapsed() > budget => {
            tracing::warn!(service = svc, "an input took longer than the processing budget: dead-lettered");
            Outcome::Reject {
                code: PROCESSING_BUDGET_EXCEEDED,
                detail: format!("processing took longer than {} ms (runtime.process_budget_ms)", budget.as_millis()),
            }
        }
        other => other,
    };
    if let Outcome::Emit(outputs) = &outcome
        && outputs
            .iter()
            .any(|o| !kafka::fits(&stage.config.kafka, o.key.len(), o.value.len()))
    {
        tracing::warn!(
            service = svc,
            "an output would be larger than a record may be, redoing the batch to dead-letter its input"
        );
        oversized.insert(position);
        return Err(OUTPUT_TOO_LARGE);
    }
    metrics
        .process_seconds
        .with_label_values(&[svc])
        .observe(started.elapsed().as_secs_f64());
    let kind = match &outcome {
        Outcome::Emit(_) => "emit",
        Outcome::Skip(_) => "skip",
        Outcome::Retry { .. } => "retry",
        Outcome::Reject { .. } => "reject",
    };
    span.record("outcome", kind);
    if replay {
        metrics.replayed.with_label_values(&[svc, kind]).inc();
    }
    let outputs = match outcome {
        Outcome::Emit(outputs) => {
            metrics.outcomes.with_label_values(&[svc, "emit"]).inc();
            outputs
        }
        Outcome::Skip(reason) => {
            metrics.outcomes.with_label_values(&[svc, "skip"]).inc();
            span.record("reason", reason);
            Vec::new()
        }
        Outcome::Retry { code } => {
            metrics.outcomes.with_label_values(&[svc, "retry"]).inc();
            return Err(code);
        }
        Outcome::Reject { code, detail } => {
            metrics.outcomes.with_label_values(&[svc, "reject"]).inc();
            span.record("reason", code);
            metrics.dead_letters.with_label_values(&[svc, code]).inc();
            let now = ctx.now_micros;
            let attempt = headers_map.get("sluice-attempt").and_then(|a| a.parse::<i32>().ok()).unwrap_or(0) + 1;
            let first_failed_at = headers_map
                .get("sluice-first-failed-at")
                .and_then(|a| a.parse::<i64>().ok())
                .unwrap_or(now);
            let dl = DeadLetter {
                dead_letter_id: sluice_model::ids::uuid_from(&[
                    svc.as_bytes(),
                    input.topic.as_bytes(),
                    &input.partition.to_be_bytes(),
                    &input.offset.to_be_bytes(),
                ]),
                stage: svc.to_owned(),
                reason_code: code.to_owned(),
                detail,
                original_topic: Some(input.topic.to_owned()),
                original_partition: Some(input.partition),
                original_offset: Some(input.offset),
                original_key: input.key.map(<[u8]>::to_vec),
                original_value: value.to_vec(),
                original_headers: headers_map,
                attempt,
                first_failed_at,
                failed_at: now,
                trace_parent: Some(tp.clone()),
                peer: None,
            };
            let mut dl = dl;
            let mut encoded = stage
                .store
                .encode(&stage.dead_letter_topic, &dl)
                .map_err(|_| "dead_letter_encode")?;
            // a dead letter must itself fit in a record: keep the first part of the input
            if !kafka::fits(&stage.config.kafka, dl.dead_letter_id.len(), encoded.len()) {
                let keep = limit / 2;
                dl.original_value.truncate(keep);
                dl.detail = format!("{}; input truncated to its first {keep} bytes to fit a record", dl.detail);
                encoded = stage
                    .store
                    .encode(&stage.dead_letter_topic, &dl)
                    .map_err(|_| "dead_letter_encode")?;
            }
            vec![crate::processor::Output {
                topic: stage.dead_letter_topic.clone(),
                key: dl.dead_letter_id.into_bytes(),
                value: encoded,
            }]
        }
    };
    span.record("outputs", outputs.len());
    for out in &outputs {
        let headers = OwnedHeaders::new().insert(Header {
            key: trace::HEADER,
            value: Some(tp.as_bytes()),
        });
        let mut record = BaseRecord::to(&out.topic).key(&out.key).payload(&out.value).headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err(_) => return Err("produce"),
            }
        }
    }
    batch.records += 1;
    batch.offsets.insert((input.topic.to_owned(), input.partition), input.offset + 1);
    Ok(())
}

enum CommitError {
    Abort(&'static str, KafkaError),
    Fatal(&'static str, KafkaError),
}

fn commit<C: ConsumerContext>(
    stage: &Stage<'_>,
    producer: &BaseProducer<kafka::ClientLog>,
    consumer: &BaseConsumer<C>,
    batch: &Batch,
) -> Result<(), CommitError> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &batch.offsets {
        if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
            return Err(CommitError::Abort("offsets", KafkaError::NoMessageReceived));
        }
    }
    let Some(group) = consumer.group_metadata() else {
        return Err(CommitError::Abort("group_metadata", KafkaError::NoMessageReceived));
    };
    serve_deliveries(producer, OP_TIMEOUT);
    retrying(stage, "send_offsets_to_transaction", || {
        producer.send_offsets_to_transaction(&tpl, &group, OP_TIMEOUT)
    })?;
    // a commit that timed out is retried as a commit: the records are already in the
    // transaction and must not be sent again
    retrying(stage, "commit_transaction", || producer.commit_transaction(OP_TIMEOUT))?;
    runtime_metrics()
        .produced
        .with_label_values(&[stage.name])
        .inc_by(batch.records as u64);
    Ok(())
}

/// Waits for the delivery reports of everything sent, serving them as they come. Call it before
/// `commit_transaction`: that first waits for every delivery report itself, and rust-rdkafka's
/// `BaseProducer` does so by polling in 100 ms slices that always run to their end, which put
/// 100 ms on every transaction. Whatever is still in flight at `timeout` is left to the commit.
///
/// Polls never wait here: a `BaseProducer::poll` runs until its deadline, and the wait it passes
/// to librdkafka is whole milliseconds of what is left, so the last millisecond of every poll
/// is a busy loop (with 1 ms polls, the whole wait was: three stages waiting for the broker
/// spun on the CPU the broker needed). Instead each pass serves what is queued without waiting
/// and then sleeps briefly, 50 µs doubling to 1 ms.
pub(crate) fn serve_deliveries<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(50);
    loop {
        let before = producer.in_flight_count();
        if before == 0 {
            return;
        }
        producer.poll(Duration::ZERO);
        let after = producer.in_flight_count();
        if after == 0 || Instant::now() >= deadline {
            return;
        }
        if after < before {
            // reports are arriving: serve the next without sleeping
            nap = Duration::from_micros(50);
            continue;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(1));
    }
}

fn retrying(stage: &Stage<'_>, op: &'static str, mut f: impl FnMut() -> Result<(), KafkaError>) -> Result<(), CommitError> {
    let mut backoff = Backoff::new();
    for _ in 0..10 {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) => match classify(&e) {
                Action::Fatal => return Err(CommitError::Fatal(op, e)),
                Action::Abort => return Err(CommitError::Abort(op, e)),
                Action::Retry => {
                    runtime_metrics()
                        .infrastructure_errors
                        .with_label_values(&[stage.name, "retriable"])
                        .inc();
                    tracing::warn!(service = stage.name, op, error = %e, "retrying");
                    stage.readiness.set(false);
                    backoff.sleep();
                }
            },
        }
    }
    Err(CommitError::Abort(op, KafkaError::Canceled))
}

/// Aborts the open transaction. librdkafka's abort waits for the delivery reports of records
/// still queued in the transaction, and a `BaseProducer` only serves those when polled, so the
/// abort runs in short slices with polls in between (a timed-out abort resumes where it was).
/// An abort that keeps failing (the coordinator unreachable for longer than this covers) is
/// returned as an error: the process exits and its restart fences the transaction, which is
/// safer than spinning here unseen.
pub fn abort<C: ProducerContext>(producer: &BaseProducer<C>, svc: &'static str) -> Result<(), KafkaError> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < OP_TIMEOUT * 6 {
        producer.poll(Duration::from_millis(20));
        match producer.abort_transaction(Duration::from_millis(500)) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(classify(&e), Action::Fatal) => return Err(e),
            // no transaction open (e.g. begin failed): nothing to abort
            Err(KafkaError::Transaction(t)) if t.code() == rdkafka::types::RDKafkaErrorCode::State => return Ok(()),
            Err(e) => {
                if started.elapsed() > OP_TIMEOUT {
                    tracing::warn!(service = svc, error = %e, "abort_transaction still failing, retrying");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(KafkaError::Canceled))
}

/// Moves every assigned partition back to the last committed offset, dropping records fetched
/// beyond it: the offset this instance committed itself when it has one (since its last
/// rebalance), else the group's committed offset, else the beginning.
///
/// A rewind that cannot learn where to go is an error: carrying on from the current position
/// would commit past the aborted records and lose them, while exiting lets the restarted
/// process resume from the group's committed offsets.
fn rewind<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    committed_here: &HashMap<(String, i32), i64>,
    svc: &'static str,
) -> Result<(), KafkaError> {
    let assigned = consumer.assignment()?;
    let mut unknown = TopicPartitionList::new();
    let mut tpl = TopicPartitionList::new();
    for el in assigned.elements() {
        match committed_here.get(&(el.topic().to_owned(), el.partition())) {
            Some(o) => tpl.add_partition_offset(el.topic(), el.partition(), Offset::Offset(*o))?,
            None => {
                unknown.add_partition(el.topic(), el.partition());
            }
        }
    }
    if unknown.count() > 0 {
        let mut backoff = Backoff::new();
        let mut attempts = 0;
        let committed = loop {
            match consumer.committed_offsets(unknown.clone(), OP_TIMEOUT) {
                Ok(c) => break c,
                Err(e) if attempts >= 5 => return Err(e),
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(service = svc, error = %e, "could not read committed offsets, retrying");
                    backoff.sleep();
                }
            }
        };
        for el in committed.elements() {
            let offset = match el.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            tpl.add_partition_offset(el.topic(), el.partition(), offset)?;
        }
    }
    if tpl.count() > 0 {
        for el in consumer.seek_partitions(tpl, OP_TIMEOUT)?.elements() {
            el.error()?;
        }
    }
    Ok(())
}

struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
        }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
    fn sleep(&mut self) {
        std::thread::sleep(self.next);
        self.next = (self.next * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(end: i64, committed: Option<i64>, next_fetch: i64, delivered: i64, queued: i64, idle: bool) -> Option<i64> {
        partition_lag(&Position {
            end,
            committed,
            next_fetch,
            delivered,
            queued,
            idle,
        })
    }

    #[test]
    fn lag_counts_uncommitted_records_and_not_commit_markers() {
        // caught up: the record at 0 committed (1), its transaction's marker at 1; the consumer
        // is past it (what librdkafka reports, measured)
        assert_eq!(at(2, Some(1), 2, 2, 0, true), Some(0));
        // nothing handed over since the assignment, the group committed 1 before the marker
        assert_eq!(at(2, Some(1), 2, -1001, 0, true), Some(0));
        // behind: 100 records after the committed offset, some fetched and queued
        assert_eq!(at(142, Some(41), 90, 41, 49, true), Some(101));
        // a transaction open: what it was handed is not committed yet
        assert_eq!(at(42, Some(30), 42, 41, 0, false), Some(12));
        // rewound after an abort: fetching again from the committed offset
        assert_eq!(at(142, Some(41), 41, -1001, 0, true), Some(101));
        // nothing committed known yet: from the fetch position
        assert_eq!(at(10, None, 4, -1001, 0, true), Some(6));
        assert_eq!(at(-1001, Some(3), 4, -1001, 0, true), None);
        assert_eq!(at(10, None, -1001, -1001, 0, true), None);
    }
}
