//! identifier-match: canonical events (`clinical.normalised.v1`) to matched events with an
//! enterprise patient id (`clinical.matched.v1`), over the matcher crate (`sluice_matcher`).
//!
//! Each event's patient is scored against the records that share a block with it
//! (Fellegi-Sunter, weights from a versioned file) and its enterprise id recomputed under the
//! hard rules (never two valid NHS numbers in one enterprise id, twins never linked by a score,
//! a reviewer's "not the same person" kept for ever). Every decision carries its evidence
//! (comparison levels, weights, total) in the matched event or the review record, never in logs.
//! When enterprise ids change (an NHS number arrives for an MRN-only patient, a patient merge, a
//! reviewer's link or "not the same person", an A37 unlink) an `identity.changes.v1` event names
//! both ids. A new record that scores in the review band is held (`identity.review.v1`) until a
//! person decides through the review API ([`api`]); decisions travel through
//! `identity.decisions.v1`, which this stage consumes, so they commit exactly once with
//! everything they change and release the held events.
//!
//! State: records and open review items in the compacted `identity.records.v1`, written in the
//! same transaction as the events and read back at start-up (committed work only). The public
//! key to enterprise id lookup stays in `identity.links.v1`.
//!
//! Rules that protect patients, unchanged: an NHS number that fails its modulus 11 check is never
//! a key; `""` is never a value or key; conflicting identifiers, clinical content without a
//! patient and events without a usable identifier are held for review.

pub mod api;
pub mod metrics;
pub mod resolve;

use resolve::{Codec, Out, Position, Resolver};
use serde::{Deserialize, Serialize};
use sluice_matcher::{Index, Weights};
use sluice_model::topology::names;
use sluice_model::{ClinicalEvent, IdentityDecision, IdentityRecord, IdentityState, MatchedEvent, ReviewItem};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::processor::{Context, Input, Outcome, Output, Processor};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
use std::collections::HashMap;
use std::sync::Arc;

pub use sluice_matcher::{Key, keys_of, usable};

pub const SERVICE: &str = "identifier-match";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    /// A weights file (see `crates/matcher/weights/`); empty: the compiled-in one.
    pub weights_file: String,
    pub review_api: api::ApiConfig,
    /// Who may call the review API: viewers list, reviewers open items and decide.
    pub auth: sluice_runtime::auth::AuthConfig,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.runtime.validate()?;
        if self.review_api.enabled() {
            self.review_api.tls.validate("review_api.tls")?;
            self.auth.validate("auth")?;
        }
        Ok(())
    }
}

/// Held events kept as Avro (Confluent wire format) inside review items.
pub struct AvroCodec(pub Arc<SchemaStore>);

impl Codec for AvroCodec {
    fn encode(&self, ev: &MatchedEvent) -> Option<Vec<u8>> {
        self.0.encode(names::REVIEW, ev).ok()
    }
    fn decode(&self, bytes: &[u8]) -> Option<MatchedEvent> {
        self.0.decode(bytes).ok()
    }
}

/// Held events kept as JSON (tests and the in-process benchmark).
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn encode(&self, ev: &MatchedEvent) -> Option<Vec<u8>> {
        serde_json::to_vec(ev).ok()
    }
    fn decode(&self, bytes: &[u8]) -> Option<MatchedEvent> {
        serde_json::from_slice(bytes).ok()
    }
}

pub fn weights(cfg: &Config) -> anyhow::Result<Arc<Weights>> {
    if cfg.weights_file.is_empty() {
        return Ok(Arc::new(Weights::default_weights()));
    }
    let text = std::fs::read_to_string(&cfg.weights_file).map_err(|e| anyhow::anyhow!("weights_file {}: {e}", cfg.weights_file))?;
    Ok(Arc::new(Weights::parse(&text)?))
}

/// The stage: decodes, resolves, encodes.
pub struct Stage {
    store: Arc<SchemaStore>,
    pub resolver: Resolver,
}

impl Stage {
    pub fn new(store: Arc<SchemaStore>, resolver: Resolver) -> Stage {
        Stage { store, resolver }
    }

    fn encode(&self, out: Vec<Out>, source_key: &[u8]) -> Result<Vec<Output>, &'static str> {
        let mut outputs = Vec::with_capacity(out.len());
        for o in out {
            let (topic, key, value) = match &o {
                Out::Matched(m) => (
                    names::MATCHED,
                    m.enterprise_id
                        .clone()
                        .map(String::into_bytes)
                        .unwrap_or_else(|| source_key.to_vec()),
                    self.store.encode(names::MATCHED, m),
                ),
                Out::Review(m) => (names::REVIEW, source_key.to_vec(), self.store.encode(names::REVIEW, m)),
                Out::State(s) => (names::RECORDS, s.key.clone().into_bytes(), self.store.encode(names::RECORDS, s)),
                Out::Change(c) => (
                    names::CHANGES,
                    c.from_enterprise_id.clone().into_bytes(),
                    self.store.encode(names::CHANGES, c),
                ),
                Out::Link(l) => (names::LINKS, l.key.clone().into_bytes(), self.store.encode(names::LINKS, l)),
            };
            let value = value.map_err(|_| "avro_encode_failed")?;
            outputs.push(Output {
                topic: topic.into(),
                key,
                value,
            });
        }
        Ok(outputs)
    }
}

impl Processor for Stage {
    fn process(&mut self, input: &Input<'_>, ctx: &Context) -> Outcome {
        let pos = Position {
            topic: input.topic.to_owned(),
            partition: input.partition,
            offset: input.offset,
        };
        let source_key = input.key.unwrap_or_default().to_vec();
        let out = if input.topic == names::DECISIONS {
            let d: IdentityDecision = match self.store.decode(input.value) {
                Ok(d) => d,
                Err(e) => {
                    return Outcome::Reject {
                        code: e.code(),
                        detail: "identity decision could not be decoded".into(),
                    };
                }
            };
            let (out, outcome) = self.resolver.decision(&d, ctx.now_micros, &pos);
            metrics::metrics().decisions.with_label_values(&[d.action_code(), outcome]).inc();
            if outcome != "applied" {
                tracing::warn!(outcome, "a review decision was refused");
            }
            out
        } else {
            let ev: ClinicalEvent = match self.store.decode(input.value) {
                Ok(e) => e,
                Err(e) => {
                    return Outcome::Reject {
                        code: e.code(),
                        detail: "canonical event could not be decoded".into(),
                    };
                }
            };
            self.resolver.event(ev, ctx.now_micros, &pos)
        };
        for o in &out {
            let m = metrics::metrics();
            match o {
                Out::Matched(e) => m.outcomes.with_label_values(&[metrics::bounded(&e.match_result.outcome)]).inc(),
                Out::Review(_) => m.outcomes.with_label_values(&["review"]).inc(),
                Out::Change(c) => m.changes.with_label_values(&[metrics::bounded(&c.kind)]).inc(),
                _ => {}
            }
        }
        match self.encode(out, &source_key) {
            Ok(outputs) => Outcome::Emit(outputs),
            Err(code) => Outcome::Reject {
                code,
                detail: "an identity output could not be encoded".into(),
            },
        }
    }

    fn committed(&mut self) {
        self.resolver.commit();
    }

    fn aborted(&mut self) {
        self.resolver.abort();
    }
}

/// Extension for bounded metric labels.
trait ActionCode {
    fn action_code(&self) -> &'static str;
}

impl ActionCode for IdentityDecision {
    fn action_code(&self) -> &'static str {
        match self.action.as_str() {
            "link" => "link",
            "not_same" => "not_same",
            "new_patient" => "new_patient",
            _ => "other",
        }
    }
}

/// Whether a state record read back at start-up is committed work: the input it was written
/// for must be below the consumer group's committed offset (a broker that shows aborted
/// records to `read_committed` readers would otherwise hand back state that never happened).
pub fn trusts(s: &IdentityState, committed: &HashMap<(String, i32), i64>) -> bool {
    committed
        .get(&(s.input_topic.clone(), s.input_partition))
        .is_some_and(|&next| s.input_offset < next)
}

/// The latest trusted state of every key, records and open items apart.
pub fn latest_trusted(
    states: impl IntoIterator<Item = IdentityState>,
    committed: &HashMap<(String, i32), i64>,
) -> (Vec<IdentityRecord>, Vec<ReviewItem>, u64) {
    let mut latest: HashMap<String, IdentityState> = HashMap::new();
    let mut untrusted = 0;
    for s in states {
        if trusts(&s, committed) {
            latest.insert(s.key.clone(), s);
        } else {
            untrusted += 1;
        }
    }
    let mut records = Vec::new();
    let mut items = Vec::new();
    for s in latest.into_values() {
        if let Some(r) = s.record {
            records.push(r);
        }
        if let Some(i) = s.item {
            items.push(i);
        }
    }
    (records, items, untrusted)
}

/// Reads the matcher's records and open review items back from `identity.records.v1`.
pub fn load(cfg: &Config, store: Arc<SchemaStore>, handle: &tokio::runtime::Handle) -> anyhow::Result<Resolver> {
    let started = std::time::Instant::now();
    let mut raw: Vec<Vec<u8>> = Vec::new();
    let mut bad = 0u64;
    sluice_runtime::state::read_topic(&cfg.runtime.kafka, names::RECORDS, |_, value| {
        let Some(v) = value else { return };
        if handle.block_on(store.prefetch(v)).is_err() {
            bad += 1;
            return;
        }
        raw.push(v.to_vec());
    })?;
    // decoding is most of a start-up at a million records: every core takes a share
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = raw.len().div_ceil(threads).max(1);
    let decoded: Vec<Option<IdentityState>> = std::thread::scope(|s| {
        let parts: Vec<_> = raw
            .chunks(chunk)
            .map(|part| {
                let store = &store;
                s.spawn(move || part.iter().map(|v| store.decode::<IdentityState>(v).ok()).collect::<Vec<_>>())
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    drop(raw);
    bad += decoded.iter().filter(|s| s.is_none()).count() as u64;
    let states: Vec<IdentityState> = decoded.into_iter().flatten().collect();
    if bad > 0 {
        anyhow::bail!("{bad} identity records could not be read: refusing to match on a partial index");
    }
    let committed = sluice_runtime::state::committed_offsets(
        &cfg.runtime.kafka,
        &sluice_runtime::group_id(SERVICE),
        &[names::NORMALISED, names::DECISIONS],
    )?;
    let (records, items, untrusted) = latest_trusted(states, &committed);
    if untrusted > 0 {
        tracing::warn!(
            records = untrusted,
            "identity records from transactions that never committed ignored"
        );
    }
    let mut index = Index::new(weights(cfg)?);
    let n = records.len();
    index.load(records);
    let mut resolver = Resolver::new(index, Box::new(AvroCodec(store)));
    resolver.load_items(items);
    tracing::info!(records = n, seconds = started.elapsed().as_secs_f64(), "identity index loaded");
    Ok(resolver)
}

pub async fn run(cfg: Config, shutdown: Shutdown, health: Health) -> anyhow::Result<()> {
    cfg.validate()?;
    weights(&cfg)?;
    let view: Arc<std::sync::Mutex<Option<resolve::ReviewView>>> = Arc::default();
    if cfg.review_api.enabled() {
        api::serve(&cfg, view.clone(), shutdown.clone())?;
    } else {
        tracing::info!("review api not started: review_api.addr is empty");
    }
    let c = cfg.clone();
    sluice_runtime::stage::run_stage(
        SERVICE,
        vec![names::NORMALISED.into(), names::DECISIONS.into()],
        cfg.runtime,
        shutdown,
        health,
        move |store, handle| {
            let resolver = load(&c, store.clone(), &handle)?;
            *view.lock().unwrap_or_else(|e| e.into_inner()) = Some(resolver.view());
            Ok(Stage::new(store, resolver))
        },
    )
    .await
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }

    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self)
    }
}

#[cfg(test)]
mod tests;
