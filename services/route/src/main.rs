//! route service binary: the shared wiring in `sluice_runtime::serve_service`, then the service.

use clap::Parser;

#[derive(Parser)]
#[command(about = "content-based routing of matched events")]
struct Args {
    /// YAML configuration file (environment variables SLUICE_* override it)
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_runtime::serve_service(args.config.as_deref(), sluice_route::run).await
}
