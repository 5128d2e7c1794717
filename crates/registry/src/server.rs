//! The embedded schema registry: the Confluent REST subset that the pipeline and standard
//! clients use. State is in memory and lives as long as the process; in the embedded default it
//! is supervised together with the (also in-memory) broker, so ids never outlive their data.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    /// id -> the schema text as first registered: with its logical types, defaults and docs,
    /// which the canonical form drops and a consumer outside Sluice needs (a timestamp read as
    /// a bare long loses its meaning)
    schemas: Vec<String>,
    /// id -> its stable canonical form, what makes two texts the same schema
    canonical: Vec<String>,
    /// subject -> ids of its versions, in order
    subjects: BTreeMap<String, Vec<u32>>,
}

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

fn reply(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
    );
    r
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    reply(status, json!({ "error_code": code, "message": message }))
}

fn parse(text: &str) -> Result<Schema, Box<Response>> {
    Schema::parse_str(text).map_err(|_| Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "invalid avro schema")))
}

impl Registry {
    pub fn router(&self) -> Router {
        Router::new()
            .route("/subjects", get(list_subjects))
            .route("/subjects/{subject}/versions", post(register).get(list_versions))
            .route("/subjects/{subject}/versions/{version}", get(get_version))
            .route("/schemas/ids/{id}", get(get_by_id))
            .route("/compatibility/subjects/{subject}/versions/{version}", post(check_compatibility))
            .route(
                "/config",
                get(|| async { reply(StatusCode::OK, json!({ "compatibilityLevel": "BACKWARD" })) }),
            )
            .with_state(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn list_subjects(State(r): State<Registry>) -> Response {
    let names: Vec<String> = r.lock().subjects.keys().cloned().collect();
    reply(StatusCode::OK, json!(names))
}

async fn list_versions(State(r): State<Registry>, Path(subject): Path<String>) -> Response {
    match r.lock().subjects.get(&subject) {
        Some(v) => reply(StatusCode::OK, json!((1..=v.len()).collect::<Vec<_>>())),
        None => error(StatusCode::NOT_FOUND, 40401, "subject not found"),
    }
}

async fn register(State(r): State<Registry>, Path(subject): Path<String>, Json(body): Json<SchemaBody>) -> Response {
    if body.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "only avro schemas are supported");
    }
    let schema = match parse(&body.schema) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let canonical = sluice_model::schemas::stable_canonical_form(&schema);
    let mut inner = r.lock();
    if let Some(latest) = inner.subjects.get(&subject).and_then(|v| v.last()).copied() {
        let latest_text = inner.schemas.get(latest as usize - 1).cloned().unwrap_or_default();
        if inner.canonical.get(latest as usize - 1) != Some(&canonical) {
            let Ok(writer) = Schema::parse_str(&latest_text) else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, 50001, "stored schema unreadable");
            };
            if SchemaCompatibility::can_read(&writer, &schema).is_err() {
                return error(
                    StatusCode::CONFLICT,
                    409,
                    "schema is not backward compatible with the latest version",
                );
            }
        }
    }
    let id = match inner.canonical.iter().position(|s| *s == canonical) {
        Some(p) => p as u32 + 1,
        None => {
            inner.schemas.push(body.schema);
            inner.canonical.push(canonical);
            inner.schemas.len() as u32
        }
    };
    let versions = inner.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    reply(StatusCode::OK, json!({ "id": id }))
}

fn version_of(inner: &Inner, subject: &str, version: &str) -> Option<(usize, u32)> {
    let versions = inner.subjects.get(subject)?;
    let idx = if version == "latest" {
        versions.len().checked_sub(1)?
    } else {
        version.parse::<usize>().ok()?.checked_sub(1)?
    };
    versions.get(idx).map(|id| (idx + 1, *id))
}

async fn get_version(State(r): State<Registry>, Path((subject, version)): Path<(String, String)>) -> Response {
    let inner = r.lock();
    match version_of(&inner, &subject, &version) {
        Some((v, id)) => {
            let schema = inner.schemas.get(id as usize - 1).cloned().unwrap_or_default();
            reply(
                StatusCode::OK,
                json!({ "subject": subject, "version": v, "id": id, "schema": schema, "schemaType": "AVRO" }),
            )
        }
        None => error(StatusCode::NOT_FOUND, 40402, "version not found"),
    }
}

async fn get_by_id(State(r): State<Registry>, Path(id): Path<u32>) -> Response {
    let inner = r.lock();
    match id.checked_sub(1).and_then(|i| inner.schemas.get(i as usize)) {
        Some(s) => reply(StatusCode::OK, json!({ "schema": s, "schemaType": "AVRO" })),
        None => error(StatusCode::NOT_FOUND, 40403, "schema not found"),
    }
}

async fn check_compatibility(
    State(r): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Json(body): Json<SchemaBody>,
) -> Response {
    let schema = match parse(&body.schema) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let inner = r.lock();
    let Some((_, id)) = version_of(&inner, &subject, &version) else {
        return error(StatusCode::NOT_FOUND, 40401, "subject or version not found");
    };
    let Some(writer) = inner.schemas.get(id as usize - 1).and_then(|t| Schema::parse_str(t).ok()) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 50001, "stored schema unreadable");
    };
    let ok = SchemaCompatibility::can_read(&writer, &schema).is_ok();
    reply(StatusCode::OK, json!({ "is_compatible": ok }))
}

/// Serves the registry on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, Registry::default().router())
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RegistryClient, SchemaStore};
    use sluice_model::schemas::RecordType;

    #[tokio::test]
    async fn register_fetch_and_compatibility_over_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, async move {
            let _ = rx.await;
        }));
        let client = RegistryClient::new(&format!("http://{addr}"), None).expect("client");
        let store = SchemaStore::new(client.clone()).expect("store");
        let a = store.register("t1", RecordType::SeenEvent).await.expect("register");
        let b = store.register("t2", RecordType::SeenEvent).await.expect("register again");
        assert_eq!(a, b, "the same schema has one id across subjects");
        let c = store.register("t3", RecordType::DeadLetter).await.expect("register other");
        assert_ne!(a, c);
        assert!(client.schema_by_id(c).await.expect("by id").contains("DeadLetter"));
        // the text as registered, not its canonical form: a consumer outside Sluice still sees
        // that first_seen_at is a timestamp
        assert!(client.schema_by_id(a).await.expect("by id").contains("timestamp-micros"));
        // another service's store decodes a record written under that id as its own schema,
        // without resolving one against the other for every record
        let reader = SchemaStore::new(client.clone()).expect("reader store");
        let seen = sluice_model::SeenEvent {
            event_id: "e1".into(),
            first_seen_at: 1_700_000_000_000_000,
            ..Default::default()
        };
        let bytes = store.encode("t1", &seen).expect("encode");
        reader.prefetch(&bytes).await.expect("prefetch");
        let back: sluice_model::SeenEvent = reader.decode(&bytes).expect("decode");
        assert_eq!(back, seen);
        assert_eq!(reader.is_own_schema(a, RecordType::SeenEvent), Some(true));
        // an incompatible change under the same subject is refused
        let bad = r#"{"type":"record","name":"SeenEvent","namespace":"sluice.v1","fields":[{"name":"x","type":"string"}]}"#;
        assert!(client.register("t1-value", bad).await.is_err());
        let http = reqwest::Client::new();
        let latest: Value = http
            .get(format!("http://{addr}/subjects/t3-value/versions/latest"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(latest["id"], json!(c));
        let compat: Value = http
            .post(format!("http://{addr}/compatibility/subjects/t1-value/versions/latest"))
            .json(&json!({ "schema": bad }))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        assert_eq!(compat["is_compatible"], json!(false));
        let _ = tx.send(());
        let _ = task.await;
    }
}
