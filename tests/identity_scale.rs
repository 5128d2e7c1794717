//! Start-up of identifier-match at 1,000,000 patients, from the compacted topic on the Apache
//! Kafka tier: 1.4 million state records (as the scale bench builds them) are produced to
//! `identity.records.v1`, then `sluice_identifier_match::load` reads, checks and decodes them
//! and rebuilds the index, timed. Not part of the suite (minutes of producing); run with
//! `cargo test --release --test identity_scale -- --ignored --nocapture` (`SLUICE_SCALE_PATIENTS`
//! for another size).

#![allow(clippy::unwrap_used)]

mod common;

use sluice_model::schemas::RecordType;
use sluice_model::topology::names;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn start_up_at_a_million_patients_from_the_compacted_topic() {
    let patients: u64 = std::env::var("SLUICE_SCALE_PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let cluster = tokio::task::spawn_blocking(|| common::KafkaCluster::start(common::Security::Plaintext))
        .await
        .unwrap();
    let admin = cluster.kafka_config("admin");
    let rport = common::free_port();
    let _registry = common::Proc {
        child: Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["registry", "--addr", &format!("127.0.0.1:{rport}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    common::wait_port(rport, "registry");
    let deadline = Instant::now() + Duration::from_secs(90);
    while sluice::topology::apply(&admin, 3).await.is_err() {
        assert!(Instant::now() < deadline, "topics could not be created");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut runtime = sluice_runtime::config::RuntimeConfig {
        kafka: admin.clone(),
        schema_registry_url: format!("http://127.0.0.1:{rport}"),
        ..Default::default()
    };
    runtime.kafka.max_record_bytes = 1_000_000;
    let store = sluice_runtime::stage::schema_store(&runtime).unwrap();
    store.register(names::RECORDS, RecordType::IdentityState).await.unwrap();

    // the records, as identifier-match would have written them
    let ix = sluice::known::index(patients);
    let records = ix.len();
    let produced = Instant::now();
    assert_eq!(sluice::known::produce(&admin, &store, &ix).unwrap(), records);
    drop(ix);
    println!("{records} records produced in {:.1} s", produced.elapsed().as_secs_f64());

    let cfg = sluice_identifier_match::Config {
        runtime,
        ..Default::default()
    };
    let handle = tokio::runtime::Handle::current();
    let started = Instant::now();
    let resolver = tokio::task::spawn_blocking(move || sluice_identifier_match::load(&cfg, store, &handle).unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resolver.index.len(), records);
    println!(
        "start-up at {patients} patients ({records} records) from {}: {:.1} s",
        names::RECORDS,
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(60), "start-up took {took:?}");
}
