//! The review API: the queue of held events people work through.
//!
//! Served over HTTPS (`review_api.tls`) behind the shared bearer-token authentication
//! ([`sluice_runtime::auth`], configured in `auth`: static tokens and/or OIDC). No route answers
//! without a token: the items hold patient data.
//!
//! | route | roles | |
//! |---|---|---|
//! | `GET /api/review/items?rule=&min_score=` | viewer, reviewer | open items, newest first, without patient data or record keys; `record=` (a record-key prefix) for reviewers only |
//! | `GET /api/review/items/{id}?reason=...` | reviewer | one item: the record and its candidates side by side, each with the comparison levels and weights, the held event ids, the decisions so far; audited first |
//! | `POST /api/review/items/{id}/decision` `{"action": "link"\|"not_same"\|"new_patient", "target_enterprise_id": "...", "reason": "..."}` | reviewer | |
//! | `POST /api/review/records/not-same` `{"record_key": "...", "target_enterprise_id": "...", "reason": "..."}` | reviewer | two records auto-linked wrongly (unmerges them) |
//!
//! A decision is written to `identity.decisions.v1` with the authenticated actor, never one the
//! caller states, in one transaction with its audit record (`audit.events.v1`), and answered 202
//! once Kafka committed it; the stage applies it in order with the events, exactly once, and
//! releases the held events. Opening an item writes an audit record before the item is
//! returned (not returned if Kafka does not confirm it). The item list is the stage's committed
//! state, so a decision shows once it has been applied.

use crate::metrics::metrics;
use crate::resolve::ReviewView;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_model::topology::names;
use sluice_model::{AuditEvent, IdentityDecision, ReviewItem};
use sluice_registry::SchemaStore;
use sluice_runtime::audit::{self, Subject};
use sluice_runtime::auth::{self, Authenticator, Caller, Role};
use sluice_runtime::http::Peer;
use sluice_runtime::kafka::{Record, TransactionalWriter};
use sluice_runtime::tls::{Acceptor, ListenerTls};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the review API listens; empty: no API.
    pub addr: String,
    /// TLS of the API; `plaintext: true` only behind a proxy or mesh that terminates TLS.
    pub tls: ListenerTls,
}

impl ApiConfig {
    pub fn enabled(&self) -> bool {
        !self.addr.is_empty()
    }
}

#[derive(Clone)]
pub struct Api {
    view: Arc<Mutex<Option<ReviewView>>>,
    store: Arc<SchemaStore>,
    writer: Arc<TransactionalWriter>,
}

fn refuse(status: StatusCode, route: &'static str, message: &str) -> Response {
    metrics().api_requests.with_label_values(&[route, status.as_str()]).inc();
    (status, Json(json!({ "error": message }))).into_response()
}

impl Api {
    fn items(&self, route: &'static str) -> Result<ReviewView, Box<Response>> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| {
            Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                route,
                "the identity index is still loading",
            ))
        })
    }

    /// Writes the records in one transaction (a decision with its audit record, or an audit
    /// record alone), answered only once Kafka committed them.
    async fn write(&self, records: Vec<(&'static str, String, Vec<u8>)>, route: &'static str) -> Result<(), Box<Response>> {
        let writer = self.writer.clone();
        let done = tokio::task::spawn_blocking(move || {
            let records: Vec<Record<'_>> = records
                .iter()
                .map(|(topic, key, value)| Record {
                    topic,
                    key: Some(key.as_bytes()),
                    value,
                    headers: Vec::new(),
                })
                .collect();
            writer.write(&records, Duration::from_secs(30))
        })
        .await;
        match done {
            Ok(Ok(())) => Ok(()),
            _ => Err(Box::new(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                route,
                "kafka did not confirm the write: nothing changed, try again",
            ))),
        }
    }

    fn encode<T: sluice_model::Record>(&self, topic: &str, v: &T, route: &'static str) -> Result<Vec<u8>, Box<Response>> {
        self.store
            .encode(topic, v)
            .map_err(|_| Box::new(refuse(StatusCode::INTERNAL_SERVER_ERROR, route, "record could not be encoded")))
    }

    /// A decision and its audit record, in one transaction.
    async fn decide(&self, d: &IdentityDecision, access: AuditEvent, route: &'static str) -> Result<(), Box<Response>> {
        let access = AuditEvent {
            target_topic: Some(names::DECISIONS.into()),
            related_id: Some(d.decision_id.clone()),
            ..access
        };
        let key = d.item_id.clone().or(d.record_key.clone()).unwrap_or_default();
        let decision = self.encode(names::DECISIONS, d, route)?;
        let audit = self.encode(names::AUDIT, &access, route)?;
        let subject = access.subject_id.clone();
        self.write(vec![(names::DECISIONS, key, decision), (names::AUDIT, subject, audit)], route)
            .await
    }
}

#[derive(Debug, Deserialize)]
pub struct Filter {
    rule: Option<String>,
    record: Option<String>,
    min_score: Option<f64>,
}

/// An item in the list: no patient data, no record key (an identifier).
fn summary(i: &ReviewItem) -> Value {
    json!({
        "item_id": i.item_id, "rule": i.rule, "enterprise_id": i.enterprise_id,
        "opened_at": i.opened_at, "held_events": i.held_event_ids.len(),
        "candidates": i.candidates.iter().map(|c| json!({"enterprise_id": c.enterprise_id, "score": c.score})).collect::<Vec<_>>(),
    })
}

async fn list(State(api): State<Api>, Extension(caller): Extension<Caller>, Query(f): Query<Filter>) -> Response {
    const ROUTE: &str = "list";
    if f.record.is_some() && !caller.has(Role::Reviewer) {
        return refuse(
            StatusCode::FORBIDDEN,
            ROUTE,
            "filtering by record key (a patient identifier) needs the reviewer role",
        );
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

#[derive(Debug, Deserialize)]
pub struct ViewReason {
    #[serde(default)]
    reason: String,
}

async fn show(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Query(q): Query<ViewReason>,
) -> Response {
    const ROUTE: &str = "show";
    if !audit::valid_reason(&q.reason) {
        return refuse(
            StatusCode::BAD_REQUEST,
            ROUTE,
            "say why you open this item: ?reason=... (3 to 500 characters)",
        );
    }
    let view = match api.items(ROUTE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(i) = view.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned() else {
        return refuse(StatusCode::NOT_FOUND, ROUTE, "no open review item with this id");
    };
    // audited before anything of the item is returned
    let access = audit::event(
        crate::SERVICE,
        &caller,
        "view_review_item",
        Subject {
            kind: "review_item",
            id: &id,
        },
        q.reason.trim(),
        peer,
    );
    let value = match api.encode(names::AUDIT, &access, ROUTE) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Err(r) = api.write(vec![(names::AUDIT, id.clone(), value)], ROUTE).await {
        return *r;
    }
    metrics().api_requests.with_label_values(&[ROUTE, "200"]).inc();
    let mut v = summary(&i);
    v["record_key"] = json!(i.record_key);
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
    v["audit_id"] = json!(access.audit_id);
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

async fn decide(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Json(b): Json<DecisionBody>,
) -> Response {
    const ROUTE: &str = "decide";
    if !audit::valid_reason(&b.reason) {
        return refuse(StatusCode::BAD_REQUEST, ROUTE, "a reason is required (3 to 500 characters)");
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
    let reason = b.reason.trim().to_owned();
    let d = IdentityDecision {
        decision_id: decision_id(&[&id, &caller.actor, &b.action, &target]),
        action: b.action,
        item_id: Some(id.clone()),
        record_key: item.record_key.clone(),
        target_enterprise_id: b.target_enterprise_id,
        reason: reason.clone(),
        actor: caller.actor.clone(),
        role: Role::Reviewer.as_str().into(),
        at: sluice_runtime::now_micros(),
    };
    let access = audit::event(
        crate::SERVICE,
        &caller,
        "identity_decision",
        Subject {
            kind: "review_item",
            id: &id,
        },
        &reason,
        peer,
    );
    if let Err(r) = api.decide(&d, access, ROUTE).await {
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

async fn not_same(State(api): State<Api>, Extension(caller): Extension<Caller>, Peer(peer): Peer, Json(b): Json<NotSameBody>) -> Response {
    const ROUTE: &str = "not_same";
    if !audit::valid_reason(&b.reason) || b.record_key.trim().is_empty() || b.target_enterprise_id.trim().is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            ROUTE,
            "record_key, target_enterprise_id and reason (3 to 500 characters) are required",
        );
    }
    let reason = b.reason.trim().to_owned();
    let d = IdentityDecision {
        decision_id: decision_id(&[&b.record_key, &caller.actor, "not_same", &b.target_enterprise_id]),
        action: "not_same".into(),
        item_id: None,
        record_key: Some(b.record_key.clone()),
        target_enterprise_id: Some(b.target_enterprise_id),
        reason: reason.clone(),
        actor: caller.actor.clone(),
        role: Role::Reviewer.as_str().into(),
        at: sluice_runtime::now_micros(),
    };
    let access = audit::event(
        crate::SERVICE,
        &caller,
        "identity_decision",
        Subject {
            kind: "record",
            id: &b.record_key,
        },
        &reason,
        peer,
    );
    if let Err(r) = api.decide(&d, access, ROUTE).await {
        return *r;
    }
    metrics().api_requests.with_label_values(&[ROUTE, "202"]).inc();
    (
        StatusCode::ACCEPTED,
        Json(json!({"decision_id": d.decision_id, "status": "accepted"})),
    )
        .into_response()
}

/// Who may call each route (see the module documentation).
pub const POLICY: &[auth::Route] = &[
    auth::Route::get("/api/review/items", &[Role::Viewer, Role::Reviewer]),
    auth::Route::get("/api/review/items/{id}", &[Role::Reviewer]),
    auth::Route::post("/api/review/items/{id}/decision", &[Role::Reviewer]),
    auth::Route::post("/api/review/records/not-same", &[Role::Reviewer]),
];

/// The api's name in metrics and logs.
pub const API: &str = "review";

impl Api {
    /// The routes, behind authentication and [`POLICY`].
    pub fn router(&self, authenticator: Arc<Authenticator>) -> Router {
        let routes = Router::new()
            .route("/api/review/items", get(list))
            .route("/api/review/items/{id}", get(show))
            .route("/api/review/items/{id}/decision", post(decide))
            .route("/api/review/records/not-same", post(not_same))
            .with_state(self.clone());
        auth::protect(routes, API, authenticator, POLICY, auth::json_answer)
    }
}

/// Starts the API on `review_api.addr`: certificates and tokens are loaded now (a bad one
/// stops the service), the rest (the schema registry, the transactional writer, which waits for
/// the brokers) in the background; it answers 503 until the stage has loaded its index.
pub fn serve(
    cfg: &crate::Config,
    view: Arc<Mutex<Option<ReviewView>>>,
    shutdown: sluice_runtime::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let tls = Acceptor::new(&cfg.review_api.tls, "review_api.tls", API, &[b"http/1.1"])?;
    if tls.is_none() {
        tracing::warn!("review api served without tls (review_api.tls.plaintext)");
    }
    let authenticator = Authenticator::new(&cfg.auth, "auth")?;
    let cfg = cfg.clone();
    tokio::spawn(async move {
        if let Err(e) = start(cfg, view, tls, authenticator, shutdown).await {
            tracing::error!(error = %e, "review api could not start");
        }
    });
    Ok(())
}

async fn start(
    cfg: crate::Config,
    view: Arc<Mutex<Option<ReviewView>>>,
    tls: Option<Arc<Acceptor>>,
    authenticator: Arc<Authenticator>,
    shutdown: sluice_runtime::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.review_api.addr).await?;
    let store = sluice_runtime::stage::schema_store(&cfg.runtime)?;
    sluice_runtime::stage::register_with_retry(&store, crate::SERVICE, &shutdown).await?;
    // its own transactional id: the stage's producer must not be fenced by this one
    let (rt, sd) = (cfg.runtime.clone(), shutdown.clone());
    let client_id = format!("{}-review-{}", crate::SERVICE, cfg.runtime.instance_id);
    let Some(writer) = tokio::task::spawn_blocking(move || TransactionalWriter::start_as(&rt, crate::SERVICE, &client_id, &sd)).await??
    else {
        return Ok(());
    };
    let api = Api {
        view,
        store,
        writer: Arc::new(writer),
    };
    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "review api listening");
    let grace = Duration::from_secs(cfg.runtime.drain_grace_secs);
    sluice_runtime::http::serve(listener, api.router(authenticator), tls, API, shutdown, grace).await;
    Ok(())
}
