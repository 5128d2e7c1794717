//! Start-up of identifier-match at 1,000,000 patients, from the compacted topic on the Apache
//! Kafka tier: 1.4 million state records (as the scale bench builds them) are produced to
//! `identity.records.v1`, then `sluice_identifier_match::load` reads, checks and decodes them
//! and rebuilds the index, timed. Not part of the suite (minutes of producing); run with
//! `cargo test --release --test identity_scale -- --ignored --nocapture` (`SLUICE_SCALE_PATIENTS`
//! for another size).

#![allow(clippy::unwrap_used)]

mod common;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_matcher::profile::Name;
use sluice_matcher::{Index, Key, Profile, Weights, text};
use sluice_model::IdentityState;
use sluice_model::schemas::RecordType;
use sluice_model::topology::names;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn profile(p: u64, site: u64) -> (Vec<Key>, Profile) {
    let h = |salt: u64| (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 20;
    let syl = [
        "AB", "AL", "AN", "BRO", "CHA", "DON", "EL", "GER", "HIL", "KE", "LIN", "MOR", "NOR", "PE", "RO", "SON", "TON", "WIL",
    ];
    let w = |salt: u64, n: u64| (0..n).map(|i| syl[(h(salt + i) % syl.len() as u64) as usize]).collect::<String>();
    // a valid NHS number, or none when the nine digits have no check digit (1 in 11)
    let nine = 100_000_000 + h(7) % 899_999_999;
    let d: Vec<u32> = format!("{nine:09}").chars().filter_map(|c| c.to_digit(10)).collect();
    let nhs = sluice_model::nhs::check_digit(&d).map_or(0, |c| nine * 10 + u64::from(c));
    let carries = nhs != 0 && (h(site + 11) % 10) < 6;
    let mut keys = vec![Key {
        key: format!("mrn|S{site}|{p:08}"),
        kind: "mrn",
    }];
    if carries {
        keys.push(Key {
            key: format!("nhs|{nhs:010}"),
            kind: "nhs_number",
        });
    }
    let profile = Profile {
        names: vec![Name {
            family: w(1, 3),
            given: w(2, 2),
            other: false,
        }],
        birth_dates: vec![1930_0000 + (h(3) % 90) as u32 * 10_000 + (1 + (h(4) % 12) as u32) * 100 + 1 + (h(5) % 28) as u32],
        sex: if h(6) % 2 == 0 { b'F' } else { b'M' },
        postcodes: vec![text::postcode(&format!("LS{} {}AB", 1 + h(8) % 30, h(9) % 10))],
        addresses: vec![text::address_line(&format!("{} {} ROAD", 1 + h(10) % 200, w(12, 2)))],
        nhs: carries.then_some(nhs),
    };
    (keys, profile)
}

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
    let mut ix = Index::new(Arc::new(Weights::default_weights()));
    for p in 0..patients {
        for s in 0..if p % 5 < 2 { 2 } else { 1 } {
            let (keys, profile) = profile(p, (p + s) % 4);
            let _ = ix.observe(&keys, &profile);
        }
        if p % 1000 == 999 {
            ix.commit();
        }
    }
    ix.commit();
    let records = ix.len();
    let produced = Instant::now();
    let producer: BaseProducer = sluice_runtime::kafka::base(&admin, "scale")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for n in 0..records as u32 {
        let r = ix.record(n);
        let state = IdentityState {
            key: format!("record|{}", r.key),
            record: Some(r),
            input_topic: names::NORMALISED.into(),
            input_partition: 0,
            input_offset: 0,
            ..Default::default()
        };
        let value = store.encode(names::RECORDS, &state).unwrap();
        let mut rec = BaseRecord::to(names::RECORDS).key(state.key.as_bytes()).payload(&value);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    drop(ix);
    // the stage's group has committed past the input the records came from
    let consumer: BaseConsumer = sluice_runtime::kafka::base(&admin, "scale")
        .set("group.id", sluice_runtime::group_id(sluice_identifier_match::SERVICE))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(names::NORMALISED, 0, Offset::Offset(1)).unwrap();
    consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync).unwrap();
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
