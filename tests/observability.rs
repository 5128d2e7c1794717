//! What an SRE looks at, checked against the real thing:
//! - the alerting rules are valid and fire when they should (`promtool check rules` and
//!   promtool's rule unit tests, on the chart's own rule file);
//! - every PromQL expression of the chart's Grafana dashboards (panels and template variables) is
//!   valid PromQL by promtool;
//! - a real Prometheus scrapes an end-to-end run whose traffic gives every panel something to
//!   show (two feeds and FHIR, a message ingest rejects, one to the default route, a merge of
//!   two records, two identity review items of which one is decided, a poison record
//!   dead-lettered, replayed and dead-lettered again), and every panel's query, and every
//!   variable's, returns data: a panel that shows nothing is a defect. Every alert expression
//!   runs against the same Prometheus without error; once caught up every stage's lag is 0 and
//!   no lag, stall or quiet-feed alert is pending.

#![allow(clippy::unwrap_used)]

mod common;

use common::prometheus::Prometheus;
use common::*;
use sluice_model::topology::names;
use std::process::Command;
use std::time::{Duration, Instant};

fn promtool(args: &[&str]) {
    run_ok(Command::new(tool("bin/promtool")).args(args).current_dir(repo()));
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules", "helm/sluice/files/prometheus-rules.yml"]);
}

#[test]
fn alert_rules_fire_on_outages_and_dead_letters_and_stay_quiet_otherwise() {
    promtool(&["test", "rules", "helm/sluice/files/prometheus-rules.test.yml"]);
}

/// One query of a dashboard: where it is (dashboard, panel or variable) and its PromQL with
/// Grafana's variables filled in as an SRE opening the dashboard would have them (every feed,
/// a 5 minute rate window, a 1 hour range).
struct Query {
    place: String,
    promql: String,
}

fn dashboard_queries() -> Vec<Query> {
    let dir = repo().join("helm/sluice/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 4, "overview, interfaces, identity, dead letters: {files:?}");
    let mut out = Vec::new();
    for f in files {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let title = d["title"].as_str().unwrap().to_owned();
        let vars: Vec<String> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        let fill = |e: &str| {
            let mut e = e.replace("$__rate_interval", "5m").replace("$__range", "1h");
            for v in &vars {
                e = e.replace(&format!("${v}"), ".*");
            }
            assert!(!e.contains('$'), "{title}: an unknown variable in {e}");
            e
        };
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                // label_values(metric, label): the values Grafana offers are the label's values
                let q = v["query"]["query"].as_str().unwrap();
                let inner = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).unwrap();
                let (metric, label) = inner.split_once(", ").unwrap();
                out.push(Query {
                    place: format!("{title} / variable {}", v["name"]),
                    promql: format!("count by ({label}) ({metric})"),
                });
            }
        }
        for p in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title} / {} has no query", p["title"]);
            for t in targets {
                out.push(Query {
                    place: format!("{title} / {} / {}", p["title"], t["refId"]),
                    promql: fill(t["expr"].as_str().unwrap()),
                });
            }
        }
    }
    out
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses rule files: one recording rule per query
    let queries = dashboard_queries();
    let rules = serde_yaml::to_string(&serde_json::json!({"groups": [{
        "name": "dashboards",
        "rules": queries.iter().enumerate().map(|(i, q)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": q.promql})).collect::<Vec<_>>(),
    }]}))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboards.rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = run_ok(Command::new(tool("bin/promtool")).arg("check").arg("rules").arg(&file));
    assert!(out.contains(&format!("{} rules found", queries.len())), "{out}");
}

fn hl7(lines: &[String]) -> Vec<u8> {
    lines.join("\r").into_bytes()
}

fn adt(app: &str, site: &str, control_id: &str, pid: &str) -> Vec<u8> {
    hl7(&[
        format!("MSH|^~\\&|{app}|{site}|SLUICE|SLUICE|20260301120000||ADT^A04^ADT_A01|{control_id}|P|2.5"),
        "EVN||20260301120000".into(),
        pid.into(),
        "PV1|1|O".into(),
    ])
}

/// The identity review API's open items (viewer).
async fn review_items(p: &Pipeline) -> Vec<serde_json::Value> {
    let v: serde_json::Value = http_with(VIEWER_TOKEN)
        .get(format!("http://127.0.0.1:{}/api/review/items", p.review_port))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().unwrap().clone()
}

/// Waits until the dead-letter API lists a letter for which `pick` holds.
async fn dead_letter(p: &Pipeline, query: &str, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = p.dead_letters(query).await;
        if let Some(found) = l["items"].as_array().unwrap().iter().find(|i| pick(i)) {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "no such dead letter ({query}): {l}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_shows_data_from_an_end_to_end_run() {
    let p = Pipeline::start_with_env(&[("ingest", "SLUICE_INTERFACES__EXPECTED_QUIET_SECS", r#"{"PAS^RA1"=3600}"#)]).await;
    let prom = Prometheus::start(&p).await;
    prom.wait_for("count(up == 1)", |v| v == SERVICES.len() as f64, Duration::from_secs(30))
        .await;

    // two feeds, a merge (an MRN-only record later sent with its NHS number), two records held
    // for review (same name and birth date as a known patient, nothing else)
    let known = [
        adt(
            "PAS",
            "RA1",
            "OBS00001",
            "PID|1||A1001^^^RA1^MR~9434765919^^^NHS^NH||Dashperson^Margaret||19610304|F|||12 High Street^^Leeds^^LS1 4AB^GBR^H",
        ),
        adt(
            "PAS",
            "RA1",
            "OBS00002",
            "PID|1||A3003^^^RA1^MR~9990000018^^^NHS^NH||Panelperson^Beatrice||19750917|F|||4 Park Road^^Leeds^^LS6 2AA^GBR^H",
        ),
        adt(
            "PAS",
            "RA1",
            "OBS00003",
            "PID|1||A4004^^^RA1^MR~9990000026^^^NHS^NH||Queryperson^Cecil||19800101|M|||9 Low Lane^^Leeds^^LS2 7EE^GBR^H",
        ),
    ];
    let later = [
        adt(
            "PAS",
            "RB2",
            "OBS00004",
            "PID|1||B2002^^^RB2^MR||Dashperson^Margret||19610304|F|||3 Mill Lane^^York^^YO1 7HH^GBR^H",
        ),
        adt(
            "PAS",
            "RB2",
            "OBS00005",
            "PID|1||B2002^^^RB2^MR~9434765919^^^NHS^NH||Dashperson^Margret||19610304|F|||3 Mill Lane^^York^^YO1 7HH^GBR^H",
        ),
        adt("PAS", "RC3", "OBS00006", "PID|1||C4004^^^RC3^MR||Panelperson^Beatrice||19750917"),
        adt("PAS", "RC3", "OBS00007", "PID|1||C5005^^^RC3^MR||Queryperson^Cecil||19800101"),
    ];
    // a result from the lab feed, an immunisation no routing rule takes, and a message without
    // MSH-9 that ingest rejects
    let lab = hl7(&[
        "MSH|^~\\&|LAB|RA1|SLUICE|SLUICE|20260301120500||ORU^R01^ORU_R01|OBS00008|P|2.5".into(),
        "PID|1||A1001^^^RA1^MR~9434765919^^^NHS^NH||Dashperson^Margaret||19610304|F".into(),
        "OBR|1||LAB1^LAB|GLU^Glucose".into(),
        "OBX|1|NM|GLU^Glucose||5.5|mmol/L|||||F".into(),
    ]);
    let vaccine = hl7(&[
        "MSH|^~\\&|VAX|RA1|SLUICE|SLUICE|20260301121000||VXU^V04^VXU_V04|OBS00009|P|2.5".into(),
        "PID|1||A3003^^^RA1^MR~9990000018^^^NHS^NH||Panelperson^Beatrice||19750917|F".into(),
        "RXA|0|1|20260301|20260301|140^Influenza^CVX|0.5|mL".into(),
    ]);
    let rejected = String::from_utf8(adt("PAS", "RA1", "OBS00010", "PID|1||A9009^^^RA1^MR||Rejectperson^Ann||19900101|F"))
        .unwrap()
        .replace("ADT^A04^ADT_A01", "")
        .into_bytes();
    let mut good: Vec<Vec<u8>> = known.to_vec();
    let acks = send_all(p.mllp_port, &good).await;
    assert!(acks.iter().all(|(c, _)| c == "AA"), "{acks:?}");
    // the known patients first, so the later ones have someone to match
    p.wait_routed(&hl7_event_ids(&good), Duration::from_secs(60)).await;
    let mut more: Vec<Vec<u8>> = later.to_vec();
    more.extend([lab, vaccine]);
    let acks = send_all(p.mllp_port, &more).await;
    assert!(acks.iter().all(|(c, _)| c == "AA"), "{acks:?}");
    assert_eq!(send_all(p.mllp_port, &[rejected]).await[0].0, "AR");
    good.extend(more);
    let fhir = r#"{"resourceType": "Immunization", "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": "Patient/example-a"}, "occurrenceDateTime": "2026-03-01T10:00:00Z"}"#;
    let r = http_with(SENDER_TOKEN)
        .post(format!("http://127.0.0.1:{}/fhir", p.fhir_port))
        .header("content-type", "application/fhir+json")
        .body(fhir)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let mut expected = hl7_event_ids(&good);
    expected.extend(fhir_event_ids(fhir.as_bytes()));
    p.wait_routed(&expected, Duration::from_secs(90))
        .await
        .assert_exactly_once(&expected);

    // a reviewer decides one of the two review items; the other stays open
    let deadline = Instant::now() + Duration::from_secs(60);
    let items = loop {
        let items = review_items(&p).await;
        if items.len() >= 2 {
            break items;
        }
        assert!(Instant::now() < deadline, "two review items never opened: {items:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let item = items[0]["item_id"].as_str().unwrap();
    let r = http_with(REVIEWER_TOKEN)
        .post(format!("http://127.0.0.1:{}/api/review/items/{item}/decision", p.review_port))
        .json(&serde_json::json!({"action": "new_patient", "reason": "different NHS numbers on the notes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());

    // a poison record normalise dead-letters, replayed by an operator and dead-lettered again
    p.poison(names::RAW);
    let first = dead_letter(&p, "stage=normalise", |_| true).await;
    let r = http_with(OPERATOR_TOKEN)
        .post(format!("{}/{}/replay", p.dead_letter_url(), first["id"].as_str().unwrap()))
        .json(&serde_json::json!({ "reason": "checking the replay path" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "replay refused: {}", r.text().await.unwrap());
    dead_letter(&p, "stage=normalise&status=quarantined", |l| l["attempt"] == 2).await;

    // caught up, every stage reports no lag (a committed transaction's marker is not a record
    // waiting), so nothing reads as a stalled stage
    prom.wait_for(
        "count(count by (service) (sluice_runtime_consumer_lag_records))",
        |v| v == 3.0,
        Duration::from_secs(30),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lags = prom.query("sluice_runtime_consumer_lag_records != 0").await.unwrap();
        if lags.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "stages caught up still report lag: {lags:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // every panel and variable shows data; each is retried until the scrapes (every second)
    // and the services' periodic metrics (lag every 5 s) have caught up
    let queries = dashboard_queries();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut empty: Vec<String>;
    loop {
        empty = Vec::new();
        for q in &queries {
            match prom.query(&q.promql).await {
                Ok(result) if shows_data(&result) => {}
                Ok(result) => empty.push(format!("{}: {} -> {result:?}", q.place, q.promql)),
                Err(e) => panic!("{}: {} is refused by Prometheus: {e}", q.place, q.promql),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(empty.is_empty(), "panels that show nothing:\n{}", empty.join("\n"));

    // every alert runs against the same data without error
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("helm/sluice/files/prometheus-rules.yml")).unwrap()).unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            if let Err(e) = prom.query(expr).await {
                panic!("alert {:?}: {expr} is refused by Prometheus: {e}", rule["alert"]);
            }
            alerts += 1;
        }
    }
    // a feed just heard from, with an hour's expected silence, is not quiet; no stage is stalled
    for quiet in ["SluiceFeedQuiet", "SluiceStageStalled", "SluiceConsumerLagHigh"] {
        let firing = prom.query(&format!("ALERTS{{alertname=\"{quiet}\"}}")).await.unwrap();
        assert!(firing.is_empty(), "{quiet}: {firing:?}");
    }
    println!(
        "observability: {} dashboard queries all show data; {alerts} alert expressions run",
        queries.len()
    );
}

/// At least one series with a number Grafana can draw (not NaN: a quantile of nothing).
fn shows_data(result: &[serde_json::Value]) -> bool {
    result.iter().any(|r| {
        r["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warning_repeated_per_message_in_an_outage_is_written_once_per_window_with_a_count() {
    let p = Pipeline::start_with_env(&[("ingest", "SLUICE_ACK_TIMEOUT_MS", "1000")]).await;
    let msgs = sluice::generate::messages(40, 7);
    p.broker.pause();
    // twenty messages at once, then twenty more after the 10 s window: every one gets AR 207
    let first = send_phase(p.mllp_port, &msgs[..20], 20).await;
    tokio::time::sleep(sluice_ingest::LOG_WINDOW + Duration::from_secs(1)).await;
    let second = send_phase(p.mllp_port, &msgs[20..], 20).await;
    p.broker.resume();
    assert!(first.iter().chain(&second).all(|(code, _)| code == "AR"), "{first:?} {second:?}");
    assert_eq!(
        p.metric("ingest", r#"sluice_ingest_messages_total{listener="mllp",result="failed"}"#)
            .await,
        40.0,
        "every failure is counted"
    );
    let log = p.log_of("ingest");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("write to kafka failed")).collect();
    assert!(
        (2..=3).contains(&lines.len()),
        "40 failed writes in two bursts 11 s apart make two or three log lines, not one each:\n{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" more like this in the last 10 s") && !l.contains("left_out=0")),
        "the line after the window says how many were left out:\n{}",
        lines.join("\n")
    );
}
