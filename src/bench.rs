//! `sluice bench`: what the pipeline costs, measured against what the broker itself costs in the
//! same run.
//!
//! `sluice bench pipeline` starts a broker (the embedded one, or `--bootstrap-servers`), the
//! schema registry and the five services with exactly-once on, and measures:
//! - **pipeline**: HL7 v2 over MLLP into ingest (durable ACK), through normalise,
//!   identifier-match and route, to the routed topics;
//! - **pass-through**: the same hops with no work in them, on the same broker: an idempotent
//!   `acks=all` produce of the same raw records (byte for byte) and three transactional
//!   consume-copy-produce stages on the same runtime loop and batch settings as the services.
//!
//! Each is run twice: flat out (closed loop, `--conns` writers each waiting for its ACK or
//! delivery report), for throughput; and open loop at `--rate` messages a second for
//! `--seconds`, for latency (from each message's scheduled send time, so a stall shows as latency
//! rather than as a lower offered rate). ACK latency is the sender's; end-to-end latency is from
//! ingest's receipt (`RawMessage.received_at`; the produce time for pass-through) to the moment
//! a `read_committed` reader sees the last routed record of that message, i.e. after route's
//! transaction committed. It prints both and their ratio, for each `--known-patients` size
//! (identity records produced before the services start, as after a restart).
//!
//! `sluice bench stages` runs each stage's processor in this process on inputs made by the stage
//! before it, without Kafka, and prints the time per message; `scripts/bench-cpu.sh` runs it under
//! callgrind to count instructions per message, which a noisy machine cannot blur.

use crate::{broker, generate, known, up};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice_model::topology::{Topology, names};
use sluice_model::{MatchedEvent, RawMessage};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum Command {
    /// The whole pipeline against a pass-through chain of the same hops on the same broker
    Pipeline(PipelineArgs),
    /// Each stage's processing alone, in this process, without Kafka (time per message)
    Stages(StagesArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Messages for the flat-out run
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// MLLP connections (and pass-through writers)
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// Offered rate of the open-loop run, messages a second
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Length of the open-loop run
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Flat-out rounds, pipeline and pass-through taking turns (medians are reported)
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Messages through each chain before anything is measured (a JVM broker compiles its hot
    /// paths during the first tens of thousands of records)
    #[arg(long, default_value_t = 10_000)]
    pub warmup: usize,
    /// Known patients before the run, one measurement each (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub known_patients: Vec<u64>,
    /// An external Kafka cluster (plaintext); without it a fresh embedded broker per size
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// The process id of the external broker (with --bootstrap-servers), to count its CPU
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Skip the pass-through chain
    #[arg(long)]
    pub no_baseline: bool,
    /// Settings to try (default: the services' defaults): runtime.batch_max_records,
    /// runtime.batch_max_ms, runtime.batch_idle_ms, runtime.kafka.fetch_wait_max_ms,
    /// runtime.kafka.linger_ms
    #[arg(long)]
    pub batch_max_records: Option<usize>,
    #[arg(long)]
    pub batch_max_ms: Option<u64>,
    #[arg(long)]
    pub batch_idle_ms: Option<u64>,
    #[arg(long)]
    pub fetch_wait_max_ms: Option<u32>,
    #[arg(long)]
    pub linger_ms: Option<u32>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StagesArgs {
    #[arg(long, default_value_t = 2_000)]
    pub messages: usize,
    #[arg(long, default_value_t = 1000)]
    pub known_patients: u64,
    /// Only this stage (normalise, identifier-match or route): what callgrind measures
    #[arg(long)]
    pub only: Option<String>,
}

pub async fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Pipeline(a) => pipeline(a).await,
        Command::Stages(a) => stages(a).await,
    }
}

/// One run's figures.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub messages: usize,
    pub per_sec: f64,
    pub ack: Vec<Duration>,
    pub e2e: Vec<Duration>,
    /// accepted, not routed by the end and not held for identity review: dead-lettered or lost
    pub missing: usize,
    /// accepted and held for identity review (every event of the message in a review item)
    pub held: usize,
    /// CPU time per message over the run, in µs: this process (services, or the pass-through
    /// copies, and the load generator) and the embedded broker's process. Steal and other
    /// tenants do not count in it, so it moves far less than msg/s on a shared machine.
    pub cpu_us: Option<(f64, f64)>,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

impl Figures {
    /// `messages` seen at the end over `span_micros` from the first send, of `expected`.
    fn of(messages: usize, span_micros: i64, ack: Vec<Duration>, e2e: Vec<Duration>, expected: usize) -> Figures {
        let secs = (span_micros as f64 / 1e6).max(1e-6);
        Figures {
            messages,
            per_sec: messages as f64 / secs,
            ack,
            e2e,
            missing: expected.saturating_sub(messages),
            held: 0,
            cpu_us: None,
        }
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what:<34} {:>7} msgs {:>8.0} msg/s  ACK p50 {:>6} p99 {:>6} ms  e2e p50 {:>7} p99 {:>7} ms{}{}",
            self.messages,
            self.per_sec,
            ms(pct(&self.ack, 0.5)),
            ms(pct(&self.ack, 0.99)),
            ms(pct(&self.e2e, 0.5)),
            ms(pct(&self.e2e, 0.99)),
            match self.cpu_us {
                Some((own, broker)) => format!("  CPU/msg {own:.0}+{broker:.0} us"),
                None => String::new(),
            },
            match (self.held, self.missing) {
                (0, 0) => String::new(),
                (h, 0) => format!("  held for review {h}"),
                (h, m) => format!("  held for review {h}, NOT ROUTED OR HELD {m}"),
            }
        )
    }
}

fn micros_now() -> i64 {
    sluice_runtime::now_micros()
}

/// A record as the collector saw it: key, value, and when (µs since the epoch).
type Seen = (Vec<u8>, Vec<u8>, i64);

/// Reads topics with `read_committed` from their current ends and keeps (key, value, seen at).
struct Collector {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Collector {
    fn start(rt: &RuntimeConfig, topics: &[String]) -> anyhow::Result<Collector> {
        let consumer: BaseConsumer = sluice_runtime::kafka::base(&rt.kafka, "sluice-bench-collector")
            .set("group.id", "sluice-bench-collector")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                let (_, high) = consumer.fetch_watermarks(t, p.id(), Duration::from_secs(10))?;
                tpl.add_partition_offset(t, p.id(), Offset::Offset(high))?;
            }
        }
        consumer.assign(&tpl)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let at = micros_now();
                    let rec = (m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec(), at);
                    v.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
                }
            }
        });
        Ok(Collector { stop, seen, thread })
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until nothing new arrived for `quiet` (or `limit` passed), then stops.
    async fn finish(self, quiet: Duration, limit: Duration) -> Vec<Seen> {
        self.finish_with_cpu(quiet, limit, None).await.0
    }

    /// [`Collector::finish`], also returning the CPU used by the time the last record arrived
    /// (the quiet wait after it is idle time, not the run's work).
    async fn finish_with_cpu(self, quiet: Duration, limit: Duration, broker: Option<u32>) -> (Vec<Seen>, Cpu) {
        let started = Instant::now();
        let (mut last, mut since) = (usize::MAX, Instant::now());
        let mut cpu = Cpu::now(broker);
        while started.elapsed() < limit {
            let n = self.len();
            if n != last {
                (last, since) = (n, Instant::now());
                cpu = Cpu::now(broker);
            } else if since.elapsed() >= quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        (std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner())), cpu)
    }
}

/// Closed loop: `conns` MLLP connections, each sending its share and waiting for each ACK.
async fn closed_loop_mllp(addr: &str, msgs: &[Vec<u8>], conns: usize) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let share: Vec<Vec<u8>> = msgs.iter().skip(c).step_by(conns).cloned().collect();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let (mut lat, mut aa) = (Vec::with_capacity(share.len()), 0usize);
            for m in &share {
                let t = Instant::now();
                let ack = sluice_ingest::mllp::send_one(&mut s, m, Duration::from_secs(60)).await?;
                lat.push(t.elapsed());
                aa += usize::from(sluice_ingest::mllp::ack_code(&ack) == "AA");
            }
            anyhow::Ok((lat, aa))
        }));
    }
    let (mut lat, mut aa) = (Vec::new(), 0);
    for t in tasks {
        let (l, a) = t.await??;
        lat.extend(l);
        aa += a;
    }
    Ok((lat, aa))
}

/// Per message (raw id), the last time a routed record of it was seen; and each raw id's receipt.
async fn pipeline_figures(
    store: &SchemaStore,
    seen: &[Seen],
    received: &HashMap<String, i64>,
    sent: &[Vec<u8>],
    first_send: i64,
    ack: Vec<Duration>,
    accepted: usize,
) -> Figures {
    let ours: std::collections::HashSet<String> = sent.iter().map(|m| sluice_model::ids::sha256_hex(m)).collect();
    let mut last: HashMap<String, i64> = HashMap::new();
    for (_, v, at) in seen {
        if store.prefetch(v).await.is_err() {
            continue;
        }
        if let Ok(m) = store.decode::<MatchedEvent>(v)
            && ours.contains(&m.event.source.raw_id)
        {
            let e = last.entry(m.event.source.raw_id).or_insert(*at);
            *e = (*e).max(*at);
        }
    }
    let mut e2e = Vec::new();
    let mut end = first_send;
    for (raw, at) in &last {
        end = end.max(*at);
        if let Some(r) = received.get(raw) {
            e2e.push(Duration::from_micros(u64::try_from(at - r).unwrap_or(0)));
        }
    }
    Figures::of(last.len(), end - first_send, ack, e2e, accepted)
}

/// Where the accepted messages that never reached a routed topic are: `(held, elsewhere)`,
/// those with an event waiting for identity review, and the rest (dead-lettered, or lost: the
/// bench says so loudly). A synthetic patient can look like a known one closely enough to be
/// held; that is the identity rules at work, not loss.
async fn account_missing(rt: &RuntimeConfig, store: &SchemaStore, seen: &[Seen], sent: &[Vec<u8>]) -> anyhow::Result<(usize, usize)> {
    let ours: std::collections::HashSet<String> = sent.iter().map(|m| sluice_model::ids::sha256_hex(m)).collect();
    let mut routed = std::collections::HashSet::new();
    for (_, v, _) in seen {
        if store.prefetch(v).await.is_ok()
            && let Ok(m) = store.decode::<MatchedEvent>(v)
        {
            routed.insert(m.event.source.raw_id);
        }
    }
    let read = |topic: &'static str| {
        let kafka = rt.kafka.clone();
        tokio::task::spawn_blocking(move || {
            let mut values = Vec::new();
            sluice_runtime::state::read_topic(&kafka, topic, |_, v| values.extend(v.map(<[u8]>::to_vec)))?;
            anyhow::Ok(values)
        })
    };
    // the review topic carries the held events themselves
    let mut held_raw = std::collections::HashSet::new();
    for v in read(names::REVIEW).await?? {
        store.prefetch(&v).await?;
        if let Ok(m) = store.decode::<MatchedEvent>(&v) {
            held_raw.insert(m.event.source.raw_id);
        }
    }
    let unrouted: Vec<&String> = ours.iter().filter(|r| !routed.contains(*r)).collect();
    let held = unrouted.iter().filter(|r| held_raw.contains(**r)).count();
    Ok((held, unrouted.len().saturating_sub(held)))
}

/// CPU used so far by a JVM's JIT compiler threads (`C1/C2 CompilerThread<n>`); `None` when
/// the process has none (not a JVM).
fn jit_cpu_seconds(pid: u32) -> Option<f64> {
    let mut total = None;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("C1 Compiler") || comm.starts_with("C2 Compiler") {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            *total.get_or_insert(0.0) += stat_cpu_seconds(&stat);
        }
    }
    total
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat` (0 when it
/// cannot be read).
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |s| stat_cpu_seconds(&s))
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // after the command name in parentheses (which may hold spaces): utime and stime are the
    // 12th and 13th fields
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<f64> = rest.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
    let hz = 100.0; // USER_HZ on Linux
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / hz
}

/// CPU used so far by this process and the broker's, for [`Figures::cpu_us`].
#[derive(Clone, Copy)]
struct Cpu {
    own: f64,
    broker: f64,
}

impl Cpu {
    fn now(broker: Option<u32>) -> Cpu {
        Cpu {
            own: cpu_seconds(std::process::id()),
            broker: broker.map(cpu_seconds).unwrap_or(0.0),
        }
    }

    /// Per message from `self` to `end`, in µs.
    fn per_message(self, end: Cpu, messages: usize) -> Option<(f64, f64)> {
        let n = messages.max(1) as f64;
        Some(((end.own - self.own) / n * 1e6, (end.broker - self.broker) / n * 1e6))
    }
}

/// Raw id -> received_at, for every raw record written so far.
async fn receipts(rt: &RuntimeConfig, store: &SchemaStore) -> anyhow::Result<(HashMap<String, i64>, Vec<Vec<u8>>)> {
    let kafka = rt.kafka.clone();
    let values = tokio::task::spawn_blocking(move || {
        let mut values = Vec::new();
        sluice_runtime::state::read_topic(&kafka, names::RAW, |_, v| values.extend(v.map(<[u8]>::to_vec)))?;
        anyhow::Ok(values)
    })
    .await??;
    let mut map = HashMap::new();
    for v in &values {
        store.prefetch(v).await?;
        let r = store.decode::<RawMessage>(v)?;
        map.insert(r.raw_id, r.received_at);
    }
    Ok((map, values))
}

/// A stage that copies its input to the next topic: the hop without the work.
struct Copy {
    to: String,
}

impl Processor for Copy {
    fn process(&mut self, input: &Input<'_>, _: &Context) -> Outcome {
        Outcome::Emit(vec![Output {
            topic: self.to.clone(),
            key: input.key.unwrap_or_default().to_vec(),
            value: input.value.to_vec(),
        }])
    }
}

const PASS: [&str; 4] = ["bench.pass.0", "bench.pass.1", "bench.pass.2", "bench.pass.3"];
const PASS_STAGES: [&str; 3] = ["bench-copy-1", "bench-copy-2", "bench-copy-3"];

/// The pass-through chain: three copy stages on the services' own transactional loop.
fn start_copies(rt: &RuntimeConfig, store: &Arc<SchemaStore>, shutdown: &Shutdown, health: &Health) -> Vec<std::thread::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::current();
    (0..3)
        .map(|i| {
            let (rt, store, shutdown, readiness, handle) = (
                rt.clone(),
                store.clone(),
                shutdown.clone(),
                health.service(PASS_STAGES[i]),
                handle.clone(),
            );
            std::thread::spawn(move || {
                let stage = sluice_runtime::transactional::Stage {
                    name: PASS_STAGES[i],
                    inputs: vec![PASS[i].to_owned()],
                    dead_letter_topic: names::DL_ROUTE.to_owned(),
                    config: &rt,
                    store,
                    shutdown,
                    readiness,
                    handle,
                };
                let to = PASS[i + 1].to_owned();
                if let Err(e) = sluice_runtime::transactional::run(stage, || Ok(Copy { to })) {
                    eprintln!("pass-through stage {} failed: {e}", PASS_STAGES[i]);
                }
            })
        })
        .collect()
}

/// A pass-through record's key: the run, the send time and the record's number.
fn pass_key(run: u8, sent_micros: i64, n: usize) -> Vec<u8> {
    let mut k = vec![run];
    k.extend_from_slice(&sent_micros.to_be_bytes());
    k.extend_from_slice(&(n as u64).to_be_bytes());
    k
}

fn pass_figures(run: u8, seen: &[Seen], first_send: i64, ack: Vec<Duration>, sent: usize) -> Figures {
    let mut e2e = Vec::with_capacity(seen.len());
    let mut end = first_send;
    let mut ids = std::collections::HashSet::new();
    for (k, _, at) in seen {
        if k.len() == 17 && k[0] == run {
            let sent_at = i64::from_be_bytes(k[1..9].try_into().unwrap_or_default());
            if ids.insert(k.clone()) {
                e2e.push(Duration::from_micros(u64::try_from(at - sent_at).unwrap_or(0)));
                end = end.max(*at);
            }
        }
    }
    Figures::of(ids.len(), end - first_send, ack, e2e, sent)
}

/// Flat out: `writers` tasks, each producing its share and waiting for each delivery report.
async fn pass_closed(
    run: u8,
    producer: &FutureProducer,
    values: &[Vec<u8>],
    count: usize,
    writers: usize,
) -> anyhow::Result<Vec<Duration>> {
    // each writer takes its own share of the records, not a copy of them all: the raw topic holds
    // every record of the run (tens of thousands after the warm-up), and sixteen copies of it
    // cost the pass-through more than its own work (`clear_page_erms` under perf)
    let mut tasks = Vec::new();
    for w in 0..writers {
        let values: Vec<Vec<u8>> = (w..count).step_by(writers).map(|n| values[n % values.len()].clone()).collect();
        let p = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for (n, value) in (w..count).step_by(writers).zip(&values) {
                let t = Instant::now();
                let key = pass_key(run, micros_now(), n);
                let rec = FutureRecord::to(PASS[0]).key(&key).payload(value);
                p.send(rec, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(lat)
}

/// Open loop: one record every 1/rate seconds whatever the delivery reports do; latency from the
/// scheduled time.
async fn pass_open(run: u8, producer: &FutureProducer, values: &[Vec<u8>], rate: f64, seconds: f64) -> anyhow::Result<Vec<Duration>> {
    let total = (rate * seconds).round() as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut pending = tokio::task::JoinSet::new();
    for n in 0..total {
        let at = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(at.into()).await;
        let (p, v) = (producer.clone(), values[n % values.len()].clone());
        pending.spawn(async move {
            let key = pass_key(run, micros_now(), n);
            let r = p
                .send(FutureRecord::to(PASS[0]).key(&key).payload(&v), Duration::from_secs(30))
                .await;
            r.map(|_| at.elapsed()).map_err(|(e, _)| anyhow::anyhow!(e))
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = pending.join_next().await {
        lat.push(r??);
    }
    Ok(lat)
}

async fn create_pass_topics(rt: &RuntimeConfig, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<_> = sluice_runtime::kafka::base(&rt.kafka, "sluice-bench").create()?;
    let new: Vec<NewTopic<'_>> = PASS
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin.create_topics(new.iter(), &AdminOptions::new()).await? {
        if let Err((t, code)) = r
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!("topic {t} could not be created: {code}");
        }
    }
    Ok(())
}

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

struct Measured {
    known: u64,
    /// Each flat-out round: the pipeline and the pass-through (taking turns at going first).
    rounds: Vec<(Figures, Option<Figures>)>,
    pipeline_rate: Figures,
    pass_rate: Option<Figures>,
}

async fn one_size(a: &PipelineArgs, known_patients: u64) -> anyhow::Result<Measured> {
    let shutdown = Shutdown::new();
    let mut broker_child: Option<tokio::process::Child> = None;
    let mut broker_pid: Option<u32> = a.broker_pid;
    let bootstrap = match &a.bootstrap_servers {
        Some(b) => b.clone(),
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            broker_child = Some(broker::start(port).await?);
            broker_pid = broker_child.as_ref().and_then(tokio::process::Child::id);
            format!("127.0.0.1:{port}")
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry_url = format!("http://{}", listener.local_addr()?);
    let sd = shutdown.clone();
    tokio::spawn(sluice_registry::server::serve(listener, async move { sd.wait().await }));
    let mut rt = RuntimeConfig {
        kafka: sluice_runtime::config::KafkaConfig {
            bootstrap_servers: bootstrap,
            ..Default::default()
        },
        schema_registry_url: registry_url,
        http_addr: free_addr()?,
        ..Default::default()
    };
    rt.batch_max_records = a.batch_max_records.unwrap_or(rt.batch_max_records);
    rt.batch_max_ms = a.batch_max_ms.unwrap_or(rt.batch_max_ms);
    rt.batch_idle_ms = a.batch_idle_ms.unwrap_or(rt.batch_idle_ms);
    rt.kafka.fetch_wait_max_ms = a.fetch_wait_max_ms.unwrap_or(rt.kafka.fetch_wait_max_ms);
    rt.kafka.linger_ms = a.linger_ms.unwrap_or(rt.kafka.linger_ms);
    rt.validate()?;
    eprintln!(
        "batch_max_records {} batch_max_ms {} batch_idle_ms {} fetch_wait_max_ms {} linger_ms {}",
        rt.batch_max_records, rt.batch_max_ms, rt.batch_idle_ms, rt.kafka.fetch_wait_max_ms, rt.kafka.linger_ms
    );
    crate::topology::apply(&rt.kafka, 1).await?;
    let store = sluice_runtime::stage::schema_store(&rt)?;
    for (t, ty) in [
        (names::RECORDS, sluice_model::schemas::RecordType::IdentityState),
        (names::RAW, sluice_model::schemas::RecordType::RawMessage),
        (PASS[0], sluice_model::schemas::RecordType::RawMessage),
    ] {
        store.register(t, ty).await?;
    }
    if known_patients > 0 {
        let t = Instant::now();
        let (kafka, st) = (rt.kafka.clone(), store.clone());
        let n = tokio::task::spawn_blocking(move || known::produce(&kafka, &st, &known::index(known_patients))).await??;
        eprintln!(
            "{known_patients} known patients: {n} identity records produced in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    let health = Health::new();
    let mllp = free_addr()?;
    // plaintext MLLP, as the pass-through chain has no TLS either; the APIs need a token, which
    // nobody here uses
    let plain = sluice_runtime::tls::ListenerTls {
        plaintext: true,
        ..Default::default()
    };
    let listeners = up::Listeners {
        mllp_addr: mllp.clone(),
        fhir_addr: String::new(),
        dead_letter_addr: free_addr()?,
        review_addr: String::new(),
        mllp_tls: plain.clone(),
        http_tls: plain,
        auth: sluice_runtime::auth::AuthConfig {
            tokens: vec![sluice_runtime::auth::StaticToken {
                actor: "sluice-bench".into(),
                role: sluice_runtime::auth::Role::Operator,
                token: sluice_runtime::config::Secret::new(hex::encode(rand::random::<[u8; 32]>())),
            }],
            ..Default::default()
        },
    };
    let mut services = up::spawn_services(&rt, &listeners, &shutdown, &health);
    let ready = Instant::now();
    while !health.is_ready() {
        if let Some(Ok((name, r))) = services.try_join_next() {
            anyhow::bail!("{name} ended before it was ready: {r:?}");
        }
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(300),
            "the services were not ready in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("services ready in {:.1} s", ready.elapsed().as_secs_f64());
    let routed = sluice_route::load_rules(&sluice_route::Config::default())?.destinations();

    // warm-up: connections, schema caches, the first transactions
    let warm = generate::messages_for(200, 100, u64::try_from(micros_now()).unwrap_or(1));
    let c = Collector::start(&rt, &routed)?;
    closed_loop_mllp(&mllp, &warm, 4).await?;
    c.finish(Duration::from_secs(5), Duration::from_secs(120)).await;

    // messages of their own in every run: against a cluster kept between runs, a second run
    // of the same messages would be skipped as resends (as it should be)
    let seed = u64::try_from(micros_now()).unwrap_or(0);

    // warm-up of both chains before anything is measured, in chunks of `--warmup` messages each,
    // until a JVM broker's compiler threads go quiet: a fresh broker spent a fifth of both cores
    // compiling (perf: `C2 CompilerThread` 21% of the samples) through its first 40 s of load,
    // which charged whichever side ran first for the other's warm broker
    let mut raw_values = Vec::new();
    let mut pass: Option<(Shutdown, Vec<std::thread::JoinHandle<()>>, FutureProducer)> = None;
    for chunk in 0..if a.warmup > 0 { 8 } else { 1 } {
        let t = Instant::now();
        let jit = broker_pid.and_then(jit_cpu_seconds);
        if a.warmup > 0 {
            let msgs = generate::messages_for(a.warmup, a.warmup, seed + 100 + chunk);
            let c = Collector::start(&rt, &routed)?;
            closed_loop_mllp(&mllp, &msgs, a.conns).await?;
            c.finish(Duration::from_secs(5), Duration::from_secs(600)).await;
        }
        // the pass-through copies the pipeline's own raw records byte for byte
        if raw_values.is_empty() {
            raw_values = receipts(&rt, &store).await?.1;
        }
        if !a.no_baseline {
            if pass.is_none() {
                let partitions = Topology::load()?.topic(names::RAW)?.partitions;
                create_pass_topics(&rt, partitions).await?;
                let copies = Shutdown::new();
                let threads = start_copies(&rt, &store, &copies, &health);
                let producer: FutureProducer = sluice_runtime::kafka::idempotent_producer(&rt.kafka, "sluice-bench-pass").create()?;
                pass = Some((copies, threads, producer));
            }
            if let Some((_, _, producer)) = &pass {
                let c = Collector::start(&rt, &[PASS[3].to_owned()])?;
                pass_closed(0, producer, &raw_values, a.warmup.max(200), a.conns).await?;
                c.finish(Duration::from_secs(5), Duration::from_secs(600)).await;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let compiling = jit.zip(broker_pid.and_then(jit_cpu_seconds)).map(|(a, b)| (b - a) / secs);
        eprintln!(
            "warm-up {}: {} messages through each chain in {secs:.1} s{}",
            chunk + 1,
            a.warmup,
            compiling.map_or(String::new(), |c| format!(", broker compiling {:.0}% of a core", c * 100.0))
        );
        // not a JVM (Tansu), or its compiler under 5% of a core
        if compiling.is_none_or(|c| c < 0.05) {
            break;
        }
    }

    // flat out, pipeline and pass-through taking turns (`--rounds`), the pipeline first in odd
    // rounds and second in even ones: this machine's speed drifts by tens of percent within
    // minutes, and each round's ratio compares two runs made a minute apart; the figures are
    // each side's median, the ratio the median of the rounds'
    let mut rounds: Vec<(Figures, Option<Figures>)> = Vec::new();
    for r in 0..a.rounds.max(1) {
        let pass_first = r % 2 == 1;
        let mut pf = None;
        if pass_first && let Some((_, _, producer)) = &pass {
            pf = Some(pass_round(&rt, producer, &raw_values, a, r, broker_pid).await?);
        }
        let msgs = generate::messages_for(a.messages, a.messages, seed + 10 + r as u64);
        let c = Collector::start(&rt, &routed)?;
        let first = micros_now();
        let cpu = Cpu::now(broker_pid);
        let (ack, accepted) = closed_loop_mllp(&mllp, &msgs, a.conns).await?;
        let (seen, end) = c
            .finish_with_cpu(Duration::from_secs(10), Duration::from_secs(900), broker_pid)
            .await;
        let cpu = cpu.per_message(end, msgs.len());
        let (received, values) = receipts(&rt, &store).await?;
        raw_values = values;
        let mut f = pipeline_figures(&store, &seen, &received, &msgs, first, ack, accepted).await;
        if f.missing > 0 {
            (f.held, f.missing) = account_missing(&rt, &store, &seen, &msgs).await?;
        }
        f.cpu_us = cpu;
        eprintln!("{}", f.line(&format!("pipeline, flat out, round {}", r + 1)));
        if !pass_first && let Some((_, _, producer)) = &pass {
            pf = Some(pass_round(&rt, producer, &raw_values, a, r, broker_pid).await?);
        }
        rounds.push((f, pf));
    }

    // open loop at the offered rate, once each
    let count = (a.rate * a.seconds).round() as usize;
    let msgs = Arc::new(generate::messages_for(count, count, seed + 3));
    let c = Collector::start(&rt, &routed)?;
    let first = micros_now();
    let report = crate::load::load(&mllp, msgs.clone(), a.rate, a.conns, a.seconds).await?;
    let seen = c.finish(Duration::from_secs(10), Duration::from_secs(900)).await;
    let (received, _) = receipts(&rt, &store).await?;
    let mut pipeline_rate = pipeline_figures(&store, &seen, &received, &msgs, first, report.latencies, report.accepted).await;
    if pipeline_rate.missing > 0 {
        (pipeline_rate.held, pipeline_rate.missing) = account_missing(&rt, &store, &seen, &msgs).await?;
    }
    eprintln!("{}", pipeline_rate.line(&format!("pipeline, {:.0} msg/s offered", a.rate)));
    let mut pass_rate = None;
    if let Some((copies, threads, producer)) = pass {
        let c = Collector::start(&rt, &[PASS[3].to_owned()])?;
        let first = micros_now();
        let ack = pass_open(2, &producer, &raw_values, a.rate, a.seconds).await?;
        let seen = c.finish(Duration::from_secs(5), Duration::from_secs(600)).await;
        let f = pass_figures(2, &seen, first, ack, count);
        eprintln!("{}", f.line(&format!("pass-through, {:.0} msg/s offered", a.rate)));
        pass_rate = Some(f);
        copies.trigger();
        for t in threads {
            let _ = t.join();
        }
    }

    // how long the stages' transactions stayed open (first input to commit), the main term of
    // each hop's latency
    let m = sluice_runtime::telemetry::runtime_metrics();
    let mut open = Vec::new();
    for s in ["normalise", "identifier-match", "route"].iter().chain(PASS_STAGES.iter()) {
        let h = m.transaction_seconds.with_label_values(&[s]);
        let (n, sum) = (h.get_sample_count(), h.get_sample_sum());
        if n > 0 {
            open.push(format!("{s} {:.1} ms x{n}", sum * 1000.0 / n as f64));
        }
    }
    eprintln!("mean transaction time (count): {}", open.join(", "));

    shutdown.trigger();
    while services.join_next().await.is_some() {}
    if let Some(mut child) = broker_child {
        let _ = child.kill().await;
    }
    Ok(Measured {
        known: known_patients,
        rounds,
        pipeline_rate,
        pass_rate,
    })
}

async fn pipeline(a: PipelineArgs) -> anyhow::Result<()> {
    sluice_runtime::telemetry::init_logging("text");
    let mut all = Vec::new();
    for &k in &a.known_patients {
        all.push(one_size(&a, k).await?);
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "\nsluice bench pipeline: {} rounds of {} messages flat out over {} connections, then {:.0} msg/s for {:.0} s; {cpus} CPUs; broker {}",
        a.rounds,
        a.messages,
        a.conns,
        a.rate,
        a.seconds,
        a.bootstrap_servers.as_deref().unwrap_or("embedded (Tansu, in memory)")
    );
    for m in &all {
        println!("\nknown patients: {}", m.known);
        for (r, (pl, pass)) in m.rounds.iter().enumerate() {
            println!("{}", pl.line(&format!("pipeline, flat out, round {}", r + 1)));
            if let Some(p) = pass {
                println!("{}", p.line(&format!("pass-through, flat out, round {}", r + 1)));
            }
        }
        let pipe = median(m.rounds.iter().map(|(p, _)| p.per_sec).collect());
        let ratios: Vec<f64> = m
            .rounds
            .iter()
            .filter_map(|(pl, pass)| pass.as_ref().map(|p| pl.per_sec / p.per_sec.max(1e-9)))
            .collect();
        if ratios.is_empty() {
            println!("  pipeline flat out, median of {} rounds: {pipe:.0} msg/s", m.rounds.len());
        } else {
            let pass = median(m.rounds.iter().filter_map(|(_, p)| p.as_ref().map(|p| p.per_sec)).collect());
            println!(
                "  median of {} rounds: pipeline {pipe:.0} msg/s, pass-through {pass:.0} msg/s; throughput ratio pipeline/pass-through {:.2} (rounds: {})",
                m.rounds.len(),
                median(ratios.clone()),
                ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
            );
            let total = |f: &Figures| f.cpu_us.map(|(a, b)| a + b);
            let pipe_cpu = median(m.rounds.iter().filter_map(|(p, _)| total(p)).collect());
            let pass_cpu = median(m.rounds.iter().filter_map(|(_, p)| p.as_ref().and_then(total)).collect());
            if pipe_cpu > 0.0 && pass_cpu > 0.0 {
                println!(
                    "  CPU per message (this process + broker), median: pipeline {pipe_cpu:.0} us, pass-through {pass_cpu:.0} us; pass-through/pipeline {:.2} (the throughput ratio the CPU alone allows)",
                    pass_cpu / pipe_cpu
                );
            }
        }
        println!("{}", m.pipeline_rate.line(&format!("pipeline, {:.0} msg/s offered", a.rate)));
        if let Some(p) = &m.pass_rate {
            println!("{}", p.line(&format!("pass-through, {:.0} msg/s offered", a.rate)));
            let r = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64().max(1e-9);
            println!(
                "  latency ratio pipeline/pass-through: ACK p99 {:.2}, e2e p99 {:.2}",
                r(pct(&m.pipeline_rate.ack, 0.99), pct(&p.ack, 0.99)),
                r(pct(&m.pipeline_rate.e2e, 0.99), pct(&p.e2e, 0.99))
            );
        }
    }
    Ok(())
}

// ---- stages alone ----

/// A record between stages: topic, key, value.
type Rec = (String, Vec<u8>, Vec<u8>);

/// The raw record ingest would write for an MLLP payload.
fn raw_record(payload: &[u8], n: usize) -> RawMessage {
    RawMessage {
        raw_id: sluice_model::ids::sha256_hex(payload),
        transport: "mllp".into(),
        listener: "bench".into(),
        peer: "127.0.0.1".into(),
        received_at: i64::try_from(n).unwrap_or(0),
        detected_charset: "ASCII".into(),
        payload: payload.to_vec(),
        ..Default::default()
    }
}

fn feed<P: Processor>(p: &mut P, inputs: &[Rec]) -> Vec<Rec> {
    let ctx = Context {
        now_micros: 1_700_000_000_000_000,
    };
    let mut out = Vec::new();
    for (i, (topic, key, value)) in inputs.iter().enumerate() {
        let input = Input {
            topic,
            partition: 0,
            offset: i64::try_from(i).unwrap_or(0),
            key: Some(key),
            value,
            replay: false,
        };
        if let Outcome::Emit(o) = p.process(&input, &ctx) {
            out.extend(o.into_iter().map(|o| (o.topic, o.key, o.value)));
        }
        if i % 500 == 499 {
            p.committed();
        }
    }
    p.committed();
    out
}

// one function per stage, never inlined, so callgrind can count each alone (--toggle-collect)
#[inline(never)]
fn stage_normalise(p: &mut sluice_normalise::Normaliser, inputs: &[Rec]) -> Vec<Rec> {
    feed(p, inputs)
}

#[inline(never)]
fn stage_identifier_match(p: &mut sluice_identifier_match::Stage, inputs: &[Rec]) -> Vec<Rec> {
    feed(p, inputs)
}

#[inline(never)]
fn stage_route(p: &mut sluice_route::Router, inputs: &[Rec]) -> Vec<Rec> {
    feed(p, inputs)
}

async fn stages(a: StagesArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rt = RuntimeConfig {
        schema_registry_url: format!("http://{}", listener.local_addr()?),
        ..Default::default()
    };
    let sd = shutdown.clone();
    tokio::spawn(sluice_registry::server::serve(listener, async move { sd.wait().await }));
    // a store per service, as in the pipeline: each registers what it writes and fetches the
    // writer schemas of what it reads from the registry (one shared store would know every
    // schema as its own, and hide what decoding a fetched schema costs)
    let store = sluice_runtime::stage::schema_store(&rt)?;
    store.register(names::RAW, sluice_model::schemas::RecordType::RawMessage).await?;
    let mut stores = HashMap::new();
    for s in ["normalise", "identifier-match", "route"] {
        let st = sluice_runtime::stage::schema_store(&rt)?;
        sluice_runtime::register_produced(&st, s).await?;
        stores.insert(s, st);
    }
    let rules = sluice_route::load_rules(&sluice_route::Config::default())?;
    for d in rules.destinations() {
        stores["route"]
            .register(&d, sluice_model::schemas::RecordType::MatchedEvent)
            .await?;
    }
    let raws: Vec<Rec> = generate::messages_for(a.messages, a.messages, 2)
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let r = raw_record(m, n);
            let v = store.encode(names::RAW, &r)?;
            anyhow::Ok((names::RAW.to_owned(), r.raw_id.into_bytes(), v))
        })
        .collect::<Result<_, _>>()?;
    let only = a.only.as_deref();
    let report = |what: &str, n: usize, out: &[Rec], took: Duration| {
        let mut per_topic = std::collections::BTreeMap::<&str, usize>::new();
        for (t, _, _) in out {
            *per_topic.entry(t.as_str()).or_default() += 1;
        }
        let per_topic: Vec<String> = per_topic
            .iter()
            .map(|(t, c)| format!("{t} {:.2}", *c as f64 / n.max(1) as f64))
            .collect();
        println!(
            "{what:<18} {n:>6} inputs -> {:>6} outputs  {:>8.1} µs per input  (outputs per input: {})",
            out.len(),
            took.as_secs_f64() * 1e6 / n.max(1) as f64,
            per_topic.join(", ")
        );
    };

    let prefetch = |st: &Arc<SchemaStore>, recs: &[Rec]| {
        let (st, first) = (st.clone(), recs.first().map(|(_, _, v)| v.clone()));
        async move {
            if let Some(v) = first {
                st.prefetch(&v).await?;
            }
            anyhow::Ok(())
        }
    };
    prefetch(&stores["normalise"], &raws).await?;
    let mut normaliser = sluice_normalise::Normaliser::new(stores["normalise"].clone(), Default::default());
    let t = Instant::now();
    let normalised = stage_normalise(&mut normaliser, &raws);
    if only.is_none_or(|o| o == "normalise") {
        report("normalise", raws.len(), &normalised, t.elapsed());
    }
    let normalised: Vec<_> = normalised.into_iter().filter(|(t, _, _)| t == names::NORMALISED).collect();

    let index = known::index(a.known_patients);
    let st = stores["identifier-match"].clone();
    prefetch(&st, &normalised).await?;
    let resolver = sluice_identifier_match::resolve::Resolver::new(index, Box::new(sluice_identifier_match::AvroCodec(st.clone())));
    let mut matcher = sluice_identifier_match::Stage::new(st, resolver);
    let t = Instant::now();
    let matched = stage_identifier_match(&mut matcher, &normalised);
    if only.is_none_or(|o| o == "identifier-match") {
        report("identifier-match", normalised.len(), &matched, t.elapsed());
    }
    let matched: Vec<_> = matched.into_iter().filter(|(t, _, _)| t == names::MATCHED).collect();

    prefetch(&stores["route"], &matched).await?;
    let mut router = sluice_route::Router::new(stores["route"].clone(), rules);
    let t = Instant::now();
    let routed = stage_route(&mut router, &matched);
    if only.is_none_or(|o| o == "route") {
        report("route", matched.len(), &routed, t.elapsed());
    }
    anyhow::ensure!(!routed.is_empty(), "nothing came out of route");
    shutdown.trigger();
    Ok(())
}

/// One flat-out round of the pass-through chain.
async fn pass_round(
    rt: &RuntimeConfig,
    producer: &FutureProducer,
    raw_values: &[Vec<u8>],
    a: &PipelineArgs,
    r: usize,
    broker_pid: Option<u32>,
) -> anyhow::Result<Figures> {
    let run = 10 + u8::try_from(r).unwrap_or(u8::MAX - 10);
    let c = Collector::start(rt, &[PASS[3].to_owned()])?;
    let first = micros_now();
    let cpu = Cpu::now(broker_pid);
    let ack = pass_closed(run, producer, raw_values, a.messages, a.conns).await?;
    let (seen, end) = c
        .finish_with_cpu(Duration::from_secs(5), Duration::from_secs(600), broker_pid)
        .await;
    let mut f = pass_figures(run, &seen, first, ack, a.messages);
    f.cpu_us = cpu.per_message(end, a.messages);
    eprintln!("{}", f.line(&format!("pass-through, flat out, round {}", r + 1)));
    Ok(f)
}

/// The median; of an even count, the mean of the middle two (taking the upper one flattered a
/// two-round ratio: rounds 1.66 and 0.30 were reported as 1.66).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert!((super::median(vec![1.66, 0.30]) - 0.98).abs() < 1e-9);
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![]), 0.0);
    }
}
