//! End-to-end under faults, watched the way an SRE watches production: the broker process is
//! paused (SIGSTOP) mid-traffic and resumed, a poison record is dead-lettered by normalise and
//! replayed through the dead-letter API, and a real Prometheus scrapes every service's
//! `/metrics` throughout.
//!
//! Asserts: while the broker is paused, senders get `AR` with an ERR segment (207, resend) and
//! FHIR senders `503` with `Retry-After`
//! within the configured ACK timeout, never an `AA` and never a silent close, and ingest
//! reports not ready; after the resume, ingest becomes ready again without traffic, the
//! senders' resends are accepted, and every accepted message reaches a routed or review topic
//! exactly once. The replayed record goes back through normalise (marked as a replay) and its
//! second failure is a new dead letter with attempt 2 and the original first-failure time.
//! Prometheus sees every target up, the failures and dead letters as counters, and no
//! identifier or name from the traffic appears in any metric.

#![allow(clippy::unwrap_used)]

mod common;

use common::prometheus::Prometheus;
use common::*;
use sluice_model::topology::names;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ACK_TIMEOUT_MS: u64 = 4000;

async fn ready(p: &Pipeline, name: &str) -> bool {
    let url = p.metrics_url(name).replace("/metrics", "/readyz");
    reqwest::get(url).await.is_ok_and(|r| r.status().is_success())
}

fn event_ids(msgs: &[Vec<u8>]) -> HashSet<String> {
    msgs.iter()
        .map(|m| sluice_model::ids::hl7_event_id(&sluice_hl7::Message::parse(m)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_pause_naks_then_recovers_exactly_once_and_replay_goes_back_through_the_stage() {
    let ack_timeout = ACK_TIMEOUT_MS.to_string();
    // info-level logs from every service: they are checked for patient data at the end
    let mut env = vec![("ingest", "SLUICE_ACK_TIMEOUT_MS", ack_timeout.as_str())];
    env.extend(SERVICES.iter().map(|s| (*s, "RUST_LOG", "info,rdkafka=warn")));
    let mut p = Pipeline::start_on(BrokerKind::exactly_once(), &env).await;
    let prom = Prometheus::start(&p).await;
    prom.wait_for("count(up == 1)", |v| v == SERVICES.len() as f64, Duration::from_secs(30))
        .await;

    // steady traffic first
    let before = sluice::generate::messages(150, 21);
    for (code, _) in send_phase(p.mllp_port, &before, 2).await {
        assert_eq!(code, "AA");
    }

    // the broker stops answering: every sender must hear AR (207, resend) within the ACK
    // timeout, with an ERR segment, and ingest must say it is not ready
    let during = sluice::generate::messages(6, 22);
    p.broker.pause();
    let paused_at = Instant::now();
    let mut tasks = Vec::new();
    for m in &during {
        let m = m.clone();
        let port = p.mllp_port;
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let t = Instant::now();
            let ack = sluice_ingest::mllp::send_one(&mut s, &m, Duration::from_secs(60)).await.unwrap();
            (ack, t.elapsed())
        }));
    }
    // a FHIR sender at the same moment: 503 with Retry-After, nothing acknowledged
    let fhir_body = sluice::generate::fhir_bundles(1, 24).remove(0);
    let fhir_url = format!("http://127.0.0.1:{}/fhir", p.fhir_port);
    let client = common::http_with(common::SENDER_TOKEN);
    let r = client
        .post(&fhir_url)
        .header("content-type", "application/fhir+json")
        .body(fhir_body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503, "paused broker: a FHIR body is not accepted");
    assert!(r.headers().contains_key("retry-after"));
    let outcome: serde_json::Value = r.json().await.unwrap();
    assert_eq!(outcome["issue"][0]["details"]["coding"][0]["code"], "kafka_unavailable");
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (ack, took) = t.await.unwrap();
        let text = String::from_utf8_lossy(&ack).into_owned();
        assert_eq!(sluice_ingest::mllp::ack_code(&ack), "AR", "paused broker: {text}");
        assert!(text.contains("\rERR|"), "a NAK carries an ERR segment: {text}");
        assert!(text.contains("207"), "a broker outage is 207 (resend): {text}");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_millis(ACK_TIMEOUT_MS * 3),
        "NAKs took {slowest:?} with an ACK timeout of {ACK_TIMEOUT_MS} ms"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready(&p, "ingest").await {
        assert!(Instant::now() < deadline, "ingest still ready with the broker paused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    prom.wait_for("sluice_runtime_ready{service=\"ingest\"}", |v| v == 0.0, Duration::from_secs(15))
        .await;
    let paused_for = paused_at.elapsed();
    p.broker.resume();

    // ingest recovers on its own (no traffic needed), then the senders resend what was NAKed
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(&p, "ingest").await {
        assert!(Instant::now() < deadline, "ingest did not become ready after the broker resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered_after = paused_at.elapsed() - paused_for;
    // like a real sender, resend on AR 207 after a short pause; the first write after an
    // outage may still fail while ingest replaces a producer the broker no longer accepts
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.mllp_port)).await.unwrap();
    let mut most_attempts = 0;
    for m in &during {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let ack = sluice_ingest::mllp::send_one(&mut s, m, Duration::from_secs(60)).await.unwrap();
            if sluice_ingest::mllp::ack_code(&ack) == "AA" {
                break;
            }
            assert!(attempts < 5, "a resend after the outage was refused {attempts} times");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        most_attempts = most_attempts.max(attempts);
    }
    // and the FHIR sender resends after Retry-After
    let mut fhir_attempts = 0;
    loop {
        fhir_attempts += 1;
        if sluice::send::post_fhir(&client, &fhir_url, fhir_body.clone()).await.unwrap().0 == 202 {
            break;
        }
        assert!(
            fhir_attempts < 5,
            "a FHIR resend after the outage was refused {fhir_attempts} times"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = sluice::generate::messages(150, 23);
    for (code, _) in send_phase(p.mllp_port, &after, 2).await {
        assert_eq!(code, "AA");
    }

    let mut expected = event_ids(&before);
    expected.extend(event_ids(&during));
    expected.extend(event_ids(&after));
    expected.extend(fhir_event_ids(&fhir_body));
    let routed = p.wait_routed(&expected, Duration::from_secs(180)).await;
    routed.assert_exactly_once(&expected);
    println!(
        "faults: broker paused {paused_for:?}; slowest NAK {slowest:?}; ingest ready again {recovered_after:?} after resume; \
         resends needed at most {most_attempts} attempts; {} events exactly once",
        expected.len()
    );

    // a poison record on normalise's input: dead-lettered by normalise, in its transaction
    p.poison(names::RAW);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let l = p.dead_letters("stage=normalise").await;
        if l["count"].as_u64() == Some(1) {
            break l["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "normalise did not dead-letter the poison record: {l}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(first["original_topic"], names::RAW);
    assert_eq!(first["attempt"], 1);
    let code = first["reason_code"].as_str().unwrap().to_owned();

    // replayed: back onto hl7.raw.v1 marked as a replay, through normalise again; it fails
    // again, so a second dead letter carries attempt 2 and the first failure time
    let id = first["id"].as_str().unwrap();
    let r = common::http_with(common::OPERATOR_TOKEN)
        .post(format!("{}/{id}/replay", p.dead_letter_url()))
        .json(&serde_json::json!({ "reason": "sender fixed, retrying" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "replay refused: {}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let l = p.dead_letters("stage=normalise").await;
        if let Some(s) = l["items"].as_array().unwrap().iter().find(|i| i["attempt"] == 2) {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "the replay never came back through normalise: {l}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(second["reason_code"].as_str(), Some(code.as_str()));
    assert_eq!(second["first_failed_at"], first["first_failed_at"]);
    assert_eq!(second["status"], "quarantined");
    let again = p.dead_letters("stage=normalise&status=replayed").await;
    assert_eq!(again["count"], 1, "the replayed letter is marked replayed");
    let audits = p.read_all(names::DL_AUDIT);
    assert_eq!(audits.len(), 1, "one audit record for the replay");
    // the replay produced no clinical event
    let routed = p.wait_routed(&expected, Duration::from_secs(10)).await;
    routed.assert_exactly_once(&expected);

    // what an SRE sees: the outage, the dead letters and the pipeline's work, as counters
    prom.wait_for(
        "sum(sluice_ingest_messages_total{result=\"failed\"})",
        |v| v >= during.len() as f64,
        Duration::from_secs(15),
    )
    .await;
    prom.wait_for(
        "sum(sluice_runtime_dead_letters_total{service=\"normalise\"})",
        |v| v >= 2.0,
        Duration::from_secs(15),
    )
    .await;
    let committed = prom
        .wait_for(
            "sum(sluice_runtime_transactions_total{result=\"committed\"})",
            |v| v > 0.0,
            Duration::from_secs(15),
        )
        .await;
    prom.wait_for("count(up == 1)", |v| v == SERVICES.len() as f64, Duration::from_secs(15))
        .await;
    // the dead-letter alert fired (rules are the chart's own file)
    prom.wait_for("ALERTS{alertname=\"SluiceDeadLetters\"}", |v| v >= 1.0, Duration::from_secs(30))
        .await;
    println!("faults: prometheus saw {committed} committed transactions across the stages");

    // metrics are valid exposition text and carry no patient data
    let mut identifiers = HashSet::new();
    for m in before.iter().chain(&during).chain(&after) {
        let msg = sluice_hl7::Message::parse(m);
        for path in ["PID-3.1", "PID-5.1", "PID-5.2", "PID-7"] {
            if let Ok(v) = msg.get(path) {
                let v = String::from_utf8_lossy(v).into_owned();
                if v.len() >= 4 {
                    identifiers.insert(v);
                }
            }
        }
    }
    assert!(identifiers.len() > 100);
    for s in SERVICES {
        let text = reqwest::get(p.metrics_url(s)).await.unwrap().text().await.unwrap();
        let mut check = Command::new(tool("bin/promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed for {s}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for id in &identifiers {
            assert!(!text.contains(id.as_str()), "{s} /metrics contains patient data");
        }
    }

    // SIGTERM on ingest mid-stream: the message in flight is answered, the connection is then
    // closed, and the process exits 0; every message that got AA reaches the routed topics
    let tail = sluice::generate::messages(200, 24);
    let port = p.mllp_port;
    let sender = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut acked = Vec::new();
        for m in &tail {
            match sluice_ingest::mllp::send_one(&mut s, m, Duration::from_secs(30)).await {
                Ok(ack) => acked.push((sluice_ingest::mllp::ack_code(&ack), m.clone())),
                Err(_) => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let code = p.terminate("ingest", Duration::from_secs(20));
    assert_eq!(code, Some(0), "ingest did not drain and exit 0 on SIGTERM");
    let acked = sender.await.unwrap();
    assert!(
        !acked.is_empty() && acked.len() < 200,
        "SIGTERM landed mid-stream ({} acked)",
        acked.len()
    );
    assert!(acked.iter().all(|(c, _)| c == "AA"), "every answer before the close is AA");
    let drained: HashSet<String> = event_ids(&acked.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>());
    expected.extend(drained);
    let routed = p.wait_routed(&expected, Duration::from_secs(120)).await;
    routed.assert_exactly_once(&expected);
    for s in ["normalise", "identifier-match", "route", "dead-letter"] {
        assert_eq!(p.terminate(s, Duration::from_secs(20)), Some(0), "{s} did not exit 0 on SIGTERM");
    }

    // nothing the services logged (at info level, through an outage, rejects and a replay)
    // carries an identifier, name or birth date from the traffic
    let logs = p.logs();
    assert!(logs.lines().count() > 20, "expected info logs from the services");
    for id in &identifiers {
        assert!(!logs.contains(id.as_str()), "a service log contains patient data");
    }
    println!(
        "faults: SIGTERM drained ingest after {} ACKs; {} log lines checked for patient data",
        acked.len(),
        logs.lines().count()
    );
}
