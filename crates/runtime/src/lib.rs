//! The Sluice runtime: everything a service needs that is not its own logic.
//!
//! - [`processor`]: the one trait a processing service implements: a pure function from one
//!   input record to an [`processor::Outcome`] (emit, skip, reject with a bounded code);
//! - [`transactional`]: the consume-transform-produce loop around it, with Kafka transactions:
//!   outputs, dead letters and the consumed offsets commit together or not at all;
//! - [`config`]: layered configuration (defaults, file, `SLUICE_` environment variables);
//! - [`kafka`]: client settings shared by every producer and consumer;
//! - [`telemetry`]: logs, metrics, `/metrics`, `/healthz`, `/readyz`, OTLP trace export;
//! - [`shutdown`]: SIGTERM/SIGINT as a future and a flag;
//! - [`trace`]: W3C `traceparent` carried in Kafka headers;
//! - [`tls`], [`auth`], [`http`], [`audit`]: every entrance encrypted and authenticated: TLS
//!   (optionally mutual) with certificates reloaded on rotation, bearer tokens (static or OIDC
//!   JWTs) with roles, and an audit record of every action and every view of patient data.
//!
//! Guarantees: an input offset is committed only in the transaction that holds everything
//! produced from it; infrastructure failures are retried (never dead-lettered); fatal producer
//! errors end the process with a non-zero code so the supervisor restarts it.

pub mod audit;
pub mod auth;
pub mod config;
pub mod http;
pub mod kafka;
pub mod processor;
pub mod shutdown;
pub mod stage;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod transactional;

/// The consumer group of a processing stage; its transactional ids share the prefix.
pub fn group_id(service: &str) -> String {
    format!("sluice-{service}")
}

/// Microseconds since the Unix epoch, now. The only clock services read, through
/// [`processor::Context`], so processors stay pure.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Registers the value schema of every topic `service` produces (per `topology/topics.yaml`)
/// and returns the store ready for encoding.
pub async fn register_produced(store: &sluice_registry::SchemaStore, service: &str) -> Result<(), anyhow::Error> {
    let topology = sluice_model::topology::Topology::load()?;
    for t in topology.produced_by(service) {
        let record = sluice_model::schemas::RecordType::from_name(&t.value_schema)
            .ok_or_else(|| anyhow::anyhow!("topic {} has unknown value schema {}", t.name, t.value_schema))?;
        store.register(&t.name, record).await?;
    }
    Ok(())
}

/// A service's configuration: its own fields plus the shared [`config::RuntimeConfig`].
pub trait ServiceConfig: serde::Serialize + serde::de::DeserializeOwned + Default {
    fn runtime(&self) -> &config::RuntimeConfig;

    /// Every setting agrees with the others (`sluice run <service> --check-config` and start-up);
    /// errors name the field and never print a secret. Files are opened at start-up, not here.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(self.runtime().validate()?)
    }
}

/// The whole `main` of a service binary: `--config FILE` (or `SLUICE_CONFIG`), then
/// [`serve_service`].
pub async fn service_main<C, F, Fut>(name: &'static str, about: &'static str, run: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, shutdown::Shutdown, telemetry::Health) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let args = clap::Command::new(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .arg(
            clap::Arg::new("config")
                .long("config")
                .env("SLUICE_CONFIG")
                .value_parser(clap::value_parser!(std::path::PathBuf))
                .help("YAML configuration file (environment variables SLUICE_* override it)"),
        )
        .get_matches();
    serve_service(name, args.get_one::<std::path::PathBuf>("config").map(|p| p.as_path()), run).await
}

/// Everything a service binary does besides its own logic: load the layered config, start
/// logging (and trace export, when configured, as `name`), handle SIGTERM/SIGINT, serve
/// `/metrics`, `/healthz` and `/readyz`, then run.
pub async fn serve_service<C, F, Fut>(name: &str, config_file: Option<&std::path::Path>, run: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, shutdown::Shutdown, telemetry::Health) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cfg: C = config::load(config_file)?;
    let _telemetry = telemetry::init(&cfg.runtime().log_format, &cfg.runtime().tracing, name)?;
    let shutdown = shutdown::Shutdown::new();
    shutdown.on_signals()?;
    let health = telemetry::Health::new();
    telemetry::serve_http(&cfg.runtime().http_addr, health.router(), shutdown.clone()).await?;
    run(cfg, shutdown, health).await
}
