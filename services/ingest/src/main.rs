//! ingest service binary: the shared wiring in `sluice_runtime::serve_service`, then the service.

use clap::Parser;

#[derive(Parser)]
#[command(about = "MLLP listener producing raw HL7 v2 to Kafka")]
struct Args {
    /// YAML configuration file (environment variables SLUICE_* override it)
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_runtime::serve_service(args.config.as_deref(), sluice_ingest::run).await
}
