//! End-to-end: a real broker process, the registry and all five services as separate
//! processes, real HL7 over MLLP. Asserts the pipeline's promises: every well-formed message
//! gets AA and appears exactly once (by event id) in the routed or review topics; every
//! malformed one gets AR with an ERR segment and sits in a dead-letter topic with a code; a
//! SIGKILLed and restarted stage and a resend of already-ACKed messages cause no loss and no
//! duplicate. On Apache Kafka (the default tier) a broker node is also SIGKILLed mid-traffic and
//! restarted on its data. Throughput and ACK latency are printed, not asserted.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sluice_model::topology::names;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mllp_to_routed_topics_exactly_once_through_kill_restart_and_resend() {
    let mut p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;

    // well-formed: synthetic traffic plus every corpus message the parser accepts
    let mut good: Vec<Vec<u8>> = sluice::generate::messages(900, 11);
    let mut bad: Vec<Vec<u8>> = sluice::generate::malformed(40);
    for m in corpus_messages() {
        if sluice_hl7::Message::parse(&m).is_acceptable() {
            good.push(m)
        } else {
            bad.push(m)
        }
    }
    // a real MLLP peer: python-hl7's mllp_send, with LF-separated files (--loose)
    let dir = tempfile::tempdir().unwrap();
    for (i, m) in sluice::generate::messages(3, 99).iter().enumerate() {
        let f = dir.path().join(format!("m{i}.hl7"));
        std::fs::write(&f, m.iter().map(|b| if *b == b'\r' { b'\n' } else { *b }).collect::<Vec<u8>>()).unwrap();
        let out = std::process::Command::new(tool("venv/bin/mllp_send"))
            .args(["--loose", "-p", &p.mllp_port.to_string(), "-f"])
            .arg(&f)
            .arg("127.0.0.1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("MSA|AA"), "mllp_send got {text}");
        good.push(std::fs::read(&f).unwrap());
    }

    // one event per patient: a message about several patients makes several
    let expected: HashSet<String> = hl7_event_ids(&good);
    // interleave bad among good so rejects happen mid-stream
    let mut all: Vec<(bool, Vec<u8>)> = Vec::new();
    let via_peer = 3;
    let ratio = (good.len() / bad.len().max(1)).max(1);
    let mut bad_iter = bad.iter();
    for (i, g) in good[..good.len() - via_peer].iter().enumerate() {
        all.push((true, g.clone()));
        if i % ratio == 0
            && let Some(b) = bad_iter.next()
        {
            all.push((false, b.clone()));
        }
    }
    all.extend(bad_iter.map(|b| (false, b.clone())));

    let third = all.len() / 3;
    let msgs: Vec<Vec<u8>> = all.iter().map(|(_, m)| m.clone()).collect();
    let started = Instant::now();
    let mut acks = send_phase(p.mllp_port, &msgs[..third], 4).await;

    // SIGKILL normalise while it works through the backlog and phase two arrives
    let phase2 = tokio::spawn(send_phase(p.mllp_port, msgs[third..2 * third].to_vec().leak(), 4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.kill("normalise");
    p.start_service("normalise");
    acks.extend(phase2.await.unwrap());

    // then identifier-match, whose state (the identity index) must come back from its topic;
    // on Apache Kafka a broker node is SIGKILLed at the same moment (its partitions' leaders
    // move, writes wait for the ISR to shrink) and started again on its data a few seconds later
    let phase3 = tokio::spawn(send_phase(p.mllp_port, msgs[2 * third..].to_vec().leak(), 4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(k) = p.broker.kafka() {
        k.kill(1);
    }
    p.kill("identifier-match");
    p.start_service("identifier-match");
    if let Some(k) = p.broker.kafka() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        k.restart(1);
    }
    acks.extend(phase3.await.unwrap());
    let send_secs = started.elapsed().as_secs_f64();

    // every ACK as promised
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    for ((good, _), (code, _)) in all.iter().zip(&acks) {
        *by_code.entry(code.clone()).or_default() += 1;
        if *good {
            assert_eq!(code, "AA", "a well-formed message was not accepted");
        } else {
            assert!(code == "AR" || code == "AE", "a malformed message got {code}");
        }
    }

    // resend 150 already-ACKed messages, as a sender does after a lost ACK
    let resend: Vec<Vec<u8>> = good.iter().take(150).cloned().collect();
    for (code, _) in send_phase(p.mllp_port, &resend, 2).await {
        assert_eq!(code, "AA");
    }

    p.wait_ready("normalise").await;
    p.wait_ready("identifier-match").await;

    // wait until every expected event is out, then check nothing is there twice
    let store = p.store();
    let routed = p.wait_routed(&expected, Duration::from_secs(240)).await;
    let pipeline_secs = started.elapsed().as_secs_f64();
    routed.assert_exactly_once(&expected);

    // one FHIR R4 Bundle per canonical event, exactly once, on its own topic
    let mut bundles: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, v) in p.read_all(names::FHIR) {
        store.prefetch(&v).await.unwrap();
        let b: sluice_model::FhirBundle = store.decode(&v).unwrap();
        let json: serde_json::Value = serde_json::from_str(&b.bundle).unwrap();
        assert_eq!(json["resourceType"], "Bundle");
        assert_eq!(json["identifier"]["value"].as_str(), Some(b.event_id.as_str()));
        *bundles.entry(b.event_id).or_default() += 1;
    }
    assert!(bundles.values().all(|n| *n == 1), "a FHIR Bundle produced twice");
    assert!(
        expected.iter().all(|id| bundles.contains_key(id)) && bundles.len() == expected.len(),
        "{} bundles for {} events",
        bundles.len(),
        expected.len()
    );

    // every malformed message is kept in the ingest dead-letter topic with a bounded code
    let n_bad = all.iter().filter(|(g, _)| !g).count();
    let letters = p.read_all(names::DL_INGEST);
    assert_eq!(letters.len(), n_bad, "each rejected message is dead-lettered exactly once");
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, v) in &letters {
        store.prefetch(v).await.unwrap();
        let dl: sluice_model::DeadLetter = store.decode(v).unwrap();
        assert_eq!(dl.stage, "ingest");
        assert!(!dl.original_value.is_empty() || dl.reason_code == "empty_message");
        *reasons.entry(dl.reason_code).or_default() += 1;
    }

    // the dead-letter service indexes them
    let list = p.dead_letters("stage=ingest").await;
    assert_eq!(list["count"].as_u64(), Some(n_bad as u64));

    // discard one with a reason: the decision is audited; an ingest reject cannot be replayed
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let api = format!("{}/{id}", p.dead_letter_url());
    let http = common::http_with(common::OPERATOR_TOKEN);
    let decision = serde_json::json!({ "reason": "test sender, not a real message" });
    let r = http.post(format!("{api}/replay")).json(&decision).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "ingest rejects have no input topic to replay to");
    let r = http.post(format!("{api}/discard")).json(&decision).send().await.unwrap();
    assert!(r.status().is_success());
    let r = http.post(format!("{api}/discard")).json(&decision).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "a decided letter cannot be decided again");
    let one: serde_json::Value = http.get(&api).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["status"], "discarded");
    assert_eq!(one["audit"][0]["actor"], "Olu Operator", "the token's actor");
    let audits = p.read_all(names::DL_AUDIT);
    assert_eq!(audits.len(), 1, "one audit record per decision");

    let mut lat: Vec<Duration> = acks.iter().map(|(_, d)| *d).collect();
    println!(
        "e2e: {} messages ({} well-formed, {} distinct events, {n_bad} malformed) ACKed in {send_secs:.1}s = {:.0} msg/s over 4 connections; \
         ACK latency p50 {:?} p99 {:?} max {:?}; all events routed after {pipeline_secs:.1}s; ACKs {by_code:?}; dead-letter reasons {reasons:?}",
        all.len(),
        good.len(),
        expected.len(),
        all.len() as f64 / send_secs,
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        lat.iter().max().unwrap(),
    );

    // a data team's standard consumer reads the normalised topic through the registry endpoint
    let out = std::process::Command::new(tool("venv/bin/python"))
        .arg(repo().join("tests/python/consume_normalised.py"))
        .args([&p.bootstrap, &p.registry_url, "200"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python consumer failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");

    // every service's producer compressed what it wrote (`kafka.compression`, lz4 by default),
    // as the brokers stored it; the consumers above read it back. (Tansu, under
    // SLUICE_TEST_BROKER=tansu, keeps its records in memory: no segments to read.)
    let Some(cluster) = p.broker.kafka() else { return };
    for topic in [
        names::RAW,
        names::NORMALISED,
        names::FHIR,
        names::MATCHED,
        "routed.adt.v1",
        names::DL_INGEST,
        names::DL_AUDIT,
    ] {
        let batches = cluster.stored_batches(topic);
        let plain: Vec<usize> = batches.iter().filter(|(c, _)| c != "lz4").map(|(_, size)| *size).collect();
        println!(
            "{topic}: {} stored batches, {} not compressed (sizes {plain:?})",
            batches.len(),
            plain.len()
        );
        // librdkafka sends a batch as it is when lz4 would not make it smaller: only small ones
        assert!(plain.len() * 4 < batches.len(), "{topic}: most batches not compressed");
        assert!(
            plain.iter().all(|size| *size < 1024),
            "{topic}: a batch of 1 KiB or more not compressed"
        );
    }
}

/// Readiness means consuming: a SIGKILLed stage restarted onto a backlog reports ready only once
/// the group has given it its partitions (all of them: it is the only member) and it knows where
/// to resume on each, not while it waits to join (the group holds the killed member's partitions
/// until its session times out). Both times, to ready and to the first transaction, are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_stage_is_ready_only_once_it_consumes_its_partitions_and_a_fenced_one_starts_again() {
    let mut p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let topology = sluice_model::topology::Topology::load().unwrap();
    let inputs: f64 = topology.consumed_by("route").map(|t| f64::from(t.partitions)).sum();
    let warm = sluice::generate::messages(50, 30);
    for (code, _) in send_phase(p.mllp_port, &warm, 2).await {
        assert_eq!(code, "AA");
    }
    let _ = p.wait_routed(&hl7_event_ids(&warm), Duration::from_secs(120)).await;
    // killed mid-membership: the broker still counts the dead process in route's group
    p.kill("route");
    let backlog = sluice::generate::messages(300, 31);
    for (code, _) in send_phase(p.mllp_port, &backlog, 4).await {
        assert_eq!(code, "AA");
    }
    p.start_service("route");
    let started = Instant::now();
    let url = p.metrics_url("route").replace("/metrics", "/readyz");
    loop {
        if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "route never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_after = started.elapsed();
    let assigned = p.metric("route", r#"sluice_runtime_assigned_partitions{service="route"}"#).await;
    assert_eq!(assigned, inputs, "ready before it held its partitions");
    let committed = r#"sluice_runtime_transactions_total{result="committed",service="route"}"#;
    while p.metric("route", committed).await < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(90), "route ready but never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let committed_after = started.elapsed();
    let mut all = warm.clone();
    all.extend(backlog);
    p.wait_routed(&hl7_event_ids(&all), Duration::from_secs(120))
        .await
        .assert_exactly_once(&hl7_event_ids(&all));

    println!("restarted route: ready after {ready_after:?}, first commit after {committed_after:?} ({inputs} partitions)");

    // a fatal Kafka error does not end the process: a second normalise with the same instance
    // id fences the first one's transactional producer; the first starts its stage again with
    // new clients (fencing the intruder in turn), and once the intruder is gone it carries on
    p.start_instance(
        "normalise-twin",
        "normalise",
        &[("SLUICE_RUNTIME__INSTANCE_ID".into(), "e2e".into())],
    );
    // summed over the operation that found the producer fenced
    let restarts = |p: &Pipeline| {
        let url = p.metrics_url("normalise");
        async move {
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            text.lines()
                .filter(|l| l.starts_with("sluice_runtime_stage_restarts_total{") && l.contains(r#"service="normalise""#))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    // The first normalise sees the fence only when it next writes, and the twin may take longer
    // to win its transactional id than one batch takes to pass (CI measured it: the batch was
    // through before the fence, the first instance sat idle and never found out). So traffic
    // keeps coming, a small batch at a time, until the first instance has started again.
    let mut fenced = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for seed in 32.. {
        if restarts(&p).await >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fenced normalise never started its stage again");
        let batch = sluice::generate::messages(20, seed);
        for (code, _) in send_phase(p.mllp_port, &batch, 2).await {
            assert_eq!(code, "AA");
        }
        fenced.extend(batch);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!fenced.is_empty(), "no traffic was sent while the twin was running");
    println!("fenced normalise started again after {} messages", fenced.len());
    p.kill("normalise-twin");
    // and once the intruder is gone, the restarted instance carries on with new input too
    let after = sluice::generate::messages(50, 9_000);
    for (code, _) in send_phase(p.mllp_port, &after, 2).await {
        assert_eq!(code, "AA");
    }
    fenced.extend(after);
    all.extend(fenced);
    p.wait_routed(&hl7_event_ids(&all), Duration::from_secs(180))
        .await
        .assert_exactly_once(&hl7_event_ids(&all));
    assert!(p.exited().is_empty(), "a stage process exited after a fatal kafka error");
}

/// Issue 8: a resend must be skipped by whichever normalise instance holds its partition now.
/// Two instances share normalise's input; each remembers what it emitted itself. When one
/// leaves, the other takes its partitions and must read the seen-events the leaver wrote (it
/// started before they existed) before it judges a record of them. Without that, every resend
/// of a message the leaver normalised is emitted a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resend_is_skipped_after_its_partition_moves_to_another_normalise_instance() {
    let mut p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let assigned = r#"sluice_runtime_assigned_partitions{service="normalise"}"#;
    let consumed = r#"sluice_runtime_records_consumed_total{service="normalise"}"#;
    p.start_instance("normalise-b", "normalise", &[]);
    p.wait_ready("normalise-b").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.metric("normalise", assigned).await < 1.0 || p.metric("normalise-b", assigned).await < 1.0 {
        assert!(Instant::now() < deadline, "the two normalise instances never shared the partitions");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // both instances normalise part of this, each remembering only its own part
    let msgs = sluice::generate::messages(300, 41);
    for (code, _) in send_phase(p.mllp_port, &msgs, 4).await {
        assert_eq!(code, "AA");
    }
    let ids = hl7_event_ids(&msgs);
    p.wait_routed(&ids, Duration::from_secs(120)).await.assert_exactly_once(&ids);
    let by_b = p.metric("normalise-b", consumed).await;
    assert!(
        by_b > 0.0 && p.metric("normalise", consumed).await > 0.0,
        "the test needs both instances to have normalised part of the traffic"
    );

    // b leaves: its partitions move to the first instance, which then gets the resends
    let all = p.metric("normalise", assigned).await + p.metric("normalise-b", assigned).await;
    assert_eq!(p.terminate("normalise-b", Duration::from_secs(60)), Some(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.metric("normalise", assigned).await < all {
        assert!(
            Instant::now() < deadline,
            "the first normalise never took over the partitions: it holds {} of {all}",
            p.metric("normalise", assigned).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let skipped = r#"sluice_normalise_resends_skipped_total{source="hl7v2"}"#;
    let before = p.metric("normalise", skipped).await;
    for (code, _) in send_phase(p.mllp_port, &msgs, 4).await {
        assert_eq!(code, "AA");
    }
    // every resend is judged and skipped (a count, so the wait ends once they were)
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.metric("normalise", skipped).await - before < msgs.len() as f64 {
        assert!(
            Instant::now() < deadline,
            "resends skipped: {} of {} (the others were emitted again)",
            p.metric("normalise", skipped).await - before,
            msgs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.wait_routed(&ids, Duration::from_secs(60)).await.assert_exactly_once(&ids);
    assert!(p.exited().is_empty(), "a stage process exited");
}

/// Issue 13, scale-out: a second instance of each stateless stage (normalise, route) takes half
/// of its service's input partitions, both carry traffic, and nothing is lost or duplicated.
/// The CPU each instance spends per record it consumed is printed beside the single
/// instance's (information only: on 2 cores wall-clock scaling cannot show, and a timed
/// assertion would judge the machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_of_each_stateless_stage_takes_half_the_partitions() {
    let mut p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let consumed = |s: &str| format!(r#"sluice_runtime_records_consumed_total{{service="{s}"}}"#);
    let assigned = |s: &str| format!(r#"sluice_runtime_assigned_partitions{{service="{s}"}}"#);
    let pid = |p: &Pipeline, key: &str| p.services[key].child.id();

    // one instance each: CPU per record consumed
    let one = sluice::generate::messages(600, 51);
    let mut cpu_one = BTreeMap::new();
    for s in ["normalise", "route"] {
        cpu_one.insert(s, (sluice::bench::cpu_seconds(pid(&p, s)), p.metric(s, &consumed(s)).await));
    }
    for (code, _) in send_phase(p.mllp_port, &one, 4).await {
        assert_eq!(code, "AA");
    }
    let mut all = one.clone();
    p.wait_routed(&hl7_event_ids(&all), Duration::from_secs(120)).await;
    let mut per_record_one = BTreeMap::new();
    for s in ["normalise", "route"] {
        let (cpu, n) = cpu_one[s];
        let records = p.metric(s, &consumed(s)).await - n;
        per_record_one.insert(s, (sluice::bench::cpu_seconds(pid(&p, s)) - cpu) / records * 1e6);
    }

    // a second instance of each: the group splits the partitions half and half
    let mut alone = BTreeMap::new();
    for s in ["normalise", "route"] {
        alone.insert(s, p.metric(s, &assigned(s)).await);
    }
    p.start_instance("normalise-b", "normalise", &[]);
    p.start_instance("route-b", "route", &[]);
    p.wait_ready("normalise-b").await;
    p.wait_ready("route-b").await;
    for (a, b) in [("normalise", "normalise-b"), ("route", "route-b")] {
        let total = alone[a];
        assert!(total >= 2.0, "{a} held {total} partitions alone");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (x, y) = (p.metric(a, &assigned(a)).await, p.metric(b, &assigned(a)).await);
            if x + y == total && (x - y).abs() <= 1.0 {
                println!("scale-out: {a} {x} + {y} of {total} partitions");
                break;
            }
            assert!(Instant::now() < deadline, "{a}: {x} and {y} of {total} partitions");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let keys = [
        ("normalise", "normalise"),
        ("normalise-b", "normalise"),
        ("route", "route"),
        ("route-b", "route"),
    ];
    let mut before = BTreeMap::new();
    for (k, s) in keys {
        before.insert(k, (sluice::bench::cpu_seconds(pid(&p, k)), p.metric(k, &consumed(s)).await));
    }
    let two = sluice::generate::messages(600, 52);
    for (code, _) in send_phase(p.mllp_port, &two, 4).await {
        assert_eq!(code, "AA");
    }
    all.extend(two);
    p.wait_routed(&hl7_event_ids(&all), Duration::from_secs(120))
        .await
        .assert_exactly_once(&hl7_event_ids(&all));
    for (k, s) in keys {
        let (cpu, n) = before[k];
        let records = p.metric(k, &consumed(s)).await - n;
        assert!(records > 0.0, "{k} consumed nothing: the second instance carries no traffic");
        println!(
            "scale-out: {k}: {records} records, {:.0} us CPU per record (one instance: {:.0})",
            (sluice::bench::cpu_seconds(pid(&p, k)) - cpu) / records * 1e6,
            per_record_one[s]
        );
    }
    assert!(p.exited().is_empty(), "a stage process exited");
}
