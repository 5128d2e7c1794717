//! dead-letter: quarantine of every record a stage rejected, with an HTTP API to list, inspect,
//! replay or discard them.
//!
//! It consumes every `deadletter.*` topic and `deadletter.audit.v1` from the beginning (so the
//! index is rebuilt on restart) and keeps an in-memory index. A replay re-produces the original
//! record (key, value, headers) to its original input topic, marked with the `sluice-replay`
//! header; a discard only records the decision. Each replay or discard writes an audit record in
//! the same transaction as the replayed record.
//!
//! API (JSON): `GET /api/dead-letters?stage=&reason=&status=`, `GET /api/dead-letters/{id}`,
//! `POST /api/dead-letters/{id}/replay` and `POST /api/dead-letters/{id}/discard` with
//! `{"reason": "...", "actor": "..."}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_model::topology::names;
use sluice_model::{DeadLetter, DeadLetterAudit};
use sluice_registry::SchemaStore;
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::kafka::{self, Followed, Record, TransactionalWriter};
use sluice_runtime::now_micros;
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
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
    pub api_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runtime: RuntimeConfig::default(),
            api_addr: "127.0.0.1:8082".into(),
        }
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
    reason: String,
    actor: String,
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

async fn inspect(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, StatusCode> {
    let ix = api.index.lock().unwrap_or_else(|e| e.into_inner());
    let e = ix.entries.get(&id).ok_or(StatusCode::NOT_FOUND)?;
    let mut v = summary(e);
    v["payload_text"] = json!(String::from_utf8_lossy(&e.letter.original_value));
    v["original_headers"] = json!(e.letter.original_headers);
    v["audit"] = json!(
        e.audit
            .iter()
            .map(|a| json!({"action": a.action, "reason": a.reason, "actor": a.actor, "at": a.at}))
            .collect::<Vec<_>>()
    );
    Ok(Json(v))
}

async fn act(api: Api, id: String, d: Decision, action: &'static str) -> Result<Json<Value>, (StatusCode, String)> {
    if d.reason.trim().is_empty() || d.actor.trim().is_empty() {
        return Err((StatusCode::BAD_REQUEST, "reason and actor are required".into()));
    }
    let entry = api
        .index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .get(&id)
        .cloned()
        .ok_or((StatusCode::NOT_FOUND, "no such dead letter".into()))?;
    if entry.status != "quarantined" {
        return Err((StatusCode::CONFLICT, format!("dead letter is already {}", entry.status)));
    }
    let target = if action == "replay" {
        match &entry.letter.original_topic {
            Some(t) => Some(t.clone()),
            None => {
                return Err((
                    StatusCode::CONFLICT,
                    "ingest rejects have no input topic: fix the message at its source and resend it".into(),
                ));
            }
        }
    } else {
        None
    };
    let audit = DeadLetterAudit {
        audit_id: sluice_model::ids::uuid_from(&[id.as_bytes(), action.as_bytes(), &now_micros().to_be_bytes()]),
        dead_letter_id: id.clone(),
        action: action.into(),
        reason: d.reason,
        actor: d.actor,
        target_topic: target.clone(),
        at: now_micros(),
    };
    let audit_value = api
        .store
        .encode(names::DL_AUDIT, &audit)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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
        writer.write(&records, Duration::from_secs(30))
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    result.map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "kafka write failed, nothing changed".to_owned()))?;
    tracing::info!(action, stage = %entry.letter.stage, reason_code = %entry.letter.reason_code, "dead letter handled");
    api.index.lock().unwrap_or_else(|e| e.into_inner()).audit(audit);
    Ok(Json(
        json!({ "id": id, "status": if action == "replay" { "replayed" } else { "discarded" } }),
    ))
}

async fn replay(State(api): State<Api>, Path(id): Path<String>, Json(d): Json<Decision>) -> Result<Json<Value>, (StatusCode, String)> {
    act(api, id, d, "replay").await
}

async fn discard(State(api): State<Api>, Path(id): Path<String>, Json(d): Json<Decision>) -> Result<Json<Value>, (StatusCode, String)> {
    act(api, id, d, "discard").await
}

impl Api {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/dead-letters", get(list))
            .route("/api/dead-letters/{id}", get(inspect))
            .route("/api/dead-letters/{id}/replay", post(replay))
            .route("/api/dead-letters/{id}/discard", post(discard))
            .with_state(self.clone())
    }
}

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
    kafka::follow(&cfg.kafka, SERVICE, &group, &topics, &shutdown, |followed| match followed {
        Followed::Idle => ready.set(true),
        Followed::Record { topic, value } => {
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
    cfg.runtime.validate()?;
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
    let listener = tokio::net::TcpListener::bind(&cfg.api_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "dead-letter api listening");
    let sd = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, api.router())
            .with_graceful_shutdown(async move { sd.wait().await })
            .await;
    });
    let handle = tokio::runtime::Handle::current();
    let rt = cfg.runtime.clone();
    tokio::task::spawn_blocking(move || follow(&rt, index, store, handle, shutdown, ready)).await?
}

impl sluice_runtime::ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}
