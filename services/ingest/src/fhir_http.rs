//! The FHIR R4 HTTP endpoint: `POST /fhir` (any resource or Bundle) and `POST /fhir/{type}` (a
//! resource of that type), JSON (`application/fhir+json`) or XML (`application/fhir+xml`).
//!
//! The same promises as MLLP, in HTTP terms:
//! - `202 Accepted` only after the body is durably in `fhir.raw.v1`, exactly as received;
//! - a body that is not a FHIR resource (not JSON or XML, no `resourceType`, a type other than
//!   the path names, a Bundle of requests only, an unsupported media type, too large) gets `400`/`415`/`413` with an
//!   OperationOutcome naming a bounded reason code, and is kept in `deadletter.ingest.v1`;
//! - if Kafka does not confirm in time the sender gets `503` with `Retry-After` and resends; a
//!   resend of a body that was in fact written is de-duplicated by its event id downstream.
//!
//! Answers never echo the body or any value from it.
//!
//! Served over HTTPS (`fhir_tls`; plaintext only when `fhir_tls.plaintext` says so). POSTs need a
//! bearer token of the `sender` role ([`sluice_runtime::auth`]): without one the answer is
//! `401` (`403` for a token of another role) before the body is read, and nothing is kept. The
//! CapabilityStatement (`GET /fhir/metadata`) is public: it describes the endpoint, nothing else.
//!
//! Bounded under abuse: request headers and body must arrive within `frame_timeout_secs` (also
//! the idle limit of a kept-alive connection), bodies count against the process's memory budget,
//! connections are limited overall and per peer (past a limit the sender gets `503` with
//! `Retry-After`), parsing runs on blocking threads with a time budget, and on shutdown idle
//! connections close at once while requests in flight finish within the drain grace.

use crate::limits::PeerLimits;
use crate::{Ingest, Written, metrics};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::json;
use sluice_model::RawMessage;
use sluice_model::topology::names;
use sluice_runtime::auth::{self, Authenticator, Role};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::{now_micros, trace};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::Instrument;

pub const LISTENER: &str = "fhir";

/// Media types accepted (parameters such as `charset` aside).
const MEDIA_TYPES: [&str; 6] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
    "application/fhir+xml",
    "application/xml",
    "text/xml",
];

fn outcome(status: StatusCode, severity: &str, code: &str, reason: &str, text: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": severity,
            "code": code,
            "details": {"coding": [{"system": "urn:sluice:reason-code", "code": reason}], "text": text}
        }]
    });
    fhir_json(status, &body)
}

fn fhir_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json"));
    r
}

fn capability() -> Response {
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "implementation": {"description": "Sluice FHIR R4 intake: accepts resources and Bundles for the pipeline"},
        "rest": [{
            "mode": "server",
            "documentation": "POST a resource or a Bundle to [base] or [base]/[type]; 202 means durably accepted",
            "interaction": [{"code": "batch"}, {"code": "transaction"}]
        }]
    });
    fhir_json(StatusCode::OK, &body)
}

/// Who may call each route: POSTs need the sender role; the CapabilityStatement is public.
pub const POLICY: &[auth::Route] = &[
    auth::Route::post("/fhir", &[Role::Sender]),
    auth::Route::post("/fhir/", &[Role::Sender]),
    auth::Route::post("/fhir/{resource_type}", &[Role::Sender]),
    auth::Route::get("/fhir/metadata", &[]),
];

/// A refusal of the token as an OperationOutcome (no body was read, nothing was kept).
fn auth_answer(status: StatusCode, reason: &'static str, text: &'static str) -> Response {
    let code = if status == StatusCode::FORBIDDEN { "forbidden" } else { "login" };
    outcome(status, "error", code, reason, text)
}

/// The routes, behind authentication (`auth`: the ingest's [`Authenticator`]).
pub fn router(ingest: Arc<Ingest>, authenticator: Arc<Authenticator>) -> Router {
    let routes = Router::new()
        .route("/fhir", post(receive_any))
        .route("/fhir/", post(receive_any))
        .route("/fhir/metadata", get(|| async { capability() }))
        .route("/fhir/{resource_type}", post(receive_typed))
        .with_state(ingest);
    auth::protect(routes, LISTENER, authenticator, POLICY, auth_answer)
}

async fn receive_any(
    State(ing): State<Arc<Ingest>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match read_body(&ing, &peer.to_string(), &headers, body).await {
        Ok(bytes) => receive(&ing, None, &peer.to_string(), &headers, bytes).await,
        Err(answer) => answer,
    }
}

async fn receive_typed(
    State(ing): State<Arc<Ingest>>,
    Path(resource_type): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match read_body(&ing, &peer.to_string(), &headers, body).await {
        Ok(bytes) => receive(&ing, Some(&resource_type), &peer.to_string(), &headers, bytes).await,
        Err(answer) => answer,
    }
}

/// Reads a body within the size limit, the time limit and the memory budget. Past the size
/// limit the first part is kept as a dead letter and the sender gets `413`; too slow gets `408`
/// (nothing was accepted, resend); over the memory budget gets `503` (resend later).
async fn read_body(ing: &Ingest, peer: &str, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let limit = ing.cfg.max_frame_bytes;
    let deadline = Instant::now() + Duration::from_secs(ing.cfg.frame_timeout_secs);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut held = ing.budget.reservation();
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit).min(1 << 20));
    let mut body = body;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), body.frame()).await;
        let chunk = match next {
            Err(_) => {
                return Err(refused(
                    "request_timeout",
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive in time: resend",
                ));
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(_))) => return Err(refused("body_unreadable", StatusCode::BAD_REQUEST, "the body could not be read")),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(c) => c,
                Err(_) => continue, // trailers
            },
        };
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            // take (and drop) what is left of the body, within bounds, so the sender reads the
            // answer instead of a reset connection
            let mut drained = chunk.len() - room;
            while drained < limit {
                match tokio::time::timeout_at(deadline.into(), body.frame()).await {
                    Ok(Some(Ok(f))) => drained += f.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
            let text = format!("body larger than {limit} bytes; first part kept");
            let tp = trace::new_root();
            return Err(if ing.keep_rejected(&buf, "message_too_large", text, peer, &tp).await {
                metrics().messages.with_label_values(&[LISTENER, "rejected"]).inc();
                let mut r = outcome(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "error",
                    "too-costly",
                    "message_too_large",
                    "body larger than the configured maximum",
                );
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                unavailable()
            });
        }
        if !held.cover(buf.len() + chunk.len()) {
            let mut r = refused("memory_budget", StatusCode::SERVICE_UNAVAILABLE, "receiver busy: resend later");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Err(r);
        }
        buf.extend_from_slice(&chunk);
    }
}

/// A refusal for a limit: counted by reason, answered with an OperationOutcome, nothing kept
/// (nothing was accepted; the sender resends).
fn refused(reason: &'static str, status: StatusCode, text: &str) -> Response {
    metrics().refusals.with_label_values(&[LISTENER, reason]).inc();
    let mut r = outcome(status, "error", "transient", reason, text);
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Parses on a blocking thread (never on the threads that serve sockets), at most one parse
/// per core at once, within the time budget.
async fn parse_off_thread(ing: &Ingest, body: Bytes) -> Result<(sluice_fhir::Format, serde_json::Value), (&'static str, String)> {
    let slot = ing
        .parse_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ("fhir_parse_unavailable", "parser closed".to_owned()))?;
    let work = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        sluice_fhir::parse(&body)
    });
    let budget = Duration::from_millis(ing.cfg.parse_budget_ms);
    match tokio::time::timeout(budget, work).await {
        Ok(Ok(Ok(parsed))) => Ok(parsed),
        Ok(Ok(Err(e))) => Err((e.code(), "the body is not a FHIR R4 resource".to_owned())),
        Ok(Err(_)) => Err(("fhir_parse_failed", "the body could not be parsed".to_owned())),
        Err(_) => Err((
            "fhir_parse_budget_exceeded",
            format!("parsing took longer than {} ms", budget.as_millis()),
        )),
    }
}

/// Accepts or rejects one body; see the module documentation. Each body starts a trace, as an
/// MLLP message does ([`crate::Ingest::handle`]).
pub async fn receive(ing: &Ingest, path_type: Option<&str>, peer: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let span = crate::message_span("http", LISTENER);
    let tp = trace::header_for(&span, None);
    let interface = ing.interfaces.labels(b"fhir", LISTENER.as_bytes());
    span.record("hl7.sending_application", interface.0.as_str());
    span.record("hl7.sending_facility", interface.1.as_str());
    let (response, result) = receive_in(ing, path_type, peer, headers, body, &tp).instrument(span.clone()).await;
    span.record("result", result);
    ing.interfaces.seen(&interface, result);
    response
}

async fn receive_in(
    ing: &Ingest,
    path_type: Option<&str>,
    peer: &str,
    headers: &HeaderMap,
    body: Bytes,
    tp: &str,
) -> (Response, &'static str) {
    let started = Instant::now();
    metrics().bytes.with_label_values(&[LISTENER]).inc_by(body.len() as u64);
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let acceptable_media = media.as_deref().is_some_and(|m| MEDIA_TYPES.contains(&m));
    let parsed = if acceptable_media {
        parse_off_thread(ing, body.clone()).await
    } else {
        Err(("unsupported_media_type", String::new()))
    };
    let body: &[u8] = &body;
    let problem = match (&media, &parsed) {
        _ if !acceptable_media => Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/fhir+json or application/fhir+xml in Content-Type".to_owned(),
        )),
        (_, Err((code, text))) => Some((StatusCode::BAD_REQUEST, *code, text.clone())),
        (_, Ok((_, tree))) => match (path_type, sluice_fhir::resource_type(tree)) {
            (Some(p), Some(t)) if p != t => Some((
                StatusCode::BAD_REQUEST,
                "fhir_type_mismatch",
                "the resourceType is not the type the path names".to_owned(),
            )),
            _ if sluice_fhir::resources(tree).is_empty() => Some((
                StatusCode::BAD_REQUEST,
                "fhir_empty_bundle",
                "the Bundle carries no resource (requests only)".to_owned(),
            )),
            _ => None,
        },
    };
    let response = if let Some((status, code, text)) = problem {
        tracing::Span::current().record("reason", code);
        if ing.keep_rejected(body, code, text.clone(), peer, tp).await {
            metrics().messages.with_label_values(&[LISTENER, "rejected"]).inc();
            (outcome(status, "error", "invalid", code, &text), "rejected")
        } else {
            (unavailable(), "failed")
        }
    } else {
        let key = parsed
            .ok()
            .and_then(|(_, tree)| sluice_fhir::first_patient_identifier(&tree))
            .map(|(system, value)| format!("fhir|{value}^{system}").into_bytes())
            .unwrap_or_else(|| format!("fhir|{}", sluice_model::ids::sha256_hex(body)).into_bytes());
        let raw = RawMessage {
            raw_id: sluice_model::ids::sha256_hex(body),
            transport: "http".into(),
            listener: LISTENER.into(),
            peer: peer.to_owned(),
            received_at: now_micros(),
            detected_charset: "UTF-8".into(),
            payload: body.to_vec(),
            msh: None,
            warnings: Vec::new(),
        };
        let written = match ing.store.encode(names::FHIR_RAW, &raw) {
            Ok(v) => ing.produce(names::FHIR_RAW, &key, &v, tp).await,
            Err(_) => Written::No,
        };
        match written {
            Written::Yes => {
                metrics().messages.with_label_values(&[LISTENER, "accepted"]).inc();
                let r = outcome(
                    StatusCode::ACCEPTED,
                    "information",
                    "informational",
                    "accepted",
                    "durably accepted for processing",
                );
                (r, "accepted")
            }
            Written::TooLarge => {
                let text = "body larger than a Kafka record may be";
                tracing::Span::current().record("reason", "message_too_large");
                if ing.keep_rejected(body, "message_too_large", text.into(), peer, tp).await {
                    metrics().messages.with_label_values(&[LISTENER, "rejected"]).inc();
                    let r = outcome(StatusCode::PAYLOAD_TOO_LARGE, "error", "too-costly", "message_too_large", text);
                    (r, "rejected")
                } else {
                    (unavailable(), "failed")
                }
            }
            Written::No => (unavailable(), "failed"),
        }
    };
    metrics()
        .ack_seconds
        .with_label_values(&[LISTENER])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Kafka did not confirm: nothing was kept, the sender resends.
fn unavailable() -> Response {
    metrics().messages.with_label_values(&[LISTENER, "failed"]).inc();
    let mut r = outcome(
        StatusCode::SERVICE_UNAVAILABLE,
        "error",
        "transient",
        "kafka_unavailable",
        "not accepted: resend later",
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Serves the endpoint until shutdown; see the module documentation for its limits. On
/// shutdown idle connections close at once, requests in flight finish within the drain grace.
pub async fn serve(ingest: Arc<Ingest>, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let cfg = &ingest.cfg;
    let authenticator = ingest
        .auth
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the fhir endpoint needs auth configured"))?;
    let app = router(ingest.clone(), authenticator);
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let peers = PeerLimits::new(cfg.max_connections_per_peer);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_limit = Duration::from_secs(cfg.frame_timeout_secs.min(cfg.idle_timeout_secs));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    metrics().refusals.with_label_values(&[LISTENER, "accept_failed"]).inc();
                    tracing::warn!(listener = LISTENER, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // a 202 goes out when written, not after the client's next segment (see mllp::tune_accepted)
        let _ = stream.set_nodelay(true);
        let held = (limit.clone().try_acquire_owned().ok(), peers.acquire(peer.ip()));
        let refusal = match &held {
            (None, _) => Some("connection_limit"),
            (_, None) => Some("peer_connection_limit"),
            _ => None,
        };
        let svc = match refusal {
            None => app.clone(),
            Some(reason) => Router::new().fallback(move || async move {
                let mut r = refused(reason, StatusCode::SERVICE_UNAVAILABLE, "too many connections: resend later");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }),
        };
        let svc = tower::ServiceExt::map_request(svc, move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let tls = ingest.fhir_tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = held;
            let io: Box<dyn crate::Stream> = match &tls {
                None => Box::new(stream),
                Some(acceptor) => match acceptor.handshake(stream).await {
                    Ok(s) => Box::new(s),
                    Err(refusal) => {
                        metrics().refusals.with_label_values(&[LISTENER, refusal.as_str()]).inc();
                        sluice_runtime::tls::log_refusal(LISTENER, refusal, &peer.ip().to_string());
                        return;
                    }
                },
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_limit)
                .keep_alive(refusal.is_none())
                .serve_connection(hyper_util::rt::TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc));
            metrics().connections.with_label_values(&[LISTENER]).inc();
            let _ = watcher.watch(conn).await;
            metrics().connections.with_label_values(&[LISTENER]).dec();
        });
    }
    drop(listener);
    let grace = Duration::from_secs(cfg.runtime.drain_grace_secs);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = LISTENER, "drain grace over with http requests still open; closing them");
    }
    Ok(())
}
