//! HTTP client for the Confluent Schema Registry REST API.

use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("schema registry answered {status} for {what}")]
    Status { status: u16, what: &'static str },
    #[error("schema {id} from the registry is not valid avro")]
    BadSchema { id: u32 },
}

#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    pub fn new(base_url: &str, auth: Option<(String, String)>) -> Result<RegistryClient, RegistryError> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(RegistryClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
            auth,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("Accept", CONTENT_TYPE);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Registers a schema under a subject (idempotent: the same schema gives the same id).
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let resp = self
            .req(reqwest::Method::POST, &format!("/subjects/{subject}/versions"))
            .header("Content-Type", CONTENT_TYPE)
            .json(&json!({ "schema": schema_json, "schemaType": "AVRO" }))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                status: resp.status().as_u16(),
                what: "register",
            });
        }
        Ok(resp.json::<IdResponse>().await?.id)
    }

    /// The schema text registered under an id.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let resp = self.req(reqwest::Method::GET, &format!("/schemas/ids/{id}")).send().await?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                status: resp.status().as_u16(),
                what: "schema by id",
            });
        }
        Ok(resp.json::<SchemaResponse>().await?.schema)
    }
}
