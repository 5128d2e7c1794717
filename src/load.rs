//! `sluice load`: an open-loop MLLP load generator. It offers a fixed rate whatever the ACKs do:
//! each connection writes its frames at scheduled times (pipelined, without waiting for the
//! previous ACK) and a reader matches ACKs to frames in order. Latency is measured from each
//! frame's *scheduled* send time, so a stalled receiver shows as latency instead of silently
//! lowering the offered rate (no coordinated omission).

use sluice_ingest::mllp::{self, Decoded, Decoder};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// MLLP listener address
    #[arg(long, default_value = "127.0.0.1:2575")]
    pub addr: String,
    /// Messages per second offered, across all connections
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Connections
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// How long to offer load
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Synthetic patients the messages are about
    #[arg(long, default_value_t = 10_000)]
    pub patients: usize,
    /// Random seed of the synthetic messages
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub offered: usize,
    pub answered: usize,
    pub accepted: usize,
    pub elapsed: Duration,
    /// ACK latency from the scheduled send time, one per answered frame
    pub latencies: Vec<Duration>,
}

impl Report {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
    }
}

/// One connection: writes its share at the scheduled times, reads the ACKs as they come.
async fn connection(
    addr: String,
    frames: Vec<Vec<u8>>,
    interval: Duration,
    start: Instant,
) -> anyhow::Result<(usize, usize, Vec<Duration>)> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let offered = frames.len();
    let writer = tokio::spawn(async move {
        for (k, f) in frames.iter().enumerate() {
            let at = start + interval.mul_f64(k as f64);
            tokio::time::sleep_until(at.into()).await;
            if tx.send(at).is_err() || wr.write_all(f).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut dec = Decoder::new(1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut answered, mut accepted, mut latencies) = (0, 0, Vec::with_capacity(offered));
    while answered < offered {
        let n = match tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        dec.push(&buf[..n]);
        while let Some(d) = dec.next_frame() {
            let Decoded::Frame(ack) = d else { continue };
            let Some(scheduled) = rx.recv().await else { break };
            latencies.push(scheduled.elapsed());
            answered += 1;
            accepted += usize::from(mllp::ack_code(&ack) == "AA");
        }
    }
    let _ = writer.await;
    Ok((answered, accepted, latencies))
}

/// Offers `messages` (cycled if fewer than the run needs) at `rate` per second over `conns`
/// connections for `seconds`.
pub async fn load(addr: &str, messages: Arc<Vec<Vec<u8>>>, rate: f64, conns: usize, seconds: f64) -> anyhow::Result<Report> {
    let conns = conns.max(1);
    let total = (rate * seconds).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(conns as f64 / rate.max(0.001));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let frames: Vec<Vec<u8>> = (c..total)
            .step_by(conns)
            .map(|k| mllp::frame(&messages[k % messages.len().max(1)]))
            .collect();
        // stagger the connections over one interval so the offered load is even
        let offset = interval.mul_f64(c as f64 / conns as f64);
        tasks.push(tokio::spawn(connection(addr.to_owned(), frames, interval, start + offset)));
    }
    let mut report = Report {
        offered: total,
        ..Default::default()
    };
    for t in tasks {
        let (answered, accepted, latencies) = t.await??;
        report.answered += answered;
        report.accepted += accepted;
        report.latencies.extend(latencies);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let count = (a.rate * a.seconds).round() as usize;
    let messages = Arc::new(crate::generate::messages_for(count.max(1), a.patients.max(1), a.seed));
    let r = load(&a.addr, messages, a.rate, a.conns, a.seconds).await?;
    println!(
        "offered {} at {:.0}/s over {} connections: {} answered ({} AA) in {:.1} s, {:.0}/s answered",
        r.offered,
        a.rate,
        a.conns,
        r.answered,
        r.accepted,
        r.elapsed.as_secs_f64(),
        r.answered as f64 / r.elapsed.as_secs_f64()
    );
    println!(
        "ACK latency from the scheduled send: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        r.percentile(0.5),
        r.percentile(0.9),
        r.percentile(0.99),
        r.percentile(1.0)
    );
    Ok(())
}
