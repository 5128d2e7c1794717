//! Parses the same HL7 v2 messages with the Sluice parser, the Rust HL7 v2 parsers on
//! crates.io (`hl7-parser`, `rust-hl7`, `hl7v2`, `hl7`), and a plain `memchr` scan of the bytes
//! for segment and field separators as the floor, then prints MB/s and the ratios.
//!
//! The message set is every corpus message that every parser accepts, with segment separators
//! normalised to CR (some peers accept nothing else). Sluice is measured twice: `parse` (what
//! it does per message in ingest: segments, header, problems; values decoded only when asked),
//! `parse + every value` (then every field, repetition, component and subcomponent through the
//! single-pass `for_each_value`), and the same walk through the nested iterators, so the lazy
//! design is not mistaken for doing less work than the peers' full parse.
//!
//! Run: `cargo bench --manifest-path benches/parsers/Cargo.toml` (corpus from `SLUICE_CORPUS`
//! or `../shared/corpus`).

use criterion::{Criterion, Throughput, black_box};
use std::path::PathBuf;

fn corpus() -> Vec<String> {
    let Some(files) = sluice_hl7::corpus::hl7v2_files() else {
        std::process::exit(0);
    };
    let mut out = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else { continue };
        for m in sluice_hl7::split_messages(&bytes) {
            let Ok(text) = std::str::from_utf8(m) else { continue };
            let cr: String = text.replace("\r\n", "\r").replace('\n', "\r");
            let cr = cr.trim().to_owned();
            if sluice_hl7::Message::parse(cr.as_bytes()).is_acceptable() {
                out.push(cr);
            }
        }
    }
    out
}

fn sluice_parse(m: &str) -> usize {
    sluice_hl7::Message::parse(m.as_bytes()).segment_count()
}

fn sluice_every_value(m: &str) -> usize {
    let msg = sluice_hl7::Message::parse(m.as_bytes());
    let mut n = 0;
    msg.for_each_value(|_, _, v| n += v.len());
    n
}

fn sluice_iterators(m: &str) -> usize {
    let msg = sluice_hl7::Message::parse(m.as_bytes());
    let mut n = 0;
    for seg in msg.segments() {
        for (_, field) in seg.fields() {
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        n += sub.len();
                    }
                }
            }
        }
    }
    n
}

fn memchr_floor(m: &str) -> usize {
    memchr::memchr2_iter(b'\r', b'|', m.as_bytes()).count()
}

fn hl7_parser(m: &str) -> usize {
    hl7_parser::Message::parse(m).map(|x| x.segments().count()).unwrap_or(0)
}

fn rust_hl7(m: &str) -> usize {
    rusthl7::message::Message::try_from(m).map(|x| x.segments.len()).unwrap_or(0)
}

fn hl7v2(m: &str) -> usize {
    hl7v2::parse(m.as_bytes()).map(|x| x.segments.len()).unwrap_or(0)
}

fn hl7_crate(m: &str) -> usize {
    hl7::v2::parse(m).map(|x| x.segments().count()).unwrap_or(0)
}

type Parser = (&'static str, fn(&str) -> usize);

const PARSERS: [Parser; 8] = [
    ("memchr-floor", memchr_floor),
    ("sluice-parse", sluice_parse),
    ("sluice-parse-every-value", sluice_every_value),
    ("sluice-parse-iterate-levels", sluice_iterators),
    ("hl7-parser-0.3", hl7_parser),
    ("rust-hl7-0.5", rust_hl7),
    ("hl7v2-1.5", hl7v2),
    ("hl7-0.1", hl7_crate),
];

fn main() {
    let all = corpus();
    // only messages every peer accepts, so every parser does the same work
    let set: Vec<String> = all.iter().filter(|m| PARSERS.iter().all(|(_, p)| p(m) > 0)).cloned().collect();
    let bytes: usize = set.iter().map(String::len).sum();
    println!(
        "message set: {} of {} corpus messages (accepted by every parser), {} bytes",
        set.len(),
        all.len(),
        bytes
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(bytes as u64));
    for (name, p) in PARSERS {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0;
                for m in &set {
                    n += p(black_box(m));
                }
                black_box(n)
            })
        });
    }
    g.finish();
    c.final_summary();

    // ratios from criterion's own estimates (mean time per iteration over the whole set)
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())).join("criterion/parse");
    let mean = |name: &str| -> Option<f64> {
        let file = dir.join(name).join("new/estimates.json");
        let text = std::fs::read_to_string(file).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    let times: Vec<(&str, Option<f64>)> = PARSERS.iter().map(|(n, _)| (*n, mean(n))).collect();
    let mbps = |ns: f64| bytes as f64 / (ns / 1e9) / 1e6;
    let floor = times[0].1;
    let fastest_peer = times[4..].iter().filter_map(|(_, t)| *t).fold(f64::INFINITY, f64::min);
    println!(
        "\n{:<28} {:>10} {:>16} {:>18}",
        "parser", "MB/s", "x fastest peer", "x slower than floor"
    );
    for (name, t) in &times {
        match t {
            Some(t) => println!(
                "{name:<28} {:>10.1} {:>16.2} {:>18.2}",
                mbps(*t),
                fastest_peer / t,
                floor.map_or(f64::NAN, |f| t / f)
            ),
            None => println!("{name:<28} (no estimate found under {})", dir.display()),
        }
    }
}
