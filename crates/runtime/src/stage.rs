//! Starting a processing stage: schema registration, then the transactional loop on its own
//! thread. Shared by normalise, identifier-match and route.

use crate::config::RuntimeConfig;
use crate::processor::Processor;
use crate::shutdown::Shutdown;
use crate::telemetry::Health;
use crate::transactional::{self, RuntimeError, Stage};
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
///
/// A fatal Kafka error (a fenced or desynchronised transactional producer, a consumer the
/// client gave up on) ends that run of the stage; the stage then starts again in this process
/// with new clients and state rebuilt by `make` (what a restarted pod would do, without the
/// restart), after a backoff, and counts it in `sluice_runtime_stage_restarts_total`. Other
/// errors end the process.
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
    F: Fn(Arc<SchemaStore>, tokio::runtime::Handle) -> anyhow::Result<P> + Send + 'static,
{
    cfg.validate()?;
    let readiness = health.service(name);
    let store = schema_store(&cfg)?;
    register_with_retry(&store, name, &shutdown).await?;
    let handle = tokio::runtime::Handle::current();
    let dead_letter_topic = sluice_model::topology::Topology::dead_letter_topic(name);
    let joined = tokio::task::spawn_blocking(move || {
        let mut delay = Duration::from_secs(1);
        loop {
            let stage = Stage {
                name,
                inputs: inputs.clone(),
                dead_letter_topic: dead_letter_topic.clone(),
                config: &cfg,
                store: store.clone(),
                shutdown: shutdown.clone(),
                readiness: readiness.clone(),
                handle: handle.clone(),
            };
            let started = std::time::Instant::now();
            match transactional::run(stage, || make(store.clone(), handle.clone())) {
                Err(RuntimeError::Fatal { op, source }) if !shutdown.is_triggered() => {
                    readiness.set(false);
                    crate::telemetry::runtime_metrics()
                        .stage_restarts
                        .with_label_values(&[name, op])
                        .inc();
                    tracing::error!(service = name, op, error = %source, "fatal kafka error: starting the stage again with new clients");
                    // a stage that ran a good while before failing starts again quickly
                    if started.elapsed() > Duration::from_secs(300) {
                        delay = Duration::from_secs(1);
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                other => return other,
            }
        }
    })
    .await?;
    Ok(joined?)
}
