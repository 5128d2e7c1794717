//! The chaos suite's parts: a paced MLLP sender that behaves as a careful real sender does
//! (each patient's messages on one connection, in order; a message is resent until it is
//! answered, and a well-formed one until it is accepted), the faults, and the checks.

use super::{Pipeline, ROUTED};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sluice_model::topology::names;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One message of the run.
#[derive(Clone)]
pub struct Item {
    pub bytes: Vec<u8>,
    pub good: bool,
}

/// The run's messages: per connection, in send order; every patient's messages on one
/// connection, in the order the generator made them.
pub struct Traffic {
    pub per_connection: Vec<Vec<Item>>,
    pub expected: HashSet<String>,
    pub malformed: usize,
}

/// `count` messages about `count / 8` patients (each patient's messages stay on one of
/// `conns` connections), with one malformed message in about a hundred.
pub fn traffic(count: usize, conns: usize, seed: u64) -> Traffic {
    let good = sluice::generate::messages_for(count, (count / 8).max(1), seed);
    let bad = sluice::generate::malformed(count / 100);
    let expected = super::hl7_event_ids(&good);
    let mut per_connection: Vec<Vec<Item>> = vec![Vec::new(); conns];
    let mut rng = StdRng::seed_from_u64(seed);
    for m in good {
        let mrn = sluice_hl7::Message::parse(&m).text_at("PID-3[1].1");
        let c = mrn.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b))) % conns;
        per_connection[c].push(Item { bytes: m, good: true });
    }
    let malformed = bad.len();
    for b in bad {
        let c = rng.random_range(0..conns);
        let at = rng.random_range(0..=per_connection[c].len());
        per_connection[c].insert(at, Item { bytes: b, good: false });
    }
    Traffic {
        per_connection,
        expected,
        malformed,
    }
}

/// What the senders saw.
#[derive(Default, Debug)]
pub struct Sent {
    pub accepted: usize,
    /// answers to malformed messages by MSA-1
    pub malformed_answers: BTreeMap<String, usize>,
    /// AR 207 ("resend"): Kafka had not confirmed the write in time
    pub resend_requests: usize,
    /// a message resent because its connection failed before the answer came
    pub unanswered: usize,
    /// well-formed messages answered with anything but AA or AR 207 (must stay empty)
    pub refused_good: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl Sent {
    fn merge(&mut self, o: Sent) {
        self.accepted += o.accepted;
        for (k, v) in o.malformed_answers {
            *self.malformed_answers.entry(k).or_default() += v;
        }
        self.resend_requests += o.resend_requests;
        self.unanswered += o.unanswered;
        self.refused_good.extend(o.refused_good);
        self.latencies.extend(o.latencies);
    }
}

/// Sends one connection's messages, the k-th at `start + k * interval` (or as soon as the
/// previous one is answered, when late).
async fn connection(port: u16, items: Vec<Item>, interval: Duration, start: Instant) -> Sent {
    let mut sent = Sent::default();
    let mut stream: Option<TcpStream> = None;
    for (k, item) in items.iter().enumerate() {
        tokio::time::sleep_until((start + interval.mul_f64(k as f64)).into()).await;
        let first_try = Instant::now();
        loop {
            assert!(
                first_try.elapsed() < Duration::from_secs(600),
                "a message went unaccepted for 10 minutes"
            );
            let s = match &mut stream {
                Some(s) => s,
                None => match TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(s) => stream.insert(s),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(ack) = sluice_ingest::mllp::send_one(s, &item.bytes, Duration::from_secs(60)).await else {
                // no answer: the message may or may not be kept; a careful sender resends
                stream = None;
                sent.unanswered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let code = sluice_ingest::mllp::ack_code(&ack);
            let resend = code == "AR" && String::from_utf8_lossy(&ack).contains("|207^");
            if item.good && code == "AA" {
                sent.accepted += 1;
                sent.latencies.push(first_try.elapsed());
            } else if resend {
                sent.resend_requests += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            } else if item.good {
                sent.refused_good.push(code);
            } else {
                *sent.malformed_answers.entry(code).or_default() += 1;
            }
            break;
        }
    }
    sent
}

/// Starts every connection's sender; together they offer `rate` messages a second.
pub fn send(port: u16, traffic: &Traffic, rate: f64) -> tokio::task::JoinHandle<Sent> {
    let interval = Duration::from_secs_f64(traffic.per_connection.len() as f64 / rate);
    let start = Instant::now();
    let tasks: Vec<_> = traffic
        .per_connection
        .iter()
        .map(|items| tokio::spawn(connection(port, items.clone(), interval, start)))
        .collect();
    tokio::spawn(async move {
        let mut all = Sent::default();
        for t in tasks {
            all.merge(t.await.unwrap());
        }
        all
    })
}

/// One fault the suite injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL one process (by its harness key), then start it again
    Kill(&'static str, &'static str),
    /// SIGKILL a broker node, then start it again on its data
    Broker(usize),
    /// move every partition's leader to another node
    Leaders,
    /// reset every client connection to the brokers and refuse new ones for two seconds
    Cut,
}

impl Fault {
    pub fn kind(&self) -> String {
        match self {
            Fault::Kill(_, service) => format!("SIGKILL {service}"),
            Fault::Broker(_) => "kill -9 broker".into(),
            Fault::Leaders => "leader change".into(),
            Fault::Cut => "connection cut".into(),
        }
    }
}

/// The run's faults in a random order: `kills` of each service (spread over its instances),
/// `brokers` broker kills, `leaders` leader changes and `cuts` connection cuts.
pub fn faults(
    instances: &[(&'static str, &'static str)],
    kills: usize,
    brokers: usize,
    leaders: usize,
    cuts: usize,
    seed: u64,
) -> Vec<Fault> {
    let mut out = Vec::new();
    for service in super::SERVICES {
        let keys: Vec<_> = instances.iter().filter(|(_, s)| *s == service).collect();
        for k in 0..kills {
            let (key, s) = keys[k % keys.len()];
            out.push(Fault::Kill(key, s));
        }
    }
    out.extend((0..brokers).map(|i| Fault::Broker(i % 3)));
    out.extend((0..leaders).map(|_| Fault::Leaders));
    out.extend((0..cuts).map(|_| Fault::Cut));
    out.shuffle(&mut StdRng::seed_from_u64(seed));
    out
}

/// A counter on one process's `/metrics`; `None` while it does not answer.
pub async fn metric(port: u16, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0)),
    )
}

pub fn committed(service: &str) -> String {
    format!("sluice_runtime_transactions_total{{result=\"committed\",service=\"{service}\"}}")
}

pub const ACCEPTED: &str = r#"sluice_ingest_messages_total{listener="mllp",result="accepted"}"#;

/// Progress counters of every process (commits of the stages, accepted writes of ingest).
pub async fn progress(ports: &[(&'static str, &'static str, u16)]) -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    for (key, service, port) in ports {
        let series = if *service == "ingest" {
            ACCEPTED.to_owned()
        } else {
            committed(service)
        };
        if *service != "dead-letter" {
            out.insert(*key, metric(*port, &series).await.unwrap_or(-1.0));
        }
    }
    out
}

/// Waits until every service that does work has made progress past `before` (summed over its
/// instances): the pipeline as a whole committed again. Returns the slowest service and its
/// time, `None` after `limit`.
pub async fn all_progressed(
    ports: &[(&'static str, &'static str, u16)],
    before: &HashMap<&'static str, f64>,
    since: Instant,
    limit: Duration,
) -> Option<(&'static str, Duration)> {
    let mut pending: HashSet<&'static str> = ports.iter().map(|(_, s, _)| *s).filter(|s| *s != "dead-letter").collect();
    let mut last = ("", Duration::ZERO);
    while !pending.is_empty() {
        if since.elapsed() > limit {
            return None;
        }
        let now = progress(ports).await;
        for (k, s, _) in ports {
            // a counter lower than before belongs to a process started since: it counts from 0
            let moved = now.get(k).zip(before.get(k)).is_some_and(|(n, b)| n > b || (n < b && *n >= 1.0));
            if pending.contains(s) && moved {
                pending.remove(s);
                last = (*s, since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(last)
}

/// Waits until a restarted process did its first unit of work: a stage's first committed
/// transaction, ingest's first accepted write, dead-letter's readiness.
pub async fn first_work(service: &'static str, port: u16, since: Instant, limit: Duration) -> Option<(&'static str, Duration)> {
    loop {
        let done = match service {
            "dead-letter" => reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success()),
            "ingest" => metric(port, ACCEPTED).await.is_some_and(|v| v >= 1.0),
            s => metric(port, &committed(s)).await.is_some_and(|v| v >= 1.0),
        };
        if done {
            return Some((service, since.elapsed()));
        }
        if since.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
/// Checks per-patient order in the routed topics: every patient's events sit in one partition
/// of each topic, in the order they were sent (the generator's control ids `SLC<seed>-<n>`
/// grow with n). Returns how many events it checked.
pub async fn assert_patient_order(p: &Pipeline) -> usize {
    let store = p.store();
    let mut checked = 0;
    for topic in ROUTED.iter().filter(|t| **t != names::REVIEW) {
        let mut last: HashMap<String, (i32, u64)> = HashMap::new();
        let mut records = p.read_all(topic);
        records.sort_by_key(|(part, off, _, _)| (*part, *off));
        for (part, _, _, v) in records {
            store.prefetch(&v).await.unwrap();
            let m: sluice_model::MatchedEvent = store.decode(&v).unwrap();
            let Some(n) = m.event.source.control_id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let mrn = m
                .event
                .patient
                .iter()
                .flat_map(|pt| &pt.identifiers)
                .find(|i| i.type_code.as_deref() == Some("MR"))
                .map(|i| i.value.clone())
                .unwrap_or_default();
            if let Some((was_part, was_n)) = last.insert(mrn.clone(), (part, n)) {
                assert_eq!(was_part, part, "{topic}: one patient's events in two partitions");
                assert!(was_n < n, "{topic}: a patient's event {n} after its event {was_n}");
            }
            checked += 1;
        }
    }
    checked
}

/// Every dead letter in every dead-letter topic has a reason; returns the counts by topic and
/// reason.
pub async fn dead_letter_reasons(p: &Pipeline) -> BTreeMap<(String, String), usize> {
    let store = p.store();
    let mut out = BTreeMap::new();
    for topic in [names::DL_INGEST, names::DL_NORMALISE, names::DL_MATCH, names::DL_ROUTE] {
        for (_, _, _, v) in p.read_all(topic) {
            store.prefetch(&v).await.unwrap();
            let dl: sluice_model::DeadLetter = store.decode(&v).unwrap();
            assert!(!dl.reason_code.is_empty(), "a dead letter without a reason on {topic}");
            *out.entry((topic.to_owned(), dl.reason_code)).or_default() += 1;
        }
    }
    out
}

/// The stages' consumer groups and their input topics.
const STAGE_INPUTS: [(&str, &[&str]); 3] = [
    ("normalise", &[names::RAW, names::FHIR_RAW]),
    ("identifier-match", &[names::NORMALISED]),
    ("route", &[names::MATCHED]),
];

/// Each stage's lag: records on its inputs past its group's committed offsets, less the one
/// transaction marker a partition may end with. Blocking (admin requests).
pub fn lags(p: &Pipeline) -> Vec<(&'static str, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut out = Vec::new();
    for (stage, topics) in STAGE_INPUTS {
        let c: BaseConsumer = p
            .client_config()
            .set("group.id", sluice_runtime::group_id(stage))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in topics {
            let meta = c.fetch_metadata(Some(t), Duration::from_secs(10)).unwrap();
            for part in meta.topics()[0].partitions() {
                tpl.add_partition(t, part.id());
            }
        }
        let committed = c.committed_offsets(tpl.clone(), Duration::from_secs(10)).unwrap();
        let mut lag = 0;
        for e in committed.elements() {
            let (_, high) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10)).unwrap();
            let done = match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => 0,
            };
            lag += (high - done - 1).max(0);
        }
        out.push((stage, lag));
    }
    out
}

/// Waits until every stage has caught up (no lag twice in a row), printing the lags every 30 s;
/// returns how long it took, or `None` after `limit`.
pub async fn wait_drained(p: &Pipeline, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut printed = Instant::now();
    let mut clear = 0;
    while started.elapsed() < limit {
        let l = tokio::task::block_in_place(|| lags(p));
        if printed.elapsed() > Duration::from_secs(30) {
            println!("chaos: draining, lag {l:?}");
            printed = Instant::now();
        }
        clear = if l.iter().all(|(_, n)| *n == 0) { clear + 1 } else { 0 };
        if clear >= 2 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    None
}
