//! Trace export end to end: every service a process of its own, exporting over OTLP (normalise
//! and route over gRPC, the others over HTTP/protobuf) to a real OpenTelemetry collector process (Rotel, from `.tools`, installed by
//! `scripts/setup-tools.sh`), which prints every span it receives in full (the collector's
//! detailed debug output: resource, names, attributes, events, links, status).
//!
//! Asserts, for one message sent over MLLP: its trace runs ingest → normalise →
//! identifier-match → route, each hop's record span the child of the previous hop's span (the
//! parent named by the `traceparent` header of the record between them), each from its own
//! service, each linked to the committed batch (transaction) it was part of, with the Kafka
//! position it read. And across everything exported: not one name, NHS number, MRN, date of
//! birth, address or postcode of the test patients, in any span name, attribute, event, link or
//! resource, including a message ingest rejected.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sluice_model::topology::names;
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Rotel collector receiving OTLP/HTTP (and gRPC) on free ports, its output in a file.
struct Collector {
    _proc: Proc,
    http_port: u16,
    grpc_port: u16,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let (http_port, grpc_port) = (free_port(), free_port());
        let out = dir.path().join("spans.txt");
        let child = Command::new(tool("bin/rotel"))
            .arg("start")
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args([
                "--exporter",
                "blackhole",
                "--debug-log",
                "traces",
                "--debug-log-verbosity",
                "detailed",
            ])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.path().join("rotel.log"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(http_port, "otlp collector");
        Collector {
            _proc: Proc { child },
            http_port,
            grpc_port,
            out,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

/// One span as the collector printed it.
#[derive(Debug, Clone, Default)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: BTreeMap<String, String>,
    links: Vec<String>,
}

/// Parses the collector's detailed debug output: `ResourceSpans` blocks with the resource's
/// attributes, then `Span #n` blocks (`Trace ID`, `Parent ID`, `ID`, `Name`, `Attributes:`
/// lines `-> key: Type(value)`, `Links:` with their span ids).
fn parse(text: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut service = String::new();
    let mut section = "";
    for line in text.lines() {
        let t = line.trim();
        let field = |name: &str| {
            t.strip_prefix(name)
                .map(|r| r.trim_start().trim_start_matches(':').trim().to_owned())
        };
        if t.starts_with("ResourceSpans #") {
            section = "resource";
        } else if t.starts_with("Span #") {
            spans.push(Span {
                service: service.clone(),
                ..Default::default()
            });
            section = "span";
        } else if t == "Attributes:" {
            section = "attributes";
        } else if t == "Events:" {
            section = "events";
        } else if t == "Links:" {
            section = "links";
        } else if let (Some(s), Some(v)) = (spans.last_mut(), field("Trace ID")) {
            s.trace = v;
        } else if let (Some(s), Some(v)) = (spans.last_mut(), field("Parent ID")) {
            s.parent = v;
        } else if let (Some(s), Some(v)) = (spans.last_mut(), field("Name")) {
            s.name = v;
        } else if let (Some(s), Some(v)) = (spans.last_mut(), field("ID")) {
            s.id = v;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else { continue };
            // Str(x), Int(3), Bool(true): the value inside the parentheses
            let v = v.split_once('(').map_or(v, |(_, r)| r.strip_suffix(')').unwrap_or(r)).to_owned();
            match (section, spans.last_mut()) {
                ("resource", _) if k == "service.name" => service = v,
                ("attributes", Some(s)) => {
                    s.attributes.insert(k.to_owned(), v);
                }
                ("links", Some(s)) if k == "ID" => s.links.push(v),
                _ => {}
            }
        }
    }
    spans
}

fn adt(control_id: &str, pid: &str) -> Vec<u8> {
    [
        format!("MSH|^~\\&|TRACEAPP|TRACEFAC|SLUICE|SLUICE|20260301120000||ADT^A04^ADT_A01|{control_id}|P|2.5"),
        "EVN||20260301120000".into(),
        pid.to_owned(),
        "PV1|1|O".into(),
    ]
    .join("\r")
    .into_bytes()
}

/// The test patients: everything that identifies them, as it appears in their messages and as
/// normalise writes it (upper-cased names, ISO dates).
const PATIENT_DATA: [&str; 18] = [
    "Tracewell",
    "TRACEWELL",
    "Florence",
    "FLORENCE",
    "Spanbury",
    "SPANBURY",
    "Ignatius",
    "IGNATIUS",
    "9434765919",
    "9990000018",
    "TR1001",
    "TR2002",
    "TR3003",
    "19580214",
    "1958-02-14",
    "19911130",
    "1991-11-30",
    "LS6 2AA",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_message_is_one_trace_across_the_services_and_no_span_holds_patient_data() {
    let collector = Collector::start();
    let http = format!("http://127.0.0.1:{}", collector.http_port);
    let grpc = format!("http://127.0.0.1:{}", collector.grpc_port);
    // both transports in one trace: normalise and route export over gRPC, the rest over HTTP
    let mut env: Vec<(&'static str, &str, &str)> = Vec::new();
    for s in SERVICES {
        if matches!(s, "normalise" | "route") {
            env.push((s, "SLUICE_RUNTIME__TRACING__OTLP_ENDPOINT", grpc.as_str()));
            env.push((s, "SLUICE_RUNTIME__TRACING__OTLP_PROTOCOL", "grpc"));
        } else {
            env.push((s, "SLUICE_RUNTIME__TRACING__OTLP_ENDPOINT", http.as_str()));
        }
    }
    let p = Pipeline::start_with_env(&env).await;

    let first = adt(
        "TRC00001",
        "PID|1||TR1001^^^TRACEFAC^MR~9434765919^^^NHS^NH||Tracewell^Florence||19580214|F|||4 Park Road^^Leeds^^LS6 2AA^GBR^H",
    );
    let second = adt(
        "TRC00002",
        "PID|1||TR2002^^^TRACEFAC^MR~9990000018^^^NHS^NH||Spanbury^Ignatius||19911130|M",
    );
    // no MSH-9: ingest rejects it (AR) and keeps it as a dead letter; its span must be clean too
    let rejected = String::from_utf8(adt("TRC00003", "PID|1||TR3003^^^TRACEFAC^MR||Tracewell^Florence||19580214|F"))
        .unwrap()
        .replace("ADT^A04^ADT_A01", "")
        .into_bytes();
    let acks = send_all(p.mllp_port, &[first.clone(), second.clone(), rejected]).await;
    let codes: Vec<&str> = acks.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, ["AA", "AA", "AR"]);
    let expected = hl7_event_ids(&[first.clone(), second.clone()]);
    p.wait_routed(&expected, Duration::from_secs(90))
        .await
        .assert_exactly_once(&expected);

    // where ingest wrote the first message, and the traceparent it wrote with it
    let raw = p
        .read_records(names::RAW)
        .into_iter()
        .find(|r| {
            let store_payload = &r.value;
            // the raw record holds the message bytes as sent
            store_payload.windows(b"TRC00001".len()).any(|w| w == b"TRC00001")
        })
        .expect("the first message in the raw topic");
    let raw_tp = raw.headers.get("traceparent").cloned().expect("a traceparent header");

    // wait until the collector has the whole chain (spans are exported in batches every 5 s)
    let deadline = Instant::now() + Duration::from_secs(90);
    let (spans, chain) = loop {
        let spans = parse(&collector.output());
        if let Some(chain) = chain_of(&spans, raw.partition, raw.offset) {
            break (spans, chain);
        }
        assert!(
            Instant::now() < deadline,
            "the collector never had the message's whole trace; it had {} spans: {:#?}",
            spans.len(),
            spans.iter().map(|s| (&s.service, &s.name, &s.attributes)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    let [ingest, normalise, matching, route] = &chain;
    // one trace, each hop the child of the one before, each from its own service
    assert!(ingest.parent.is_empty(), "the message starts the trace: {ingest:?}");
    assert_eq!(
        raw_tp,
        format!("00-{}-{}-01", ingest.trace, ingest.id),
        "the header names ingest's span"
    );
    for (parent, child, service) in [
        (ingest, normalise, "sluice-normalise"),
        (normalise, matching, "sluice-identifier-match"),
        (matching, route, "sluice-route"),
    ] {
        assert_eq!(child.trace, ingest.trace, "{} left the trace", child.service);
        assert_eq!(
            child.parent, parent.id,
            "{}'s span is not the child of {}'s",
            child.service, parent.service
        );
        assert_eq!(child.service, service);
        assert_eq!(child.name, "stage.record");
        assert_eq!(child.attributes["outcome"], "emit");
        // linked to a committed batch of its own service
        let batch = spans
            .iter()
            .find(|b| b.name == "stage.batch" && child.links.contains(&b.id))
            .unwrap_or_else(|| panic!("{service}'s record span links to no exported batch: {child:?}"));
        assert_eq!(batch.service, service);
        assert_eq!(batch.attributes["result"], "committed");
        assert_ne!(batch.trace, child.trace, "a batch is a trace of its own");
    }
    assert_eq!(ingest.service, "sluice-ingest");
    assert_eq!(ingest.name, "ingest.message");
    assert_eq!(ingest.attributes["result"], "accepted");
    assert_eq!(ingest.attributes["hl7.sending_application"], "TRACEAPP");
    assert_eq!(normalise.attributes["messaging.destination.name"], names::RAW);
    assert_eq!(matching.attributes["messaging.destination.name"], names::NORMALISED);
    assert_eq!(route.attributes["messaging.destination.name"], names::MATCHED);
    // the rejected message has its span too, with the reason code
    assert!(
        spans
            .iter()
            .any(|s| s.name == "ingest.message" && s.attributes.get("result").map(String::as_str) == Some("rejected")),
        "no span for the rejected message"
    );

    // nothing of the patients anywhere in what was exported
    let everything = collector.output();
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert!(services.len() >= 4, "{services:?}");
    for secret in PATIENT_DATA {
        assert!(
            !everything.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()),
            "the exported spans hold patient data ({secret})"
        );
    }
    println!(
        "tracing: {} spans from {} services; one trace ingest -> normalise -> identifier-match -> route:",
        spans.len(),
        services.len()
    );
    for s in &chain {
        println!("  {} {} span {} parent {:?} {:?}", s.service, s.name, s.id, s.parent, s.attributes);
    }
}

/// The four spans of the message ingest wrote at (partition, offset) of the raw topic, once the
/// collector has all of them: ingest's, then each stage's record span whose parent is the one
/// before.
fn chain_of(spans: &[Span], partition: i32, offset: i64) -> Option<[Span; 4]> {
    let at = |s: &Span| {
        s.attributes.get("messaging.destination.partition.id") == Some(&partition.to_string())
            && s.attributes.get("messaging.kafka.offset") == Some(&offset.to_string())
    };
    let ingest = spans.iter().find(|s| {
        s.name == "ingest.message" && s.attributes.get("messaging.destination.name").map(String::as_str) == Some(names::RAW) && at(s)
    })?;
    let child = |parent: &Span| spans.iter().find(|s| s.name == "stage.record" && s.parent == parent.id).cloned();
    let normalise = child(ingest)?;
    let matching = child(&normalise)?;
    let route = child(&matching)?;
    Some([ingest.clone(), normalise, matching, route])
}
