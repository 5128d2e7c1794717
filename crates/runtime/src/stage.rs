//! Starting a processing stage: schema registration, then the transactional loop on its own
//! thread. Shared by normalise, identifier-match and route.

use crate::config::RuntimeConfig;
use crate::processor::Processor;
use crate::shutdown::Shutdown;
use crate::telemetry::Health;
use crate::transactional::{self, Stage};
use sluice_registry::{RegistryClient, SchemaStore};
use std::sync::Arc;
use std::time::Duration;

/// Builds a schema store for the configured registry.
pub fn schema_store(cfg: &RuntimeConfig) -> anyhow::Result<Arc<SchemaStore>> {
    let auth = cfg.schema_registry_username.clone().map(|u| {
        (
            u,
            cfg.schema_registry_password
                .clone()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
        )
    });
    Ok(Arc::new(SchemaStore::new(RegistryClient::new(&cfg.schema_registry_url, auth)?)?))
}

/// Registers the schemas `service` produces, retrying while the registry is unreachable.
pub async fn register_with_retry(store: &SchemaStore, service: &str, shutdown: &Shutdown) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        match crate::register_produced(store, service).await {
            Ok(()) => return Ok(()),
            Err(e) if !shutdown.is_triggered() => {
                tracing::warn!(service, error = %e, "schema registration failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs a processing stage until shutdown. `make` runs on the stage's thread after the
/// producer has fenced older instances; it may rebuild state from topics.
pub async fn run_stage<P, F>(
    name: &'static str,
    inputs: Vec<String>,
    cfg: RuntimeConfig,
    shutdown: Shutdown,
    health: Health,
    make: F,
) -> anyhow::Result<()>
where
    P: Processor + 'static,
    F: FnOnce(Arc<SchemaStore>, tokio::runtime::Handle) -> anyhow::Result<P> + Send + 'static,
{
    cfg.validate()?;
    let readiness = health.service(name);
    let store = schema_store(&cfg)?;
    register_with_retry(&store, name, &shutdown).await?;
    let handle = tokio::runtime::Handle::current();
    let dead_letter_topic = sluice_model::topology::Topology::dead_letter_topic(name);
    let joined = tokio::task::spawn_blocking(move || {
        let stage = Stage {
            name,
            inputs,
            dead_letter_topic,
            config: &cfg,
            store: store.clone(),
            shutdown,
            readiness,
            handle: handle.clone(),
        };
        transactional::run(stage, move || make(store, handle))
    })
    .await?;
    Ok(joined?)
}
