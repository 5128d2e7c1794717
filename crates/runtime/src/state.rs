//! Rebuilding in-memory state from a compacted topic at start-up.

use crate::config::KafkaConfig;
use crate::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Partition EOF is how the loader knows it is done: not an error worth logging.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let eof = matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(%error, reason, "state loader client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// How long the loaders keep retrying a broker that fails (a broker restarting, a leader
/// moving) before giving up and letting the process exit.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// How long the loader goes on reading after every partition has reached its end once, when
/// records keep arriving (another instance writing).
const SETTLE: Duration = Duration::from_secs(2);

/// Calls `f` until it succeeds or [`RETRY_FOR`] has passed.
fn retrying<T>(what: &str, mut f: impl FnMut() -> Result<T, rdkafka::error::KafkaError>) -> anyhow::Result<T> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut delay = Duration::from_millis(100);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, what, "state loader: kafka request failed, retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => anyhow::bail!("{what} failed: {e}"),
        }
    }
}

/// A consumer error the loader cannot wait out.
fn refused(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(Code::TopicAuthorizationFailed | Code::GroupAuthorizationFailed | Code::Authentication)
    )
}

/// Reads every committed record of `topic` from the beginning and hands each (key, value) to
/// `apply`, in partition order. It stops once every partition has reached its end at least once
/// (with `read_committed`, the end is the last stable offset at that moment, so everything
/// committed before the call has been read) and then either nothing new arrived for a short
/// quiet period or [`SETTLE`] has passed: another instance writing to the topic all the time
/// must not keep a restarting one loading forever, and a broker whose end offsets read low
/// right after a write still gets a moment to show the write. Callers must have fenced their
/// previous producer first (init_transactions), so no open transaction of theirs holds the
/// read back.
pub fn read_topic(cfg: &KafkaConfig, topic: &str, mut apply: impl FnMut(Option<&[u8]>, Option<&[u8]>)) -> anyhow::Result<u64> {
    let mut c = kafka::base(cfg, "sluice-state-loader");
    c.set("group.id", "sluice-state-loader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<QuietEof> = c.create_with_context(QuietEof)?;
    let meta = retrying("reading topic metadata", || {
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
    })?;
    let partitions: Vec<i32> = meta.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} has no partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut at_end: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut reached: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut all_reached: Option<Instant> = None;
    let mut last_record = Instant::now();
    let quiet = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut n = 0u64;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                apply(m.key(), m.payload());
                n += 1;
                at_end.remove(&m.partition());
                last_record = Instant::now();
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                reached.insert(p);
                if reached.len() == partitions.len() && all_reached.is_none() {
                    all_reached = Some(Instant::now());
                }
            }
            Some(Err(e)) if refused(&e) => anyhow::bail!("reading {topic} failed: {e}"),
            // a broker restarting or a leader moving: the consumer reconnects on its own
            Some(Err(e)) => tracing::debug!(error = %e, topic, "state loader consumer error"),
            None => {}
        }
        let settled = all_reached.is_some_and(|t| t.elapsed() > SETTLE);
        if all_reached.is_some() && ((at_end.len() == partitions.len() && last_record.elapsed() > quiet) || settled) {
            return Ok(n);
        }
    }
    anyhow::bail!("reading {topic} did not reach its end in time")
}

/// The consumer group's committed offsets (the next offset to read) on every partition of
/// `topics`; partitions with nothing committed are absent. Reading them does not join the group.
pub fn committed_offsets(cfg: &KafkaConfig, group: &str, topics: &[&str]) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let mut c = kafka::base(cfg, "sluice-state-loader");
    c.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer<QuietEof> = c.create_with_context(QuietEof)?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let meta = retrying("reading topic metadata", || {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
        })?;
        for p in meta.topics().iter().flat_map(|t| t.partitions().iter()) {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = retrying("reading committed offsets", || {
        consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))
    })?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect())
}
