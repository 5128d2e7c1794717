//! `sluice`: the command line. The logic lives in the library half (`src/lib.rs`).

use clap::{Parser, Subcommand};
use sluice::{bench, broker, generate, identity, load, send, topology, up};

/// mimalloc instead of glibc's malloc: under load about a quarter of the services' CPU went to
/// glibc's malloc and free (`perf`, `sluice bench pipeline`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "clinical integration pipeline on Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded Kafka-API broker (Tansu, in-memory, development only: no durability,
    /// aborted transactions visible) in the foreground
    Broker(broker::Args),
    /// Serve the embedded schema registry (Confluent REST subset) in the foreground
    Registry {
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: String,
    },
    /// Run the whole pipeline: broker and registry (unless external ones are given) and all services
    Up(Box<up::Args>),
    /// Run one service: ingest, normalise, identifier-match, route or dead-letter
    Run {
        service: String,
        /// YAML configuration file (environment variables SLUICE_* override it)
        #[arg(long, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// Load and validate the configuration (file plus SLUICE_* variables), print it with
        /// secrets masked, and exit: 0 when the service would start with it
        #[arg(long)]
        check_config: bool,
    },
    /// Create or verify the topics of topology/topics.yaml
    #[command(subcommand)]
    Topology(topology::Command),
    /// Send HL7 v2 files over MLLP and print each ACK
    Send(send::Args),
    /// Write realistic synthetic HL7 v2 messages (NHS numbers from the 999 test range)
    Generate(generate::Args),
    /// Patient matching tools: estimate weights, score a synthetic population
    #[command(subcommand)]
    Identity(identity::Command),
    /// Offer synthetic HL7 v2 traffic over MLLP at a fixed rate (open loop) and report ACK latency
    Load(load::Args),
    /// Benchmarks: the whole pipeline against a pass-through chain on the same broker, and each
    /// stage's processing alone
    #[command(subcommand)]
    Bench(bench::Command),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Broker(a) => broker::run_foreground(a).await,
        Command::Registry { addr } => {
            sluice_runtime::telemetry::init_logging("text");
            let shutdown = sluice_runtime::shutdown::Shutdown::new();
            shutdown.on_signals()?;
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "schema registry listening");
            sluice_registry::server::serve(listener, async move { shutdown.wait().await }).await?;
            Ok(())
        }
        Command::Up(a) => up::run(*a).await,
        Command::Run {
            service,
            config,
            check_config: true,
        } => up::check_one(&service, config.as_deref()),
        Command::Run { service, config, .. } => up::run_one(&service, config.as_deref()).await,
        Command::Topology(c) => topology::run(c).await,
        Command::Send(a) => send::run(a).await,
        Command::Generate(a) => generate::run(a),
        Command::Load(a) => load::run(a).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Identity(c) => identity::run(c),
    }
}
