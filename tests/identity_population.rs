//! The population benchmark through the real pipeline: a smaller synthetic population (four
//! sites, every scenario) sent over several MLLP connections at once, so messages about one
//! person from different sites interleave as they will in production, through every service on
//! the Apache Kafka tier. Scored from `identity.links.v1` (each record's enterprise id now) and
//! the review topic; the per-scenario figures are printed. The enterprise ids must be the same
//! as the in-process run over the same messages in time order (ADR 4), with no overlay.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BrokerKind, Pipeline, hl7_event_ids};
use sluice::identity;
use sluice::population;
use sluice_model::topology::names;
use sluice_model::{IdentityLink, MatchedEvent};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

/// Records grouped by enterprise id, as sets of record keys (the ids themselves may differ
/// only if the groups do).
fn groups(epis: &HashMap<String, String>) -> BTreeSet<BTreeSet<String>> {
    let mut by: BTreeMap<&String, BTreeSet<String>> = BTreeMap::new();
    for (k, e) in epis {
        by.entry(e).or_default().insert(k.clone());
    }
    by.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synthetic_population_through_the_pipeline_links_across_sites_without_overlays() {
    let pop = population::generate(250, 21);
    let msgs: Vec<Vec<u8>> = pop.messages.iter().map(|m| m.text.clone().into_bytes()).collect();
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let acks = common::send_phase(p.mllp_port, &msgs, 4).await;
    assert!(acks.iter().all(|(code, _)| code == "AA"));
    let expected = hl7_event_ids(&msgs);
    let routed = p.wait_routed(&expected, Duration::from_secs(180)).await;
    routed.assert_exactly_once(&expected);

    let links: Vec<IdentityLink> = p.decoded(names::LINKS).await;
    let mut now: HashMap<String, String> = HashMap::new();
    for l in links {
        now.insert(l.key, l.enterprise_id);
    }
    let review: Vec<MatchedEvent> = p.decoded(names::REVIEW).await;
    let held_ids: HashSet<String> = review.iter().map(|m| m.event.event_id.clone()).collect();
    let held: Vec<bool> = msgs
        .iter()
        .map(|m| held_ids.contains(&sluice_model::ids::hl7_event_id(&sluice_hl7::Message::parse(m))))
        .collect();
    let report = identity::score(&pop, &held, |key| now.get(key).cloned());
    println!("through the pipeline ({} messages over 4 connections):\n{report}", msgs.len());
    assert_eq!(report.total.overlays, 0, "two true people share an enterprise id");
    assert!(report.total.recall() >= 0.97, "recall {}", report.total.recall());

    // the same messages in time order, in process: the same enterprise ids
    let (in_process, _) = identity::run_in_process(&pop, 0).unwrap();
    let records: HashSet<&String> = in_process.keys().collect();
    let pipeline: HashMap<String, String> = now.into_iter().filter(|(k, _)| records.contains(k)).collect();
    assert_eq!(
        groups(&pipeline),
        groups(&in_process),
        "the interleaving changed who is one patient"
    );
    assert_eq!(pipeline, in_process, "the interleaving changed the enterprise ids");
}
