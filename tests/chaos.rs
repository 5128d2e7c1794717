//! The chaos suite, on Apache Kafka: HL7 over MLLP at a steady offered rate while every service
//! is SIGKILLed and restarted at random moments, a broker node is killed -9 and restarted on its
//! data, every partition's leader is moved, and every client connection to the brokers is cut
//! (a TCP proxy in front of each node). Two instances of normalise and of route, so kills also
//! rebalance their groups.
//!
//! It asserts that every message answered AA appears exactly once (by event id) in the routed
//! or review topics, that nothing else appears there (a malformed message, answered AR, never
//! does), that each patient's events keep their order in the routed topics, and that every dead
//! letter has a reason. It prints the counts, the faults of each kind and the time to recover
//! from each, measured to the first committed transaction (ingest: its first accepted write).
//!
//! The `.ci/run` size is the default: 5,000 messages, two kills of each service, one broker
//! kill, one leader change and two cuts. The full run:
//!
//! ```text
//! SLUICE_TEST_CHAOS_MESSAGES=100000 SLUICE_TEST_CHAOS_RATE=150 SLUICE_TEST_CHAOS_KILLS=5 SLUICE_TEST_CHAOS_BROKER_KILLS=2 \
//!   SLUICE_TEST_CHAOS_LEADER_CHANGES=2 SLUICE_TEST_CHAOS_CUTS=3 cargo test --release --test chaos -- --nocapture
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use common::chaos::{self, Fault};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every process of the run: (harness key, service).
const INSTANCES: [(&str, &str); 7] = [
    ("ingest", "ingest"),
    ("normalise", "normalise"),
    ("normalise-2", "normalise"),
    ("identifier-match", "identifier-match"),
    ("route", "route"),
    ("route-2", "route"),
    ("dead-letter", "dead-letter"),
];

/// What one fault did and how long the pipeline took to work again.
struct Recovery {
    fault: Fault,
    at: Duration,
    recovered: tokio::task::JoinHandle<Option<(&'static str, Duration)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_message_once_and_in_order_through_kills_failovers_and_cuts() {
    let messages = setting("SLUICE_TEST_CHAOS_MESSAGES", 5000.0) as usize;
    let rate = setting("SLUICE_TEST_CHAOS_RATE", 100.0);
    let seed = setting("SLUICE_TEST_CHAOS_SEED", 42.0) as u64;
    let mut p = Pipeline::start_on(BrokerKind::KafkaBehindProxies, &[]).await;
    for (key, service) in INSTANCES.iter().filter(|(k, s)| k != s) {
        p.start_instance(key, service, &[]);
    }
    for (key, _) in INSTANCES {
        p.wait_ready(key).await;
    }
    let traffic = chaos::traffic(messages, 12, seed);
    let faults = chaos::faults(
        &INSTANCES,
        setting("SLUICE_TEST_CHAOS_KILLS", 2.0) as usize,
        setting("SLUICE_TEST_CHAOS_BROKER_KILLS", 1.0) as usize,
        setting("SLUICE_TEST_CHAOS_LEADER_CHANGES", 1.0) as usize,
        setting("SLUICE_TEST_CHAOS_CUTS", 2.0) as usize,
        seed,
    );
    let started = Instant::now();
    let sender = chaos::send(p.mllp_port, &traffic, rate);
    // the faults fall at random moments within the first 85% of the planned sending time
    let span = messages as f64 / rate * 0.85;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A05);
    let mut at: Vec<f64> = (0..faults.len()).map(|_| rng.random_range(2.0..span.max(3.0))).collect();
    at.sort_by(f64::total_cmp);
    let mut recoveries = Vec::new();
    // a process that exits on its own is a crash: noted, and started again as a supervisor
    // (Kubernetes) would; the suite fails if there was any
    let mut crashes = Vec::new();
    for (fault, when) in faults.iter().zip(at) {
        let due = started + Duration::from_secs_f64(when);
        while Instant::now() < due {
            supervise(&mut p, &mut crashes, started);
            tokio::time::sleep(Duration::from_millis(500).min(due.saturating_duration_since(Instant::now()))).await;
        }
        recoveries.push(inject(&mut p, *fault, &mut rng, started).await);
    }
    let sent = loop {
        supervise(&mut p, &mut crashes, started);
        if sender.is_finished() {
            break sender.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let send_secs = started.elapsed().as_secs_f64();

    supervise(&mut p, &mut crashes, started);
    assert!(crashes.is_empty(), "processes exited on their own: {crashes:?}");
    assert!(
        sent.refused_good.is_empty(),
        "well-formed messages refused: {:?}",
        sent.refused_good
    );
    assert_eq!(
        sent.accepted,
        traffic.expected.len(),
        "every well-formed message is accepted in the end"
    );
    // the stages' consumer lag first (cheap), then the routed topics once
    let drained = chaos::wait_drained(&p, Duration::from_secs(1200)).await;
    println!(
        "chaos: drained {drained:?} after the last message was accepted; lag {:?}",
        tokio::task::block_in_place(|| chaos::lags(&p))
    );
    let routed = p.wait_routed(&traffic.expected, Duration::from_secs(120)).await;
    let drained_secs = started.elapsed().as_secs_f64();
    routed.assert_exactly_once(&traffic.expected);
    let ordered = chaos::assert_patient_order(&p).await;
    let reasons = chaos::dead_letter_reasons(&p).await;
    let malformed_kept: usize = reasons
        .iter()
        .filter(|((t, _), _)| t == sluice_model::topology::names::DL_INGEST)
        .map(|(_, n)| n)
        .sum();
    let answered_malformed: usize = sent.malformed_answers.values().sum();
    assert_eq!(answered_malformed, traffic.malformed, "every malformed message answered");
    assert!(
        sent.malformed_answers.keys().all(|c| c == "AR" || c == "AE"),
        "{:?}",
        sent.malformed_answers
    );
    assert!(
        malformed_kept >= traffic.malformed,
        "{malformed_kept} malformed messages kept of {}",
        traffic.malformed
    );
    let stage_letters = reasons
        .keys()
        .filter(|(t, _)| t != sluice_model::topology::names::DL_INGEST)
        .count();
    assert_eq!(stage_letters, 0, "well-formed traffic dead-lettered by a stage: {reasons:?}");

    if let Ok(dir) = std::env::var("SLUICE_TEST_CHAOS_LOGS") {
        p.copy_logs(std::path::Path::new(&dir));
    }
    report(&p, &traffic, &sent, recoveries, send_secs, drained_secs, ordered, &reasons).await;
}

/// Starts again every process that exited on its own, noting it.
fn supervise(p: &mut Pipeline, crashes: &mut Vec<String>, started: Instant) {
    for (key, code) in p.exited() {
        let service = INSTANCES.iter().find(|(k, _)| *k == key).map_or(key, |(_, s)| *s);
        println!(
            "chaos: {:>7.1}s {key} exited on its own ({code:?}); starting it again",
            started.elapsed().as_secs_f64()
        );
        crashes.push(format!("{key} ({code:?}) at {:.0}s", started.elapsed().as_secs_f64()));
        p.start_instance(key, service, &[]);
    }
}

/// Injects one fault; returns a handle that resolves to the recovery time.
async fn inject(p: &mut Pipeline, fault: Fault, rng: &mut StdRng, started: Instant) -> Recovery {
    let ports: Vec<(&'static str, &'static str, u16)> = INSTANCES.iter().map(|(k, s)| (*k, *s, p.http_port(k))).collect();
    let before = chaos::progress(&ports).await;
    let t = Instant::now();
    let at = started.elapsed();
    let limit = Duration::from_secs(180);
    let recovered = match fault {
        Fault::Kill(key, service) => {
            p.kill(key);
            // a supervisor restarts it after a moment
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..2000))).await;
            p.start_instance(key, service, &[]);
            let port = p.http_port(key);
            tokio::spawn(chaos::first_work(service, port, t, limit))
        }
        Fault::Broker(i) => {
            let k = p.broker.kafka().unwrap();
            k.kill(i);
            tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
            k.restart(i);
            tokio::spawn(async move { chaos::all_progressed(&ports, &before, t, limit).await })
        }
        Fault::Leaders => {
            let k = p.broker.kafka().unwrap();
            let moved = tokio::task::block_in_place(|| k.move_leaders());
            assert!(moved > 0, "no partition changed leader");
            println!("chaos: leader change moved {moved} partitions");
            tokio::spawn(async move { chaos::all_progressed(&ports, &before, t, limit).await })
        }
        Fault::Cut => {
            for proxy in &p.proxies {
                proxy.cut(Duration::from_secs(2));
            }
            tokio::spawn(async move { chaos::all_progressed(&ports, &before, t, limit).await })
        }
    };
    Recovery { fault, at, recovered }
}

#[allow(clippy::too_many_arguments)]
async fn report(
    p: &Pipeline,
    traffic: &chaos::Traffic,
    sent: &chaos::Sent,
    recoveries: Vec<Recovery>,
    send_secs: f64,
    drained_secs: f64,
    ordered: usize,
    reasons: &BTreeMap<(String, String), usize>,
) {
    let mut by_kind: BTreeMap<String, Vec<Option<Duration>>> = BTreeMap::new();
    for r in recoveries {
        let took = r.recovered.await.unwrap();
        println!(
            "chaos: {:>7.1}s {:<28} recovered in {}",
            r.at.as_secs_f64(),
            r.fault.kind(),
            took.map_or("(not within 180 s)".to_owned(), |(s, d)| format!(
                "{:.2}s (last: {s})",
                d.as_secs_f64()
            ))
        );
        by_kind.entry(r.fault.kind()).or_default().push(took.map(|(_, d)| d));
    }
    for (kind, times) in &by_kind {
        let ok: Vec<f64> = times.iter().flatten().map(Duration::as_secs_f64).collect();
        let max = ok.iter().copied().fold(0.0, f64::max);
        let mean = ok.iter().sum::<f64>() / ok.len().max(1) as f64;
        println!(
            "chaos: {kind}: {} times, recovered {} (mean {mean:.2}s, max {max:.2}s)",
            times.len(),
            ok.len()
        );
    }
    let mut lat = sent.latencies.clone();
    lat.sort();
    let pct = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    let cuts: u64 = p.proxies.iter().map(common::proxy::Proxy::connections).sum();
    println!(
        "chaos: {} well-formed messages accepted exactly once and routed ({ordered} routed events in per-patient order), {} malformed answered {:?}; \
         sent in {send_secs:.0}s ({:.0} msg/s), all routed after {drained_secs:.0}s; {} AR 207 resend requests, {} resends after a lost connection; \
         time to AA p50 {:?} p99 {:?} max {:?}; {cuts} broker connections through the proxies; dead letters {reasons:?}",
        traffic.expected.len(),
        traffic.malformed,
        sent.malformed_answers,
        (traffic.expected.len() + traffic.malformed) as f64 / send_secs,
        sent.resend_requests,
        sent.unanswered,
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or_default(),
    );
}
