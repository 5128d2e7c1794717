//! Fast tests of the transactional loop's error handling against librdkafka's in-process mock
//! cluster, which implements transactions and lets a test inject protocol errors. These are the
//! quick tier; the same loop runs against a real broker process in the workspace's e2e tests.
//!
//! Each test feeds numbered records into an input topic, runs the loop with a processor that
//! echoes them (or rejects the ones marked bad), injects one kind of failure, and then checks
//! that every input was committed exactly once: as an output or as a dead letter.
//!
//! The mock cluster does not implement `read_committed` filtering (its fetch responses carry no
//! aborted-transaction list), so records of an aborted transaction stay visible to a reader
//! here. The tests therefore check exactly-once on what the loop reported as committed (the
//! processor's `committed()`/`aborted()` callbacks, which the services rely on for their own
//! state) plus the group's committed offsets, and check on the mock's log only that nothing was
//! lost. Visibility of aborted records is tested against the real broker process in the
//! workspace's end-to-end tests.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message};
use sluice_model::DeadLetter;
use sluice_model::schemas::RecordType;
use sluice_registry::{RegistryClient, SchemaStore};
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{Health, runtime_metrics};
use sluice_runtime::transactional::{self, RuntimeError, Stage};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INPUT: &str = "test.in";
const OUTPUT: &str = "test.out";
const DEAD: &str = "test.deadletter";

/// Values read back, by topic.
type Seen = BTreeMap<String, Vec<Vec<u8>>>;

/// Echoes each input to the output topic; inputs starting with `bad` are rejected; an input
/// listed in `retry_once` asks for a retry the first time it is seen.
struct Echo {
    retry_once: Vec<Vec<u8>>,
    pending: Vec<Vec<u8>>,
    committed: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Echo {
    fn new(retry_once: Vec<Vec<u8>>) -> (Echo, Arc<Mutex<Vec<Vec<u8>>>>) {
        let committed = Arc::new(Mutex::new(Vec::new()));
        (
            Echo {
                retry_once,
                pending: Vec::new(),
                committed: committed.clone(),
            },
            committed,
        )
    }
}

impl Processor for Echo {
    fn process(&mut self, input: &Input<'_>, _: &Context) -> Outcome {
        if let Some(i) = self.retry_once.iter().position(|v| v == input.value) {
            self.retry_once.remove(i);
            return Outcome::Retry { code: "test_retry" };
        }
        self.pending.push(input.value.to_vec());
        if input.value.starts_with(b"bad") {
            return Outcome::Reject {
                code: "test_bad",
                detail: "marked bad".into(),
            };
        }
        Outcome::Emit(vec![Output {
            topic: OUTPUT.into(),
            key: input.key.unwrap_or_default().to_vec(),
            value: input.value.to_vec(),
        }])
    }

    fn committed(&mut self) {
        self.committed.lock().expect("lock").append(&mut self.pending);
    }

    fn aborted(&mut self) {
        self.pending.clear();
    }
}

struct Harness {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    rt: tokio::runtime::Runtime,
    store: Arc<SchemaStore>,
    config: RuntimeConfig,
    _registry: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    fn new() -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic(INPUT, 3, 1).expect("input topic");
        cluster.create_topic(OUTPUT, 3, 1).expect("output topic");
        cluster.create_topic(DEAD, 1, 1).expect("dead-letter topic");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(sluice_registry::server::serve(listener, async move {
                let _ = stopped.await;
            }));
            format!("http://{addr}")
        });
        let store = Arc::new(SchemaStore::new(RegistryClient::new(&url, None).expect("client")).expect("store"));
        rt.block_on(store.register(DEAD, RecordType::DeadLetter))
            .expect("register dead letter");
        let mut config = RuntimeConfig::default();
        config.kafka.bootstrap_servers = cluster.bootstrap_servers();
        config.schema_registry_url = url;
        config.batch_max_records = 7;
        config.batch_max_ms = 50;
        config.drain_grace_secs = 5;
        Harness {
            cluster,
            rt,
            store,
            config,
            _registry: stop,
        }
    }

    fn feed(&self, values: &[Vec<u8>]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .create()
            .expect("producer");
        for (i, v) in values.iter().enumerate() {
            let key = format!("patient-{}", i % 5);
            producer
                .send(BaseRecord::to(INPUT).key(&key).payload(v))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Runs the loop on its own thread until `until` holds for what a read_committed consumer
    /// sees, then shuts it down. Returns the loop's result and the committed records by topic.
    fn run(
        &self,
        name: &'static str,
        processor: Echo,
        until: impl Fn(&Seen) -> bool,
        during: impl FnOnce(&MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    ) -> (Result<(), RuntimeError>, Seen) {
        let shutdown = Shutdown::new();
        let health = Health::new();
        let readiness = health.service(name);
        let config = self.config.clone();
        let store = self.store.clone();
        let handle = self.rt.handle().clone();
        let stop = shutdown.clone();
        let worker = std::thread::spawn(move || {
            let stage = Stage {
                name,
                inputs: vec![INPUT.into()],
                dead_letter_topic: DEAD.into(),
                config: &config,
                store,
                shutdown: stop,
                readiness,
                handle,
            };
            transactional::run(stage, move || Ok(processor))
        });
        during(&self.cluster);
        let seen = self.read_committed(&until, Duration::from_secs(60), || worker.is_finished());
        shutdown.trigger();
        let result = worker.join().expect("loop thread");
        (result, seen)
    }

    fn read_committed(&self, until: &impl Fn(&Seen) -> bool, timeout: Duration, gave_up: impl Fn() -> bool) -> Seen {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", format!("reader-{}", rand_suffix()))
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("reader");
        consumer.subscribe(&[OUTPUT, DEAD]).expect("subscribe");
        let mut seen = Seen::new();
        let deadline = Instant::now() + timeout;
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet_since = None;
                    seen.entry(m.topic().to_owned())
                        .or_default()
                        .push(m.payload().unwrap_or_default().to_vec());
                }
                Some(Err(_)) => {}
                None => {
                    // keep reading for a while after the condition holds, so a duplicate
                    // committed late would still be seen
                    if until(&seen) || gave_up() {
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        if q.elapsed() > Duration::from_secs(2) {
                            break;
                        }
                    }
                }
            }
        }
        seen
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn inputs(n: usize, bad_every: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            if bad_every > 0 && i % bad_every == 0 {
                format!("bad-{i}").into_bytes()
            } else {
                format!("msg-{i}").into_bytes()
            }
        })
        .collect()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Every input committed exactly once (as an output or a dead letter) and nothing missing from
/// the output and dead-letter topics. (The mock does not store transactional offset commits,
/// so the group's offsets are checked against the real broker in the e2e tests instead.)
/// `clean`: no transaction was aborted, so the mock's log holds only committed records.
fn assert_exactly_once(h: &Harness, fed: &[Vec<u8>], seen: &Seen, committed: &Mutex<Vec<Vec<u8>>>, clean: bool) {
    let committed = sorted(committed.lock().expect("lock").clone());
    assert_eq!(committed, sorted(fed.to_vec()), "each input committed exactly once");

    let want_out = sorted(fed.iter().filter(|v| !v.starts_with(b"bad")).cloned().collect());
    let want_dead = sorted(fed.iter().filter(|v| v.starts_with(b"bad")).cloned().collect());
    let mut out = sorted(seen.get(OUTPUT).cloned().unwrap_or_default());
    let mut dead = sorted(
        seen.get(DEAD)
            .map(|v| {
                v.iter()
                    .map(|raw| h.store.decode::<DeadLetter>(raw).expect("dead letter decodes"))
                    .map(|d| {
                        assert_eq!(d.reason_code, "test_bad");
                        assert_eq!(d.original_topic.as_deref(), Some(INPUT));
                        d.original_value
                    })
                    .collect()
            })
            .unwrap_or_default(),
    );
    if clean {
        assert_eq!(out, want_out, "output records");
        assert_eq!(dead, want_dead, "dead letters");
    } else {
        // records of aborted transactions are visible on the mock (see the module doc)
        out.dedup();
        dead.dedup();
        assert_eq!(out, want_out, "no output lost");
        assert_eq!(dead, want_dead, "no dead letter lost");
    }
}

fn expected_total(fed: &[Vec<u8>]) -> impl Fn(&Seen) -> bool {
    let want: std::collections::BTreeSet<Vec<u8>> = fed.iter().cloned().collect();
    move |seen| {
        let got: std::collections::BTreeSet<&Vec<u8>> = seen.get(OUTPUT).into_iter().flatten().collect();
        let dead = seen.get(DEAD).map_or(0, Vec::len);
        want.iter().filter(|v| !v.starts_with(b"bad")).all(|v| got.contains(v))
            && dead >= want.iter().filter(|v| v.starts_with(b"bad")).count()
    }
}

fn counter(name: &str, result: &str) -> u64 {
    runtime_metrics().transactions.with_label_values(&[name, result]).get()
}

#[test]
fn clean_run_commits_every_record_and_dead_letter_once() {
    let h = Harness::new();
    let fed = inputs(60, 10);
    h.feed(&fed);
    let (echo, committed) = Echo::new(vec![]);
    let (result, seen) = h.run("mock-clean", echo, expected_total(&fed), |_| {});
    result.expect("loop ends cleanly on shutdown");
    assert_eq!(counter("mock-clean", "aborted"), 0);
    assert!(counter("mock-clean", "committed") >= 1);
    assert_exactly_once(&h, &fed, &seen, &committed, true);
}

#[test]
fn retriable_coordinator_errors_on_commit_do_not_duplicate() {
    let h = Harness::new();
    let fed = inputs(60, 0);
    h.feed(&fed);
    let (echo, committed) = Echo::new(vec![]);
    let (result, seen) = h.run("mock-retriable", echo, expected_total(&fed), |c| {
        c.request_errors(
            RDKafkaApiKey::EndTxn,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            ],
        );
        c.request_errors(
            RDKafkaApiKey::TxnOffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS],
        );
    });
    result.expect("retriable errors never end the loop");
    // retried inside librdkafka or by the loop, never by re-sending: nothing was aborted
    assert_eq!(counter("mock-retriable", "aborted"), 0);
    assert_exactly_once(&h, &fed, &seen, &committed, true);
}

#[test]
fn abortable_error_aborts_rewinds_and_redoes_the_batch() {
    let h = Harness::new();
    let fed = inputs(60, 9);
    h.feed(&fed);
    // a commit refused with an error librdkafka classes as abortable: the batch must be
    // aborted, the consumer rewound, and the batch produced again
    let (echo, committed) = Echo::new(vec![]);
    let (result, seen) = h.run("mock-abortable", echo, expected_total(&fed), |c| {
        c.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]);
    });
    result.expect("abortable errors never end the loop");
    assert!(counter("mock-abortable", "aborted") >= 1, "the failed transaction was aborted");
    assert_exactly_once(&h, &fed, &seen, &committed, false);
}

#[test]
fn processor_retry_aborts_the_batch_and_redoes_it_without_duplicates() {
    let h = Harness::new();
    let fed = inputs(40, 0);
    h.feed(&fed);
    let (echo, committed) = Echo::new(vec![fed[5].clone(), fed[23].clone()]);
    let (result, seen) = h.run("mock-retry", echo, expected_total(&fed), |_| {});
    result.expect("loop ends cleanly");
    assert!(counter("mock-retry", "aborted") >= 1);
    assert_exactly_once(&h, &fed, &seen, &committed, false);
}

#[test]
fn fenced_producer_is_fatal_and_a_restart_finishes_exactly_once() {
    let h = Harness::new();
    let fed = inputs(50, 0);
    h.feed(&fed);
    // the commit is refused as fenced: the loop must stop with a fatal error, not retry
    let (echo, committed) = Echo::new(vec![]);
    let (result, _) = h.run(
        "mock-fenced",
        echo,
        |_| false,
        |c| {
            c.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
        },
    );
    match result {
        Err(RuntimeError::Fatal { op, .. }) => assert_eq!(op, "commit_transaction"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
    assert!(committed.lock().expect("lock").is_empty(), "nothing counts as committed");

    // the supervisor restarts the process: the same instance id picks up where the group
    // committed and finishes the work exactly once
    let (echo, committed) = Echo::new(vec![]);
    let (result, seen) = h.run("mock-fenced", echo, expected_total(&fed), |_| {});
    result.expect("restarted loop ends cleanly");
    assert_exactly_once(&h, &fed, &seen, &committed, false);
}
