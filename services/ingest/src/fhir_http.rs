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

use crate::{Ingest, Written, metrics};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sluice_model::RawMessage;
use sluice_model::topology::names;
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::{now_micros, trace};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

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

pub fn router(ingest: Arc<Ingest>) -> Router {
    let limit = ingest.cfg.max_frame_bytes;
    Router::new()
        .route("/fhir", post(receive_any))
        .route("/fhir/", post(receive_any))
        .route("/fhir/metadata", get(|| async { capability() }))
        .route("/fhir/{resource_type}", post(receive_typed))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

async fn receive_any(
    State(ing): State<Arc<Ingest>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(&ing, None, &peer.to_string(), &headers, &body).await
}

async fn receive_typed(
    State(ing): State<Arc<Ingest>>,
    Path(resource_type): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive(&ing, Some(&resource_type), &peer.to_string(), &headers, &body).await
}

/// Accepts or rejects one body; see the module documentation.
pub async fn receive(ing: &Ingest, path_type: Option<&str>, peer: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let started = Instant::now();
    metrics().bytes.with_label_values(&[LISTENER]).inc_by(body.len() as u64);
    let tp = trace::new_root();
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let parsed = sluice_fhir::parse(body);
    let problem = match (&media, &parsed) {
        (Some(m), _) if !MEDIA_TYPES.contains(&m.as_str()) => Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/fhir+json or application/fhir+xml".to_owned(),
        )),
        (_, Err(e)) => Some((StatusCode::BAD_REQUEST, e.code(), "the body is not a FHIR resource".to_owned())),
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
        if ing.keep_rejected(body, code, text.clone(), peer, &tp).await {
            metrics().messages.with_label_values(&[LISTENER, "rejected"]).inc();
            outcome(status, "error", "invalid", code, &text)
        } else {
            unavailable()
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
            Ok(v) => ing.produce(names::FHIR_RAW, &key, &v, &tp).await,
            Err(_) => Written::No,
        };
        match written {
            Written::Yes => {
                metrics().messages.with_label_values(&[LISTENER, "accepted"]).inc();
                outcome(
                    StatusCode::ACCEPTED,
                    "information",
                    "informational",
                    "accepted",
                    "durably accepted for processing",
                )
            }
            Written::TooLarge => {
                let text = "body larger than a Kafka record may be";
                if ing.keep_rejected(body, "message_too_large", text.into(), peer, &tp).await {
                    metrics().messages.with_label_values(&[LISTENER, "rejected"]).inc();
                    outcome(StatusCode::PAYLOAD_TOO_LARGE, "error", "too-costly", "message_too_large", text)
                } else {
                    unavailable()
                }
            }
            Written::No => unavailable(),
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

/// Serves the endpoint until shutdown; requests in flight finish first.
pub async fn serve(ingest: Arc<Ingest>, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let app = router(ingest).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}
