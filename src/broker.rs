//! The embedded broker: Tansu, a Kafka-API broker, run as a child process with in-memory
//! storage. It keeps nothing across restarts, which is what a development default and quick
//! tests want; production points Sluice at its own Kafka cluster instead.
//!
//! What it does not guarantee ([`NOT_GUARANTEED`]): it keeps no data across a restart, has no
//! replication, and shows the records of aborted and fenced transactions to `read_committed`
//! readers, so after a crash or rebalance a redone batch appears twice downstream (and
//! normalise may skip messages whose outputs were never committed). Sluice's exactly-once and
//! durability promises hold on Apache Kafka, and are tested there (the tests' Kafka tier).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Said by `sluice up` and `sluice broker` whenever they start the embedded broker.
pub const NOT_GUARANTEED: &str = "the embedded broker is for development only: it keeps nothing across a restart, \
     has no replication, and shows records of aborted transactions to read_committed readers, so exactly-once \
     does not hold on it (a crash or rebalance duplicates or loses events); use Apache Kafka \
     (--bootstrap-servers) for anything that matters";

#[derive(clap::Args)]
pub struct Args {
    /// Port to listen on (127.0.0.1)
    #[arg(long, default_value_t = 9092)]
    pub port: u16,
}

/// Where the broker binary is: `SLUICE_TANSU_BIN`, or `.tools/bin/tansu` in the source tree
/// (installed on first use by `scripts/setup-tools.sh`).
pub fn tansu_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join(".tools/bin/tansu");
    if !bin.exists() {
        let script = root.join("scripts/setup-tools.sh");
        eprintln!("installing the embedded broker with {}", script.display());
        let status = std::process::Command::new("bash").arg(&script).arg("--broker-only").status()?;
        anyhow::ensure!(
            status.success(),
            "broker install failed: run {} and check its output",
            script.display()
        );
    }
    Ok(bin)
}

/// The broker process, configured to listen on a port of 127.0.0.1 with in-memory storage and
/// its output discarded. A `std` command, so tests can own (and signal) the child themselves.
pub fn command(port: u16) -> anyhow::Result<std::process::Command> {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut c = std::process::Command::new(tansu_path()?);
    c.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Ok(c)
}

/// Starts the broker on a port and waits until it accepts connections.
pub async fn start(port: u16) -> anyhow::Result<Child> {
    let child = Command::from(command(port)?).kill_on_drop(true).spawn()?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("broker did not start listening on port {port}")
}

pub async fn run_foreground(a: Args) -> anyhow::Result<()> {
    let mut child = start(a.port).await?;
    eprintln!("broker listening on 127.0.0.1:{} (in-memory; Ctrl-C stops it)", a.port);
    eprintln!("note: {NOT_GUARANTEED}");
    tokio::select! {
        s = child.wait() => anyhow::bail!("broker exited: {:?}", s?),
        _ = tokio::signal::ctrl_c() => { let _ = child.kill().await; Ok(()) }
    }
}
