//! The matcher at scale: decision latency (p50, p99) and memory at 10,000, 100,000 and
//! 1,000,000 patients, and start-up (state records decoded from Avro and loaded) at each size.
//!
//! `cargo bench -p sluice-matcher --bench scale` runs every size, each in a process of its own so
//! that resident memory is the index's; `-- 100000` runs one size. Synthetic people: surnames and
//! given names built from syllables (tens of thousands of distinct surnames, as in a real
//! population), birth dates over 90 years, 1.4 records per person at four sites, NHS numbers on
//! 60% of records. The index is built through the same `observe` a message goes through.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use sluice_matcher::profile::Name;
use sluice_matcher::{Index, Key, Profile, Weights, text};
use sluice_model::{IdentityState, wire};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SYL: &[&str] = &[
    "AB", "AL", "AN", "AR", "BA", "BE", "BRO", "CA", "CHA", "CO", "DA", "DE", "DON", "EL", "ER", "FA", "FI", "GA", "GER", "HA", "HE",
    "HIL", "IN", "JA", "KA", "KE", "LA", "LE", "LIN", "MA", "ME", "MOR", "NA", "NE", "NOR", "OL", "PA", "PE", "RA", "RE", "RO", "SA", "SE",
    "SON", "TA", "TE", "TON", "VA", "WA", "WIL", "YA", "ZE",
];

fn word(rng: &mut Rng, parts: u64) -> String {
    (0..parts).map(|_| SYL[rng.below(SYL.len() as u64) as usize]).collect()
}

fn nhs(rng: &mut Rng) -> u64 {
    loop {
        let nine = 100_000_000 + rng.below(899_999_999);
        let digits: Vec<u32> = format!("{nine:09}").chars().filter_map(|c| c.to_digit(10)).collect();
        if let Some(c) = sluice_model::nhs::check_digit(&digits) {
            return nine * 10 + u64::from(c);
        }
    }
}

/// One person's message at one site: keys and profile.
fn message(person: u64, site: u64, seed: u64) -> (Vec<Key>, Profile) {
    let mut rng = Rng(person.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed ^ 0x1234_5678);
    rng.next();
    let parts = 2 + rng.below(2);
    let family = word(&mut rng, parts);
    let given = word(&mut rng, 2);
    let dob = 1930_0000 + rng.below(90) as u32 * 10_000 + (1 + rng.below(12) as u32) * 100 + 1 + rng.below(28) as u32;
    let sex = if rng.below(2) == 0 { b'F' } else { b'M' };
    let postcode = format!(
        "LS{} {}{}{}",
        1 + rng.below(30),
        rng.below(10),
        char::from(b'A' + rng.below(26) as u8),
        char::from(b'A' + rng.below(26) as u8)
    );
    let line = format!("{} {} ROAD", 1 + rng.below(200), word(&mut rng, 2));
    let nhs_number = nhs(&mut rng);
    // which records carry the NHS number: 60%
    let mut site_rng = Rng(person ^ (site << 40) ^ 0xabcdef);
    site_rng.next();
    let mut keys = vec![Key {
        key: format!("mrn|S{site}|{person:08}"),
        kind: "mrn",
    }];
    let carries = site_rng.below(10) < 6;
    if carries {
        keys.insert(
            0,
            Key {
                key: format!("nhs|{nhs_number:010}"),
                kind: "nhs_number",
            },
        );
    }
    let profile = Profile {
        names: vec![Name {
            family,
            given,
            other: false,
        }],
        birth_dates: vec![dob],
        sex,
        postcodes: vec![text::postcode(&postcode)],
        addresses: vec![text::address_line(&line)],
        nhs: carries.then_some(nhs_number),
    };
    (keys, profile)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn run(patients: u64) {
    let weights = Arc::new(Weights::default_weights());
    let before = rss_bytes();
    let mut ix = Index::new(weights.clone());
    let started = Instant::now();
    let mut records = 0u64;
    for p in 0..patients {
        // 1-2 sites per person (1.4 on average)
        let sites = if p % 5 < 2 { 2 } else { 1 };
        for s in 0..sites {
            let (keys, profile) = message(p, (p + s) % 4, 0);
            let _ = ix.observe(&keys, &profile);
            records += 1;
        }
        if p % 1000 == 999 {
            ix.commit();
        }
    }
    ix.commit();
    let build = started.elapsed();
    let index_bytes = rss_bytes().saturating_sub(before);

    // decisions: a mix of new records at another site and repeat messages, each committed
    let mut rng = Rng(42);
    let mut lat = Vec::with_capacity(20_000);
    for i in 0..20_000u64 {
        let p = rng.below(patients);
        let site = if i % 2 == 0 { 4 + rng.below(4) } else { p % 4 };
        let (keys, profile) = message(p, site, 0);
        let t = Instant::now();
        let _ = ix.observe(&keys, &profile);
        ix.commit();
        lat.push(t.elapsed());
    }
    lat.sort();

    // start-up: every record as a stored state record (Avro, Confluent wire format), decoded
    // and loaded into a new index
    let set = sluice_model::schemas::SchemaSet::load().unwrap();
    let schema = set.get(sluice_model::schemas::RecordType::IdentityState);
    let encoded: Vec<Vec<u8>> = (0..ix.len() as u32)
        .map(|n| {
            let r = ix.record(n);
            wire::encode(
                schema,
                1,
                &IdentityState {
                    key: format!("record|{}", r.key),
                    record: Some(r),
                    input_topic: "clinical.normalised.v1".into(),
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    drop(ix);
    let t = Instant::now();
    // decoded on every core, as identifier-match does at start-up
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = encoded.len().div_ceil(threads).max(1);
    let states: Vec<IdentityState> = std::thread::scope(|s| {
        let parts: Vec<_> = encoded
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|v| {
                            let (_, body) = wire::split(v).unwrap();
                            wire::decode::<IdentityState>(schema, schema, body).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let decoded = t.elapsed();
    let mut loaded = Index::new(weights);
    loaded.load(states.into_iter().filter_map(|s| s.record));
    let startup = t.elapsed();
    println!(
        "{patients:>9} patients {records:>9} records | build {:>6.1} s | index {:>6.0} MB RSS | decision p50 {:>6.1} us p99 {:>6.1} us max {:>7.1} us | start-up {:>5.1} s ({:.1} s decode, {} MB of state records)",
        build.as_secs_f64(),
        index_bytes as f64 / 1e6,
        percentile(&lat, 0.50).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        lat.last().map(|d| d.as_secs_f64() * 1e6).unwrap_or(0.0),
        startup.as_secs_f64(),
        decoded.as_secs_f64(),
        bytes / 1_000_000
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if let [n] = sizes.as_slice() {
        run(*n);
        return;
    }
    // each size in a process of its own, so that resident memory is that index's
    let me = std::env::current_exe().unwrap();
    for n in [10_000u64, 100_000, 1_000_000] {
        let status = std::process::Command::new(&me).arg(n.to_string()).status().unwrap();
        assert!(status.success());
    }
}
