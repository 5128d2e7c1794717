//! dead-letter: quarantine of every record a stage rejected, with an HTTP API to list, inspect,
//! replay or discard them.
//!
//! It consumes every `deadletter.*` topic and `deadletter.audit.v1` from the beginning (so the
//! index is rebuilt on restart) and keeps an in-memory index. A replay re-produces the original
//! record (key, value, headers) to its original input topic, marked with the `sluice-replay`
//! header; a discard only records the decision. Each replay or discard writes an audit record in
//! the same transaction as the replayed record.
//!
//! API (JSON, over HTTPS: `api_tls`; every route needs a bearer token, [`sluice_runtime::auth`]):
//!
//! | route | roles | |
//! |---|---|---|
//! | `GET /api/dead-letters?stage=&reason=&status=` | viewer, operator | the list, without payloads |
//! | `GET /api/dead-letters/{id}` | viewer, operator | one letter and its history, without payload |
//! | `GET /api/dead-letters/{id}/payload?reason=...` | operator | the payload: audited first |
//! | `POST /api/dead-letters/{id}/replay` `{"reason": "..."}` | operator | audited |
//! | `POST /api/dead-letters/{id}/discard` `{"reason": "..."}` | operator | audited |
//!
//! Every action and every payload view writes an [`AuditEvent`] to `audit.events.v1` with the
//! authenticated actor (a body naming an `actor` is refused: the actor is the token's) and the
//! reason given: a replay or discard in the same transaction as the replayed record and its
//! `deadletter.audit.v1` record; a payload view before the payload is returned, and if Kafka
//! does not confirm it the payload is not returned.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_model::topology::names;
use sluice_model::{AuditEvent, DeadLetter, DeadLetterAudit};
use sluice_registry::SchemaStore;
use sluice_runtime::audit::{self, Subject};
use sluice_runtime::auth::{self, AuthConfig, Authenticator, Caller, Role};
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::http::Peer;
use sluice_runtime::kafka::{self, Followed, Record, TransactionalWriter};
use sluice_runtime::now_micros;
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{self, Health};
use sluice_runtime::tls::{Acceptor, ListenerTls};
use sluice_runtime::transactional::REPLAY_HEADER;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SERVICE: &str = "dead-letter";
pub const DEAD_LETTER_TOPICS: &[&str] = &[names::DL_INGEST, names::DL_NORMALISE, names::DL_MATCH, names::DL_ROUTE];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    /// Where the API listens; empty: no API (the index is still kept).
    pub api_addr: String,
    /// TLS of the API; `plaintext: true` only behind a proxy or mesh that terminates TLS.
    pub api_tls: ListenerTls,
    /// Who may call the API: viewers list, operators see payloads, replay and discard.
    pub auth: AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runtime: RuntimeConfig::default(),
            api_addr: "127.0.0.1:8082".into(),
            api_tls: ListenerTls::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.runtime.validate()?;
        if !self.api_addr.is_empty() {
            self.api_tls.validate("api_tls")?;
            self.auth.validate("auth")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub letter: DeadLetter,
    pub topic: String,
    pub status: &'static str,
    pub audit: Vec<DeadLetterAudit>,
}

#[derive(Default)]
pub struct Index {
    entries: BTreeMap<String, Entry>,
    /// The label sets exported by the last [`Index::export`], so an emptied one goes away.
    exported: Exported,
}

#[derive(Default)]
struct Exported {
    letters: std::collections::HashSet<(String, String, &'static str)>,
    oldest: std::collections::HashSet<String>,
}

/// The dead-letter service's metrics. Labels: the stage that rejected (a service name), the
/// bounded reason code and the status; never anything of the record.
pub struct Metrics {
    pub letters: prometheus::IntGaugeVec,
    pub oldest: prometheus::IntGaugeVec,
    pub actions: prometheus::IntCounterVec,
}

pub fn metrics() -> &'static Metrics {
    static M: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    M.get_or_init(|| Metrics {
        letters: telemetry::gauge(
            "sluice_dead_letter_letters",
            "dead letters in the index, by stage, reason code and status (quarantined: waiting for a decision; replayed; discarded)",
            &["stage", "reason", "status"],
        ),
        oldest: telemetry::gauge(
            "sluice_dead_letter_oldest_quarantined_timestamp_seconds",
            "when the oldest dead letter still waiting for a decision first failed (Unix seconds), by stage; absent when none waits",
            &["stage"],
        ),
        actions: telemetry::counter(
            "sluice_dead_letter_actions_total",
            "operator actions through the api (replay, discard, view_payload) that were audited and done",
            &["action"],
        ),
    })
}

impl Index {
    pub fn add(&mut self, topic: &str, letter: DeadLetter) {
        let id = letter.dead_letter_id.clone();
        let e = self.entries.entry(id).or_insert_with(|| Entry {
            letter: letter.clone(),
            topic: topic.to_owned(),
            status: "quarantined",
            audit: vec![],
        });
        e.letter = letter;
    }

    /// Sets the index's gauges: letters by stage, reason and status, and the oldest waiting
    /// letter's first failure per stage.
    pub fn export(&mut self) {
        let m = metrics();
        let mut letters: BTreeMap<(String, String, &'static str), i64> = BTreeMap::new();
        let mut oldest: BTreeMap<String, i64> = BTreeMap::new();
        for e in self.entries.values() {
            let l = &e.letter;
            *letters.entry((l.stage.clone(), l.reason_code.clone(), e.status)).or_default() += 1;
            if e.status == "quarantined" {
                let first = l.first_failed_at / 1_000_000;
                oldest.entry(l.stage.clone()).and_modify(|t| *t = (*t).min(first)).or_insert(first);
            }
        }
        for gone in self.exported.letters.iter().filter(|k| !letters.contains_key(*k)) {
            let _ = m.letters.remove_label_values(&[&gone.0, &gone.1, gone.2]);
        }
        for gone in self.exported.oldest.iter().filter(|k| !oldest.contains_key(*k)) {
            let _ = m.oldest.remove_label_values(&[gone]);
        }
        for ((stage, reason, status), n) in &letters {
            m.letters.with_label_values(&[stage.as_str(), reason.as_str(), status]).set(*n);
        }
        for (stage, t) in &oldest {
            m.oldest.with_label_values(&[stage]).set(*t);
        }
        self.exported = Exported {
            letters: letters.into_keys().collect(),
            oldest: oldest.into_keys().collect(),
        };
    }

    pub fn audit(&mut self, a: DeadLetterAudit) {
        if let Some(e) = self.entries.get_mut(&a.dead_letter_id) {
            e.status = if a.action == "replay" { "replayed" } else { "discarded" };
            if !e.audit.iter().any(|x| x.audit_id == a.audit_id) {
                e.audit.push(a);
            }
        }
    }
}

fn summary(e: &Entry) -> Value {
    let l = &e.letter;
    json!({
        "id": l.dead_letter_id, "topic": e.topic, "stage": l.stage, "reason_code": l.reason_code,
        "detail": l.detail, "status": e.status, "original_topic": l.original_topic,
        "original_partition": l.original_partition, "original_offset": l.original_offset,
        "attempt": l.attempt, "first_failed_at": l.first_failed_at, "failed_at": l.failed_at,
        "bytes": l.original_value.len(),
    })
}

#[derive(Clone)]
pub struct Api {
    index: Arc<Mutex<Index>>,
    store: Arc<SchemaStore>,
    writer: Arc<TransactionalWriter>,
}

#[derive(Deserialize)]
pub struct Filter {
    stage: Option<String>,
    reason: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
pub struct Decision {
    #[serde(default)]
    reason: String,
    /// Refused when given: the actor is the token's, never the caller's word.
    #[serde(default)]
    actor: Option<Value>,
}

#[derive(Deserialize)]
pub struct ViewReason {
    #[serde(default)]
    reason: String,
}

type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn error(status: StatusCode, text: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": text })))
}

async fn list(State(api): State<Api>, Query(f): Query<Filter>) -> Json<Value> {
    let ix = api.index.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<Value> = ix
        .entries
        .values()
        .filter(|e| f.stage.as_ref().is_none_or(|s| *s == e.letter.stage))
        .filter(|e| f.reason.as_ref().is_none_or(|s| *s == e.letter.reason_code))
        .filter(|e| f.status.as_ref().is_none_or(|s| s == e.status))
        .map(summary)
        .collect();
    Json(json!({ "count": items.len(), "items": items }))
}

/// One letter and its history, without its payload (viewers too).
async fn inspect(State(api): State<Api>, Path(id): Path<String>) -> Answer {
    let ix = api.index.lock().unwrap_or_else(|e| e.into_inner());
    let e = ix
        .entries
        .get(&id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such dead letter"))?;
    let mut v = summary(e);
    v["audit"] = json!(
        e.audit
            .iter()
            .map(|a| json!({"action": a.action, "reason": a.reason, "actor": a.actor, "at": a.at}))
            .collect::<Vec<_>>()
    );
    Ok(Json(v))
}

/// How long a payload view waits for Kafka to commit its audit record: someone is waiting at a
/// screen, and without the record they see nothing anyway.
const VIEW_AUDIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The payload, for an operator, once the view is audited.
async fn payload(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Query(q): Query<ViewReason>,
) -> Answer {
    if !audit::valid_reason(&q.reason) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "say why you need to see this payload: ?reason=... (3 to 500 characters)",
        ));
    }
    let letter = api
        .index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .get(&id)
        .map(|e| e.letter.clone())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such dead letter"))?;
    let record = audit::event(
        SERVICE,
        &caller,
        "view_payload",
        Subject {
            kind: "dead_letter",
            id: &id,
        },
        q.reason.trim(),
        peer,
    );
    let value = api
        .store
        .encode(names::AUDIT, &record)
        .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "audit record could not be encoded"))?;
    let writer = api.writer.clone();
    let key = id.clone();
    let written = tokio::task::spawn_blocking(move || {
        writer.write(
            &[Record {
                topic: names::AUDIT,
                key: Some(key.as_bytes()),
                value: &value,
                headers: Vec::new(),
            }],
            VIEW_AUDIT_TIMEOUT,
        )
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        // no audit record, no payload
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the view could not be audited (kafka did not confirm): payload not shown, try again",
        ));
    }
    metrics().actions.with_label_values(&["view_payload"]).inc();
    tracing::info!(stage = %letter.stage, reason_code = %letter.reason_code, "dead-letter payload viewed");
    Ok(Json(json!({
        "id": id,
        "payload_text": String::from_utf8_lossy(&letter.original_value),
        "original_headers": letter.original_headers,
        "audit_id": record.audit_id,
    })))
}

async fn act(api: Api, caller: Caller, peer: Option<String>, id: String, d: Decision, action: &'static str) -> Answer {
    if d.actor.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the actor is the one the bearer token names: remove actor from the body",
        ));
    }
    if !audit::valid_reason(&d.reason) {
        return Err(error(StatusCode::BAD_REQUEST, "a reason is required (3 to 500 characters)"));
    }
    let entry = api
        .index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .get(&id)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such dead letter"))?;
    if entry.status != "quarantined" {
        return Err(error(StatusCode::CONFLICT, &format!("dead letter is already {}", entry.status)));
    }
    let target = if action == "replay" {
        match &entry.letter.original_topic {
            Some(t) => Some(t.clone()),
            None => {
                return Err(error(
                    StatusCode::CONFLICT,
                    "ingest rejects have no input topic: fix the message at its source and resend it",
                ));
            }
        }
    } else {
        None
    };
    let reason = d.reason.trim().to_owned();
    let dl_audit = DeadLetterAudit {
        audit_id: sluice_model::ids::uuid_from(&[id.as_bytes(), action.as_bytes(), &now_micros().to_be_bytes()]),
        dead_letter_id: id.clone(),
        action: action.into(),
        reason: reason.clone(),
        actor: caller.actor.clone(),
        target_topic: target.clone(),
        at: now_micros(),
    };
    let access = AuditEvent {
        target_topic: target.clone(),
        related_id: Some(dl_audit.audit_id.clone()),
        ..audit::event(
            SERVICE,
            &caller,
            action,
            Subject {
                kind: "dead_letter",
                id: &id,
            },
            &reason,
            peer,
        )
    };
    let encode_failed = |_| error(StatusCode::INTERNAL_SERVER_ERROR, "audit record could not be encoded");
    let audit_value = api.store.encode(names::DL_AUDIT, &dl_audit).map_err(encode_failed)?;
    let access_value = api.store.encode(names::AUDIT, &access).map_err(encode_failed)?;
    let writer = api.writer.clone();
    let letter = entry.letter.clone();
    let result = tokio::task::spawn_blocking(move || {
        // a replay carries the original headers, minus the replay bookkeeping it sets anew
        let attempt = letter.attempt.to_string();
        let first = letter.first_failed_at.to_string();
        let mut records = Vec::new();
        if let Some(t) = &target {
            let mut headers: Vec<(&str, &[u8])> = letter
                .original_headers
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), REPLAY_HEADER | "sluice-attempt" | "sluice-first-failed-at"))
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect();
            headers.extend([
                (REPLAY_HEADER, letter.dead_letter_id.as_bytes()),
                ("sluice-attempt", attempt.as_bytes()),
                ("sluice-first-failed-at", first.as_bytes()),
            ]);
            records.push(Record {
                topic: t,
                key: letter.original_key.as_deref(),
                value: &letter.original_value,
                headers,
            });
        }
        records.push(Record {
            topic: names::DL_AUDIT,
            key: Some(letter.dead_letter_id.as_bytes()),
            value: &audit_value,
            headers: Vec::new(),
        });
        records.push(Record {
            topic: names::AUDIT,
            key: Some(letter.dead_letter_id.as_bytes()),
            value: &access_value,
            headers: Vec::new(),
        });
        writer.write(&records, Duration::from_secs(30))
    })
    .await
    .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "the write did not finish"))?;
    result.map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "kafka write failed, nothing changed"))?;
    metrics().actions.with_label_values(&[action]).inc();
    tracing::info!(action, stage = %entry.letter.stage, reason_code = %entry.letter.reason_code, "dead letter handled");
    api.index.lock().unwrap_or_else(|e| e.into_inner()).audit(dl_audit);
    Ok(Json(
        json!({ "id": id, "status": if action == "replay" { "replayed" } else { "discarded" }, "audit_id": access.audit_id }),
    ))
}

/// `POST .../replay` or `.../discard`: the same checks and audit, one action each.
fn decision(action: &'static str) -> axum::routing::MethodRouter<Api> {
    post(
        move |State(api): State<Api>,
              Extension(caller): Extension<Caller>,
              Peer(peer): Peer,
              Path(id): Path<String>,
              Json(d): Json<Decision>| async move { act(api, caller, peer, id, d, action).await },
    )
}

/// Who may call each route (see the module documentation).
pub const POLICY: &[auth::Route] = &[
    auth::Route::get("/api/dead-letters", &[Role::Viewer, Role::Operator]),
    auth::Route::get("/api/dead-letters/{id}", &[Role::Viewer, Role::Operator]),
    auth::Route::get("/api/dead-letters/{id}/payload", &[Role::Operator]),
    auth::Route::post("/api/dead-letters/{id}/replay", &[Role::Operator]),
    auth::Route::post("/api/dead-letters/{id}/discard", &[Role::Operator]),
];

impl Api {
    /// The routes, behind authentication and [`POLICY`].
    pub fn router(&self, authenticator: Arc<Authenticator>) -> Router {
        let routes = Router::new()
            .route("/api/dead-letters", get(list))
            .route("/api/dead-letters/{id}", get(inspect))
            .route("/api/dead-letters/{id}/payload", get(payload))
            .route("/api/dead-letters/{id}/replay", decision("replay"))
            .route("/api/dead-letters/{id}/discard", decision("discard"))
            .with_state(self.clone());
        auth::protect(routes, SERVICE, authenticator, POLICY, auth::json_answer)
    }
}

/// How often the index's gauges are recounted.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the index up to date from the dead-letter and audit topics (runs on its own thread).
fn follow(
    cfg: &RuntimeConfig,
    index: Arc<Mutex<Index>>,
    store: Arc<SchemaStore>,
    handle: tokio::runtime::Handle,
    shutdown: Shutdown,
    ready: sluice_runtime::telemetry::Readiness,
) -> anyhow::Result<()> {
    // each instance reads everything: the index is a view, not a work queue
    let group = format!("sluice-dead-letter-{}-{}", cfg.instance_id, now_micros());
    let mut topics: Vec<&str> = DEAD_LETTER_TOPICS.to_vec();
    topics.push(names::DL_AUDIT);
    // the gauges are recounted from the whole index, at most once a second
    let mut exported_at: Option<std::time::Instant> = None;
    let mut export = |index: &Mutex<Index>| {
        if exported_at.is_none_or(|t| t.elapsed() >= EXPORT_INTERVAL) {
            index.lock().unwrap_or_else(|e| e.into_inner()).export();
            exported_at = Some(std::time::Instant::now());
        }
    };
    kafka::follow(&cfg.kafka, SERVICE, &group, &topics, &shutdown, |followed| match followed {
        Followed::Idle => {
            export(&index);
            ready.set(true);
        }
        Followed::Record { topic, value } => {
            export(&index);
            if handle.block_on(store.prefetch(value)).is_err() {
                tracing::warn!("schema for a dead-letter record could not be fetched");
                return;
            }
            let mut ix = index.lock().unwrap_or_else(|e| e.into_inner());
            if topic == names::DL_AUDIT {
                if let Ok(a) = store.decode::<DeadLetterAudit>(value) {
                    ix.audit(a);
                }
            } else if let Ok(l) = store.decode::<DeadLetter>(value) {
                ix.add(topic, l);
            } else {
                tracing::warn!(topic, "undecodable dead letter skipped");
            }
        }
    })?;
    Ok(())
}

pub async fn run(cfg: Config, shutdown: Shutdown, health: Health) -> anyhow::Result<()> {
    cfg.validate()?;
    // certificates and tokens first: an api that cannot be secured does not start
    let secured = if cfg.api_addr.is_empty() {
        None
    } else {
        let tls = Acceptor::new(&cfg.api_tls, "api_tls", SERVICE, &[b"http/1.1"])?;
        if tls.is_none() {
            tracing::warn!("dead-letter api served without tls (api_tls.plaintext)");
        }
        Some((tls, Authenticator::new(&cfg.auth, "auth")?))
    };
    let ready = health.service(SERVICE);
    let store = sluice_runtime::stage::schema_store(&cfg.runtime)?;
    sluice_runtime::stage::register_with_retry(&store, SERVICE, &shutdown).await?;
    let (rt, sd) = (cfg.runtime.clone(), shutdown.clone());
    // retried until the brokers accept this client: not ready meanwhile
    let Some(writer) = tokio::task::spawn_blocking(move || TransactionalWriter::start(&rt, SERVICE, &sd)).await?? else {
        return Ok(());
    };
    let index = Arc::new(Mutex::new(Index::default()));
    let api = Api {
        index: index.clone(),
        store: store.clone(),
        writer: Arc::new(writer),
    };
    if let Some((tls, authenticator)) = secured {
        let listener = tokio::net::TcpListener::bind(&cfg.api_addr).await?;
        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "dead-letter api listening");
        let grace = Duration::from_secs(cfg.runtime.drain_grace_secs);
        tokio::spawn(sluice_runtime::http::serve(
            listener,
            api.router(authenticator),
            tls,
            SERVICE,
            shutdown.clone(),
            grace,
        ));
    }
    let handle = tokio::runtime::Handle::current();
    let rt = cfg.runtime.clone();
    tokio::task::spawn_blocking(move || follow(&rt, index, store, handle, shutdown, ready)).await?
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }

    fn validate(&self) -> anyhow::Result<()> {
        Config::validate(self)
    }
}
