//! dead-letter service binary: config, telemetry, runtime.

use clap::Parser;
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{self, Health};

#[derive(Parser)]
#[command(about = "dead-letter quarantine, inspection and replay API")]
struct Args {
    /// YAML configuration file (environment variables SLUICE_* override it)
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg: sluice_dead_letter::Config = sluice_runtime::config::load(args.config.as_deref())?;
    telemetry::init_logging(&cfg.runtime.log_format);
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let health = Health::new();
    telemetry::serve_http(&cfg.runtime.http_addr, health.router(), shutdown.clone()).await?;
    sluice_dead_letter::run(cfg, shutdown, health).await
}
