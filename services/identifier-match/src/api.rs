//! The review API: the queue of held events people work through.
//!
//! Every route needs a bearer token from the configuration (`review_api.tokens`, or a YAML list
//! in `review_api.tokens_file`, e.g. a mounted secret); each token names its actor and role.
//! `viewer` may list and read items; `reviewer` may also decide. No route answers without a
//! token: the items hold patient data.
//!
//! - `GET /api/review/items?rule=&record=&min_score=`: open items, newest first (no payloads)
//! - `GET /api/review/items/{id}`: one item: the record and its candidates side by side, each
//!   with the comparison levels and weights, the held event ids, the decisions so far
//! - `POST /api/review/items/{id}/decision` `{"action": "link"|"not_same"|"new_patient",
//!   "target_enterprise_id": "...", "reason": "..."}`
//! - `POST /api/review/records/not-same` `{"record_key": "...", "target_enterprise_id": "...",
//!   "reason": "..."}`: two records auto-linked wrongly (unmerges them)
//!
//! A decision is written to `identity.decisions.v1` (acks=all) with the authenticated actor,
//! never one the caller states, and answered 202 once Kafka confirmed it; the stage applies it
//! in order with the events, exactly once, and releases the held events. The item list is the
//! stage's committed state, so a decision shows once it has been applied.

use crate::metrics::metrics;
use crate::resolve::ReviewView;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_model::topology::names;
use sluice_model::{IdentityDecision, ReviewItem};
use sluice_registry::SchemaStore;
use sluice_runtime::config::Secret;
use sluice_runtime::kafka::AckedProducer;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub addr: String,
    pub tokens: Vec<ApiToken>,
    /// A YAML file with a list of tokens (as `tokens`), read at start-up.
    pub tokens_file: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            addr: "127.0.0.1:8083".into(),
            tokens: Vec::new(),
            tokens_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub actor: String,
    /// `reviewer` (list, read, decide) or `viewer` (list, read)
    pub role: String,
    pub token: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("review_api.tokens_file {file}: {reason}")]
    TokensFile { file: String, reason: String },
    #[error("review_api.tokens[{index}]: {reason}")]
    Token { index: usize, reason: &'static str },
}

impl ApiConfig {
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.tokens_file.is_empty()
    }

    /// The configured tokens and those of `tokens_file`, checked.
    pub fn all_tokens(&self) -> Result<Vec<ApiToken>, ApiError> {
        let mut all = self.tokens.clone();
        if !self.tokens_file.is_empty() {
            let text = std::fs::read_to_string(&self.tokens_file).map_err(|e| ApiError::TokensFile {
                file: self.tokens_file.clone(),
                reason: e.to_string(),
            })?;
            let more: Vec<ApiToken> = serde_yaml::from_str(&text).map_err(|e| ApiError::TokensFile {
                file: self.tokens_file.clone(),
                reason: e.to_string(),
            })?;
            all.extend(more);
        }
        for (index, t) in all.iter().enumerate() {
            if t.actor.trim().is_empty() {
                return Err(ApiError::Token {
                    index,
                    reason: "actor is empty",
                });
            }
            if !matches!(t.role.as_str(), "reviewer" | "viewer") {
                return Err(ApiError::Token {
                    index,
                    reason: "role must be reviewer or viewer",
                });
            }
            if t.token.expose().len() < 16 {
                return Err(ApiError::Token {
                    index,
                    reason: "token must be at least 16 characters",
                });
            }
        }
        Ok(all)
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        self.all_tokens().map(|_| ())
    }
}

#[derive(Clone)]
pub struct Api {
    tokens: Arc<Vec<ApiToken>>,
    view: Arc<Mutex<Option<ReviewView>>>,
    store: Arc<SchemaStore>,
    producer: Arc<AckedProducer>,
}

/// Who is calling.
struct Caller {
    actor: String,
    role: String,
}

fn equal_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(status: StatusCode, route: &'static str, message: &str) -> Response {
    metrics().api_requests.with_label_values(&[route, status.as_str()]).inc();
    let mut r = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = "Bearer".parse()
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

impl Api {
    fn caller(&self, headers: &HeaderMap, route: &'static str, need_reviewer: bool) -> Result<Caller, Box<Response>> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Box::new(refuse(StatusCode::UNAUTHORIZED, route, "a bearer token is required")));
        };
        // every token is compared, in time independent of where they differ
        let mut found = None;
        for t in self.tokens.iter() {
            if equal_time(t.token.expose().as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        let Some(t) = found else {
            return Err(Box::new(refuse(StatusCode::UNAUTHORIZED, route, "unknown token")));
        };
        if need_reviewer && t.role != "reviewer" {
            return Err(Box::new(refuse(StatusCode::FORBIDDEN, route, "deciding needs the reviewer role")));
        }
        Ok(Caller {
            actor: t.actor.clone(),
            role: t.role.clone(),
        })
    }

    fn items(&self, route: &'static str) -> Result<ReviewView, Box<Response>> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| {
            Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                route,
                "the identity index is still loading",
            ))
        })
    }

    async fn write(&self, d: &IdentityDecision, route: &'static str) -> Result<(), Box<Response>> {
        let value = self
            .store
            .encode(names::DECISIONS, d)
            .map_err(|_| Box::new(refuse(StatusCode::INTERNAL_SERVER_ERROR, route, "decision could not be encoded")))?;
        let key = d.item_id.clone().or(d.record_key.clone()).unwrap_or_default();
        self.producer
            .send(names::DECISIONS, key.as_bytes(), &value, &[])
            .await
            .map_err(|_| {
                Box::new(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    route,
                    "kafka did not confirm the decision: nothing changed, try again",
                ))
            })
    }
}

#[derive(Debug, Deserialize)]
pub struct Filter {
    rule: Option<String>,
    record: Option<String>,
    min_score: Option<f64>,
}

fn summary(i: &ReviewItem) -> Value {
    json!({
        "item_id": i.item_id, "rule": i.rule, "record_key": i.record_key, "enterprise_id": i.enterprise_id,
        "opened_at": i.opened_at, "held_events": i.held_event_ids.len(),
        "candidates": i.candidates.iter().map(|c| json!({"enterprise_id": c.enterprise_id, "score": c.score})).collect::<Vec<_>>(),
    })
}

async fn list(State(api): State<Api>, headers: HeaderMap, Query(f): Query<Filter>) -> Response {
    const ROUTE: &str = "list";
    if let Err(r) = api.caller(&headers, ROUTE, false) {
        return *r;
    }
    let view = match api.items(ROUTE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let items = view.read().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<&ReviewItem> = items
        .values()
        .filter(|i| f.rule.as_ref().is_none_or(|r| *r == i.rule))
        .filter(|i| {
            f.record
                .as_ref()
                .is_none_or(|r| i.record_key.as_deref().is_some_and(|k| k.starts_with(r.as_str())))
        })
        .filter(|i| f.min_score.is_none_or(|m| i.candidates.iter().any(|c| c.score >= m)))
        .collect();
    out.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then_with(|| a.item_id.cmp(&b.item_id)));
    metrics().api_requests.with_label_values(&[ROUTE, "200"]).inc();
    Json(json!({"count": out.len(), "items": out.iter().map(|i| summary(i)).collect::<Vec<_>>()})).into_response()
}

async fn show(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    const ROUTE: &str = "show";
    if let Err(r) = api.caller(&headers, ROUTE, false) {
        return *r;
    }
    let view = match api.items(ROUTE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let items = view.read().unwrap_or_else(|e| e.into_inner());
    let Some(i) = items.get(&id) else {
        return refuse(StatusCode::NOT_FOUND, ROUTE, "no open review item with this id");
    };
    metrics().api_requests.with_label_values(&[ROUTE, "200"]).inc();
    let mut v = summary(i);
    v["subject"] = json!(i.subject);
    v["candidates"] = json!(
        i.candidates
            .iter()
            .map(|c| json!({
                "enterprise_id": c.enterprise_id, "record_key": c.record_key, "score": c.score,
                "person": c.person, "comparisons": c.comparisons,
            }))
            .collect::<Vec<_>>()
    );
    v["held_event_ids"] = json!(i.held_event_ids);
    v["decisions"] = json!(i.decisions);
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    action: String,
    #[serde(default)]
    target_enterprise_id: Option<String>,
    reason: String,
}

fn decision_id(parts: &[&str]) -> String {
    let now = sluice_runtime::now_micros().to_be_bytes();
    let mut v: Vec<&[u8]> = vec![b"decision", &now];
    v.extend(parts.iter().map(|p| p.as_bytes()));
    sluice_model::ids::uuid_from(&v)
}

async fn decide(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>, Json(b): Json<DecisionBody>) -> Response {
    const ROUTE: &str = "decide";
    let caller = match api.caller(&headers, ROUTE, true) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if b.reason.trim().is_empty() {
        return refuse(StatusCode::BAD_REQUEST, ROUTE, "a reason is required");
    }
    if !matches!(b.action.as_str(), "link" | "not_same" | "new_patient") {
        return refuse(StatusCode::BAD_REQUEST, ROUTE, "action must be link, not_same or new_patient");
    }
    if b.action != "new_patient" && b.target_enterprise_id.as_deref().is_none_or(str::is_empty) {
        return refuse(StatusCode::BAD_REQUEST, ROUTE, "link and not_same need target_enterprise_id");
    }
    let view = match api.items(ROUTE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let item = view.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
    let Some(item) = item else {
        return refuse(StatusCode::NOT_FOUND, ROUTE, "no open review item with this id");
    };
    if b.action == "not_same"
        && !item
            .candidates
            .iter()
            .any(|c| Some(&c.enterprise_id) == b.target_enterprise_id.as_ref())
    {
        return refuse(StatusCode::CONFLICT, ROUTE, "not_same names one of the item's candidates");
    }
    let target = b.target_enterprise_id.clone().unwrap_or_default();
    let d = IdentityDecision {
        decision_id: decision_id(&[&id, &caller.actor, &b.action, &target]),
        action: b.action,
        item_id: Some(id),
        record_key: item.record_key.clone(),
        target_enterprise_id: b.target_enterprise_id,
        reason: b.reason,
        actor: caller.actor,
        role: caller.role,
        at: sluice_runtime::now_micros(),
    };
    if let Err(r) = api.write(&d, ROUTE).await {
        return *r;
    }
    tracing::info!(action = %d.action, "review decision accepted");
    metrics().api_requests.with_label_values(&[ROUTE, "202"]).inc();
    (
        StatusCode::ACCEPTED,
        Json(json!({"decision_id": d.decision_id, "status": "accepted"})),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotSameBody {
    record_key: String,
    target_enterprise_id: String,
    reason: String,
}

async fn not_same(State(api): State<Api>, headers: HeaderMap, Json(b): Json<NotSameBody>) -> Response {
    const ROUTE: &str = "not_same";
    let caller = match api.caller(&headers, ROUTE, true) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if b.reason.trim().is_empty() || b.record_key.trim().is_empty() || b.target_enterprise_id.trim().is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            ROUTE,
            "record_key, target_enterprise_id and reason are required",
        );
    }
    let d = IdentityDecision {
        decision_id: decision_id(&[&b.record_key, &caller.actor, "not_same", &b.target_enterprise_id]),
        action: "not_same".into(),
        item_id: None,
        record_key: Some(b.record_key),
        target_enterprise_id: Some(b.target_enterprise_id),
        reason: b.reason,
        actor: caller.actor,
        role: caller.role,
        at: sluice_runtime::now_micros(),
    };
    if let Err(r) = api.write(&d, ROUTE).await {
        return *r;
    }
    metrics().api_requests.with_label_values(&[ROUTE, "202"]).inc();
    (
        StatusCode::ACCEPTED,
        Json(json!({"decision_id": d.decision_id, "status": "accepted"})),
    )
        .into_response()
}

impl Api {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/review/items", get(list))
            .route("/api/review/items/{id}", get(show))
            .route("/api/review/items/{id}/decision", post(decide))
            .route("/api/review/records/not-same", post(not_same))
            .with_state(self.clone())
    }
}

/// Starts the API on `review_api.addr`; it answers 503 until the stage has loaded its index.
pub async fn serve(
    cfg: &crate::Config,
    view: Arc<Mutex<Option<ReviewView>>>,
    shutdown: sluice_runtime::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let tokens = cfg.review_api.all_tokens()?;
    let store = sluice_runtime::stage::schema_store(&cfg.runtime)?;
    sluice_runtime::stage::register_with_retry(&store, crate::SERVICE, &shutdown).await?;
    let producer = AckedProducer::new(
        &cfg.runtime.kafka,
        crate::SERVICE,
        "identifier-match-review",
        Duration::from_secs(30),
    )?;
    let api = Api {
        tokens: Arc::new(tokens),
        view,
        store,
        producer: Arc::new(producer),
    };
    let listener = tokio::net::TcpListener::bind(&cfg.review_api.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "review api listening");
    tokio::spawn(async move {
        let _ = axum::serve(listener, api.router())
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
    });
    Ok(())
}
