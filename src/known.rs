//! Known patients for benchmarks and scale tests: the identity records identifier-match would
//! have written after seeing `n` synthetic patients (two in five seen at two sites), produced
//! to `identity.records.v1` so that the stage starts with them, as it would after a restart.
//! Names are built from syllables and NHS numbers carry valid check digits, so blocking and
//! comparison do the work they do on real records; nobody here is a real person.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_matcher::profile::Name;
use sluice_matcher::{Index, Key, Profile, Weights, text};
use sluice_model::IdentityState;
use sluice_model::topology::names;
use sluice_registry::SchemaStore;
use sluice_runtime::config::KafkaConfig;
use std::sync::Arc;
use std::time::Duration;

/// Patient `p` as site `site` records them.
pub fn profile(p: u64, site: u64) -> (Vec<Key>, Profile) {
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

/// The index after observing `patients` patients, two in five at two sites.
pub fn index(patients: u64) -> Index {
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
    // as after a restart: the records are already written, nothing is waiting to be
    let _ = ix.take_dirty();
    ix
}

/// Produces the index's records to `identity.records.v1` (the store must have the topic's
/// schema registered) and commits identifier-match's group past the input they name, so the
/// stage trusts them at start-up. Returns how many records it wrote.
pub fn produce(kafka: &KafkaConfig, store: &SchemaStore, ix: &Index) -> anyhow::Result<usize> {
    let producer: BaseProducer = sluice_runtime::kafka::base(kafka, "sluice-known-patients")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("compression.type", &kafka.compression)
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let records = ix.len();
    for n in 0..u32::try_from(records)? {
        let r = ix.record(n);
        let state = IdentityState {
            key: format!("record|{}", r.key),
            record: Some(r),
            input_topic: names::NORMALISED.into(),
            input_partition: 0,
            input_offset: 0,
            ..Default::default()
        };
        let value = store.encode(names::RECORDS, &state)?;
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
    producer.flush(Duration::from_secs(300))?;
    let consumer: BaseConsumer = sluice_runtime::kafka::base(kafka, "sluice-known-patients")
        .set("group.id", sluice_runtime::group_id(sluice_identifier_match::SERVICE))
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(names::NORMALISED, 0, Offset::Offset(1))?;
    consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
    Ok(records)
}
