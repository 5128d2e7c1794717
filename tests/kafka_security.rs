//! Kafka security that connects, on the real three-node cluster with its authorizer on:
//! - SASL_SSL with SCRAM-SHA-512, and mutual TLS with client certificates (made at test time by
//!   `scripts/kafka/cluster.py`): every service connects as its own user (`User:<service>`) and
//!   the pipeline carries HL7 v2 over MLLP and FHIR over HTTP end to end exactly once, with a
//!   malformed message dead-lettered and indexed;
//! - a wrong SCRAM password, and a client certificate from a CA the brokers do not trust, are
//!   refused: every service logs the refusal as an ERROR naming the cause and its `/readyz`
//!   stays not ready.

#![allow(clippy::unwrap_used)]

mod common;

use common::kafka::service_env;
use common::{BrokerKind, Pipeline, SERVICES, Security, send_all};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const REFUSED_LOG: &str = "kafka refused this client's credentials or certificate";

async fn end_to_end(p: &Pipeline) {
    let good = sluice::generate::messages(40, 7);
    let bad = sluice::generate::malformed(2);
    let mut all = good.clone();
    all.extend(bad.iter().cloned());
    let acks = send_all(p.mllp_port, &all).await;
    for (i, (code, _)) in acks.iter().enumerate() {
        assert_eq!(code, if i < good.len() { "AA" } else { "AR" }, "message {i}");
    }
    let mut expected: HashSet<String> = common::hl7_event_ids(&good);
    let bundle = sluice::generate::fhir_bundles(1, 8).remove(0);
    let client = common::http_with(common::SENDER_TOKEN);
    let url = format!("http://127.0.0.1:{}/fhir", p.fhir_port);
    assert_eq!(sluice::send::post_fhir(&client, &url, bundle.clone()).await.unwrap().0, 202);
    expected.extend(common::fhir_event_ids(&bundle));
    let routed = p.wait_routed(&expected, Duration::from_secs(120)).await;
    routed.assert_exactly_once(&expected);
    // dead-letter reads over the secured connection too
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = p.dead_letters("").await;
        if list["count"].as_u64() == Some(bad.len() as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "dead letters not indexed: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Starts every service once more with `settings` (a refused identity) and checks each logs
/// the refusal as an ERROR and answers `/readyz` with 503; returns the first refusal logged.
async fn refused(p: &mut Pipeline, case: &'static str, settings: &common::kafka::Settings) -> String {
    let keys: [(&'static str, &'static str); 5] = match case {
        "wrong_password" => [
            ("ingest-wrong-password", "ingest"),
            ("normalise-wrong-password", "normalise"),
            ("identifier-match-wrong-password", "identifier-match"),
            ("route-wrong-password", "route"),
            ("dead-letter-wrong-password", "dead-letter"),
        ],
        _ => [
            ("ingest-untrusted-cert", "ingest"),
            ("normalise-untrusted-cert", "normalise"),
            ("identifier-match-untrusted-cert", "identifier-match"),
            ("route-untrusted-cert", "route"),
            ("dead-letter-untrusted-cert", "dead-letter"),
        ],
    };
    let env = service_env(settings);
    for (key, service) in keys {
        p.start_instance(key, service, &env);
    }
    let mut first = String::new();
    for (key, _) in keys {
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = loop {
            if let Some(l) = p.log_of(key).lines().find(|l| l.contains(REFUSED_LOG)) {
                break l.to_owned();
            }
            assert!(Instant::now() < deadline, "{key} did not log the refusal:\n{}", p.log_of(key));
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(line.contains("ERROR"), "a refused identity is an ERROR: {line}");
        let url = format!("http://127.0.0.1:{}/readyz", p.http_port(key));
        let status = reqwest::get(&url).await.unwrap().status().as_u16();
        assert_eq!(status, 503, "{key} says ready with a refused identity");
        if first.is_empty() {
            first = line;
        }
    }
    // still refused, still not ready, a few seconds later (nothing flips it)
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (key, _) in keys {
        let url = format!("http://127.0.0.1:{}/readyz", p.http_port(key));
        assert_eq!(reqwest::get(&url).await.unwrap().status().as_u16(), 503, "{key}");
        p.kill(key);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sasl_ssl_with_scram_sha_512_carries_every_service_and_a_wrong_password_is_refused() {
    let mut p = Pipeline::start_on(BrokerKind::Kafka(Security::SaslSsl), &[]).await;
    let cluster = p.broker.kafka().unwrap();
    for s in SERVICES {
        assert_eq!(cluster.user(s)["sasl.username"], s, "each service is its own user");
    }
    let wrong = cluster.negative("wrong_password");
    end_to_end(&p).await;
    let line = refused(&mut p, "wrong_password", &wrong).await;
    assert!(line.contains("SASL authentication error"), "{line}");
    println!("sasl_ssl refusal: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_carries_every_service_and_an_untrusted_certificate_is_refused() {
    let mut p = Pipeline::start_on(BrokerKind::Kafka(Security::Mtls), &[]).await;
    let cluster = p.broker.kafka().unwrap();
    for s in SERVICES {
        assert!(cluster.user(s)["ssl.certificate.location"].ends_with(&format!("client-{s}.pem")));
    }
    let untrusted = cluster.negative("untrusted_cert");
    end_to_end(&p).await;
    let line = refused(&mut p, "untrusted_cert", &untrusted).await;
    assert!(line.contains("certificate"), "{line}");
    println!("mtls refusal: {line}");
}

/// A client with one service's credentials, straight to the cluster.
fn as_service(p: &mut Pipeline, service: &str) -> rdkafka::ClientConfig {
    let cluster = p.broker.kafka().unwrap();
    let mut c = cluster.client_config(service);
    c.set("group.id", format!("sluice-{service}-probe"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("message.timeout.ms", "10000");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_service_may_do_its_job_and_is_refused_everything_else() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut p = Pipeline::start_on(BrokerKind::Kafka(Security::SaslSsl), &[]).await;
    // least privilege is what the pipeline runs with: it still carries everything
    end_to_end(&p).await;
    // route cannot write the identity index
    let route: FutureProducer = as_service(&mut p, "route").create().unwrap();
    let refused = route
        .send(
            FutureRecord::to(sluice_model::topology::names::LINKS).key("k").payload("v"),
            Duration::from_secs(15),
        )
        .await
        .err()
        .map(|(e, _)| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("authoriz") || refused.contains("Authoriz"),
        "route wrote identity.links.v1: {refused:?}"
    );
    // ingest cannot read a routed topic
    let ingest: BaseConsumer = as_service(&mut p, "ingest").create().unwrap();
    ingest.subscribe(&["routed.adt.v1"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut error = None;
    while error.is_none() && Instant::now() < deadline {
        if let Some(Err(e)) = ingest.poll(Duration::from_millis(500)) {
            error = Some(e.to_string());
        }
    }
    let error = error.unwrap_or_default();
    assert!(error.contains("uthoriz"), "ingest read routed.adt.v1: {error:?}");
    // normalise cannot take route's transactional id
    let mut c = as_service(&mut p, "normalise");
    c.set("transactional.id", "sluice-route-stolen");
    let thief: rdkafka::producer::BaseProducer = c.create().unwrap();
    let init = rdkafka::producer::Producer::init_transactions(&thief, Duration::from_secs(15));
    assert!(
        init.as_ref().is_err_and(|e| e.to_string().contains("uthoriz")),
        "normalise used route's transactional id: {init:?}"
    );
    println!("refusals: route -> identity.links.v1: {refused}; ingest <- routed.adt.v1: {error}");
}

/// The worked example of `docs/secured-kafka.md`, run as it stands on a SASL_SSL/SCRAM cluster
/// with the standard authorizer and no ACLs yet: it creates the topics as the admin, grants
/// each service its ACLs, starts the five services each as its own user, and sends a message
/// that must be accepted; the event must then reach its routed topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secured_kafka_example_in_the_docs_runs() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let doc = std::fs::read_to_string(common::repo().join("docs/secured-kafka.md")).unwrap();
    let after = doc.split("<!-- example: secured-kafka -->").nth(1).expect("the example marker");
    let script = after.split("```sh\n").nth(1).unwrap().split("\n```").next().unwrap();
    let cluster = tokio::task::spawn_blocking(|| common::KafkaCluster::start(Security::SaslSsl))
        .await
        .unwrap();
    let rport = common::free_port();
    let _registry = common::Proc {
        child: std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["registry", "--addr", &format!("127.0.0.1:{rport}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    common::wait_port(rport, "registry");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.sh"), script).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sluice")).parent().unwrap().to_owned();
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-euo", "pipefail", "example.sh"])
        .current_dir(dir.path())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .env("KAFKA_BOOTSTRAP", &cluster.bootstrap)
        .env("KAFKA_CA", cluster.prepared["security"]["ca"].as_str().unwrap())
        .env("KAFKA_ADMIN_CONFIG", cluster.prepared["admin_properties"].as_str().unwrap())
        .env("KAFKA_ADMIN_PASSWORD", &cluster.user("admin")["sasl.password"])
        .env("SCHEMA_REGISTRY", format!("http://127.0.0.1:{rport}"))
        .env("KAFKA_HOME", common::tool("kafka"));
    for s in SERVICES {
        cmd.env(
            format!("PASSWORD_{}", s.to_uppercase().replace('-', "_")),
            &cluster.user(s)["sasl.password"],
        );
    }
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let logs: String = SERVICES
        .iter()
        .map(|s| std::fs::read_to_string(dir.path().join(format!("{s}.log"))).unwrap_or_default())
        .collect();
    assert!(out.status.success(), "the example failed:\n{text}\n--- service logs ---\n{logs}");
    println!("{text}");
    // the example's services are gone (its EXIT trap); the event they routed stays
    let reader: BaseConsumer = cluster
        .client_config("admin")
        .set("group.id", "docs-example-reader")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["routed.adt.v1"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut routed = 0;
    while routed == 0 && Instant::now() < deadline {
        if let Some(Ok(_)) = reader.poll(Duration::from_millis(500)) {
            routed += 1;
        }
    }
    assert_eq!(routed, 1, "the example's message never reached routed.adt.v1");
}
