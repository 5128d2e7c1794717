//! Ingest throughput and ACK latency against the embedded broker, printed next to a baseline
//! measured in the same run: the same payloads written straight to the same topic by a plain
//! idempotent `acks=all` producer, with the same number of concurrent writers each waiting for
//! its delivery report before the next write. The ratio is the cost of MLLP framing, parsing,
//! the raw-record encoding and the ACK on top of what Kafka itself costs.
//!
//! Run: `cargo bench --bench ingest` (optionally `-- --messages 4000 --connections 1,4,16`).
//! Figures, not assertions: it prints and exits 0.

use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_runtime::config::RuntimeConfig;
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::Health;
use std::time::{Duration, Instant};

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut lat: Vec<Duration>, elapsed: Duration) -> Figures {
    lat.sort();
    let at = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    Figures {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn baseline(producer: &FutureProducer, msgs: &[Vec<u8>], writers: usize) -> Figures {
    let chunk = msgs.len().div_ceil(writers);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in msgs.chunks(chunk) {
        let part = part.to_vec();
        let p = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(part.len());
            for (i, m) in part.iter().enumerate() {
                let key = format!("k{i}");
                let t = Instant::now();
                let rec = FutureRecord::to("bench.baseline.v1").key(&key).payload(m);
                if p.send(rec, Duration::from_secs(30)).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap_or_default());
    }
    figures(lat, started.elapsed())
}

async fn through_ingest(port: u16, msgs: &[Vec<u8>], connections: usize) -> (Figures, usize) {
    let chunk = msgs.len().div_ceil(connections);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in msgs.chunks(chunk) {
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(part.len());
            let mut not_aa = 0;
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return (lat, part.len());
            };
            for m in &part {
                let t = Instant::now();
                match sluice_ingest::mllp::send_one(&mut s, m, Duration::from_secs(60)).await {
                    Ok(ack) if sluice_ingest::mllp::ack_code(&ack) == "AA" => lat.push(t.elapsed()),
                    _ => not_aa += 1,
                }
            }
            (lat, not_aa)
        }));
    }
    let mut lat = Vec::new();
    let mut not_aa = 0;
    for t in tasks {
        let (l, n) = t.await.unwrap_or_default();
        lat.extend(l);
        not_aa += n;
    }
    (figures(lat, started.elapsed()), not_aa)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = arg("--messages").and_then(|v| v.parse().ok()).unwrap_or(3000);
    let conns: Vec<usize> = arg("--connections")
        .unwrap_or_else(|| "1,4,16".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();

    let bport = free_port();
    let _broker = sluice::broker::start(bport).await?;
    let bootstrap = format!("127.0.0.1:{bport}");
    let shutdown = Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry = format!("http://{}", listener.local_addr()?);
    let sd = shutdown.clone();
    tokio::spawn(sluice_registry::server::serve(listener, async move { sd.wait().await }));
    sluice::topology::apply(
        &sluice_runtime::config::KafkaConfig {
            bootstrap_servers: bootstrap.clone(),
            ..Default::default()
        },
        1,
    )
    .await?;
    let admin: rdkafka::admin::AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).create()?;
    let topic = rdkafka::admin::NewTopic::new("bench.baseline.v1", 3, rdkafka::admin::TopicReplication::Fixed(1));
    admin.create_topics([&topic], &rdkafka::admin::AdminOptions::new()).await?;

    let mut rt = RuntimeConfig::default();
    rt.kafka.bootstrap_servers = bootstrap.clone();
    rt.schema_registry_url = registry;
    let mllp = free_port();
    let cfg = sluice_ingest::Config {
        runtime: rt.clone(),
        listen_addr: format!("127.0.0.1:{mllp}"),
        ..Default::default()
    };
    let (sd, health) = (shutdown.clone(), Health::new());
    tokio::spawn(async move { sluice_ingest::run(cfg, sd, health).await });
    while tokio::net::TcpStream::connect(("127.0.0.1", mllp)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer: FutureProducer = sluice_runtime::kafka::idempotent_producer(&rt.kafka, "bench-baseline").create()?;

    let msgs = sluice::generate::messages(n, 7);
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    // warm both paths (connections, metadata, schema ids) before measuring
    baseline(&producer, &msgs[..50.min(n)], 1).await;
    through_ingest(mllp, &msgs[..50.min(n)], 1).await;

    println!(
        "ingest bench: {n} messages per run, mean {} bytes, acks=all, embedded broker (Tansu, in memory)",
        bytes / n.max(1)
    );
    println!(
        "{:>11} | {:>22} | {:>22} | {:>9} | {:>13}",
        "connections", "baseline msg/s p50/p99", "sluice ACK msg/s p50/p99", "ratio", "p50 overhead"
    );
    for c in conns {
        let b = baseline(&producer, &msgs, c).await;
        let (s, not_aa) = through_ingest(mllp, &msgs, c).await;
        println!(
            "{c:>11} | {:>8.0} {:>6.2?} {:>6.2?} | {:>8.0} {:>6.2?} {:>6.2?} | {:>8.2}x | {:>12.2?}{}",
            b.per_sec,
            b.p50,
            b.p99,
            s.per_sec,
            s.p50,
            s.p99,
            s.per_sec / b.per_sec,
            s.p50.saturating_sub(b.p50),
            if not_aa > 0 {
                format!("  ({not_aa} not AA)")
            } else {
                String::new()
            }
        );
    }
    shutdown.trigger();
    Ok(())
}
