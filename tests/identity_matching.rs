//! Patient identity end to end, on the Apache Kafka tier, every service a process of its own,
//! real HL7 over MLLP. Three scenarios over one pipeline:
//! - an MRN-only patient whose site later sends the NHS number becomes one enterprise id with
//!   the patient the NHS number belongs to, and `identity.changes.v1` says so (both ids);
//! - a record held for review is decided through the authenticated review API: the held event is
//!   released with the chosen enterprise id, the decision is audited with the token's actor, and
//!   the next message of that record follows the decision;
//! - twins and namesakes stay apart.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BrokerKind, Pipeline, hl7_event_ids};
use sluice_model::topology::names;
use sluice_model::{IdentityChange, IdentityDecision, IdentityLink, MatchedEvent};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{REVIEWER_TOKEN as REVIEWER, VIEWER_TOKEN as VIEWER};

fn adt(site: &str, trigger: &str, control_id: &str, pid: &str) -> Vec<u8> {
    [
        format!("MSH|^~\\&|PAS|{site}|SLUICE|SLUICE|20260301120000||ADT^{trigger}^ADT_A01|{control_id}|P|2.5"),
        "EVN||20260301120000".into(),
        pid.into(),
        "PV1|1|O".into(),
    ]
    .join("\r")
    .into_bytes()
}

async fn send(p: &Pipeline, msgs: &[Vec<u8>]) {
    let acks = common::send_all(p.mllp_port, msgs).await;
    assert!(acks.iter().all(|(code, _)| code == "AA"), "{acks:?}");
}

/// Waits until every event of `msgs` is on `topic`; returns the decoded records of the topic.
async fn wait_for<T: sluice_model::Record>(p: &Pipeline, topic: &str, ids: &HashSet<String>, id_of: impl Fn(&T) -> String) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let all: Vec<T> = p.decoded(topic).await;
        let seen: HashSet<String> = all.iter().map(&id_of).collect();
        if ids.is_subset(&seen) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events never reached {topic}",
            ids.difference(&seen).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn matched(p: &Pipeline, msgs: &[Vec<u8>]) -> Vec<MatchedEvent> {
    let ids = hl7_event_ids(msgs);
    let all = wait_for(p, names::MATCHED, &ids, |m: &MatchedEvent| m.event.event_id.clone()).await;
    msgs.iter()
        .map(|m| {
            let id = sluice_model::ids::hl7_event_id(&sluice_hl7::Message::parse(m));
            all.iter().find(|e| e.event.event_id == id).cloned().unwrap()
        })
        .collect()
}

async fn an_mrn_only_patient_sent_later_with_the_nhs_number_becomes_one_and_the_change_is_published(p: &Pipeline) {
    // site A knows the patient with the NHS number; site B first without it, at another address
    // and with a typo in the given name: not enough to link
    let a = adt(
        "RA1",
        "A04",
        "MRG00001",
        "PID|1||A1001^^^RA1^MR~9434765919^^^NHS^NH||Testperson^Margaret||19610304|F|||12 High Street^^Leeds^^LS1 4AB^GBR^H",
    );
    let b1 = adt(
        "RB2",
        "A04",
        "MRG00002",
        "PID|1||B2002^^^RB2^MR||Testperson^Margret||19610304|F|||3 Mill Lane^^York^^YO1 7HH^GBR^H",
    );
    send(p, &[a.clone(), b1.clone()]).await;
    let first = matched(p, &[a.clone(), b1.clone()]).await;
    let (ea, eb) = (first[0].enterprise_id.clone().unwrap(), first[1].enterprise_id.clone().unwrap());
    assert_ne!(ea, eb, "not linked on so little");
    assert_eq!(first[1].match_result.outcome, "new");
    // the same site later sends the NHS number
    let b2 = adt(
        "RB2",
        "A08",
        "MRG00003",
        "PID|1||B2002^^^RB2^MR~9434765919^^^NHS^NH||Testperson^Margret||19610304|F|||3 Mill Lane^^York^^YO1 7HH^GBR^H",
    );
    send(p, std::slice::from_ref(&b2)).await;
    let second = matched(p, std::slice::from_ref(&b2)).await;
    assert_eq!(second[0].enterprise_id.as_deref(), Some(ea.as_str()), "one enterprise id now");
    assert_eq!(second[0].match_result.outcome, "merged");
    assert!(
        second[0]
            .match_result
            .comparisons
            .iter()
            .any(|c| c.field == "nhs_number" && c.level == "same")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let changes: Vec<IdentityChange> = p.decoded(names::CHANGES).await;
        if let Some(c) = changes.iter().find(|c| c.from_enterprise_id == eb) {
            assert_eq!((c.kind.as_str(), c.to_enterprise_id.as_str()), ("merged", ea.as_str()));
            assert_eq!(c.records, vec!["mrn|RB2|B2002".to_owned()]);
            assert_eq!(c.rule, "nhs_number");
            break;
        }
        assert!(Instant::now() < deadline, "no change event for the merge");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn a_review_decision_made_through_the_api_takes_effect_for_the_next_message(p: &Pipeline, api: &str) {
    let client = reqwest::Client::new();
    let a = adt(
        "RA1",
        "A04",
        "REV00001",
        "PID|1||A3003^^^RA1^MR~9990000018^^^NHS^NH||Otherperson^Beatrice||19750917|F|||4 Park Road^^Leeds^^LS6 2AA^GBR^H",
    );
    // another site: the same name and birth date, nothing else: held for a person
    let c1 = adt("RC3", "A04", "REV00002", "PID|1||C4004^^^RC3^MR||Otherperson^Beatrice||19750917");
    send(p, &[a.clone(), c1.clone()]).await;
    let ea = matched(p, std::slice::from_ref(&a)).await[0].enterprise_id.clone().unwrap();
    let held_id = hl7_event_ids(std::slice::from_ref(&c1));
    let review = wait_for(p, names::REVIEW, &held_id, |m: &MatchedEvent| m.event.event_id.clone()).await;
    let held = review.iter().find(|m| held_id.contains(&m.event.event_id)).unwrap();
    assert_eq!(held.match_result.rule, "review_band");
    assert_eq!(
        held.match_result.candidates[0].enterprise_id, ea,
        "the candidate, with its evidence"
    );
    assert!(!held.match_result.candidates[0].comparisons.is_empty());
    let item = held.match_result.review_item.clone().unwrap();

    // no token, a wrong token: nothing; a viewer may look but not decide
    let items = format!("{api}/api/review/items");
    assert_eq!(client.get(&items).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        client
            .get(&items)
            .bearer_auth("not-a-token-at-all-0000")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let v: serde_json::Value = client.get(&items).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
        if v["items"].as_array().unwrap().iter().any(|i| i["item_id"] == item.as_str()) {
            break v;
        }
        assert!(Instant::now() < deadline, "the item never showed: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(listed["count"].as_u64().unwrap() >= 1);
    // the item holds patient data: a viewer may not open it, a reviewer says why and is audited
    let open = format!("{items}/{item}?reason=working+the+review+queue");
    assert_eq!(client.get(&open).bearer_auth(VIEWER).send().await.unwrap().status().as_u16(), 403);
    let shown: serde_json::Value = client.get(&open).bearer_auth(REVIEWER).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["candidates"][0]["enterprise_id"], ea.as_str());
    assert!(
        shown["subject"]["names"][0].as_str().unwrap().contains("OTHERPERSON"),
        "side by side: {shown}"
    );
    assert!(
        shown["candidates"][0]["person"]["names"][0]
            .as_str()
            .unwrap()
            .contains("OTHERPERSON")
    );
    let decide = format!("{items}/{item}/decision");
    let body = serde_json::json!({"action": "link", "target_enterprise_id": ea, "reason": "same GP and next of kin on the notes"});
    assert_eq!(
        client
            .post(&decide)
            .bearer_auth(VIEWER)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    let r = client.post(&decide).bearer_auth(REVIEWER).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // the held event is released to the chosen enterprise id
    let released = matched(p, std::slice::from_ref(&c1)).await;
    assert_eq!(released[0].enterprise_id.as_deref(), Some(ea.as_str()));
    assert_eq!(released[0].match_result.rule, "reviewer_link");
    let decisions: Vec<IdentityDecision> = p.decoded(names::DECISIONS).await;
    let d = decisions.iter().find(|d| d.item_id.as_deref() == Some(item.as_str())).unwrap();
    assert_eq!(
        (d.actor.as_str(), d.role.as_str(), d.action.as_str()),
        ("Dr Reviewer", "reviewer", "link")
    );
    assert_eq!(released[0].match_result.decision_id.as_deref(), Some(d.decision_id.as_str()));
    // the view and the decision are on the audit topic, with the token's actor and the reasons
    let audit: Vec<sluice_model::AuditEvent> = p.decoded(names::AUDIT).await;
    let of_item: Vec<(&str, &str, &str)> = audit
        .iter()
        .filter(|a| a.subject_id == item)
        .map(|a| (a.action.as_str(), a.actor.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(
        of_item,
        [
            ("view_review_item", "Dr Reviewer", "working the review queue"),
            ("identity_decision", "Dr Reviewer", "same GP and next of kin on the notes"),
        ]
    );
    assert_eq!(
        audit
            .iter()
            .find(|a| a.action == "identity_decision")
            .unwrap()
            .related_id
            .as_deref(),
        Some(d.decision_id.as_str())
    );
    // the next message of that record follows the decision, without review
    let c2 = adt("RC3", "A08", "REV00003", "PID|1||C4004^^^RC3^MR||Otherperson^Beatrice||19750917");
    send(p, std::slice::from_ref(&c2)).await;
    let next = matched(p, std::slice::from_ref(&c2)).await;
    assert_eq!(next[0].enterprise_id.as_deref(), Some(ea.as_str()));
    assert_eq!(next[0].match_result.outcome, "matched");
    // the item is gone from the queue
    let v: serde_json::Value = client.get(&items).bearer_auth(VIEWER).send().await.unwrap().json().await.unwrap();
    assert!(v["items"].as_array().unwrap().iter().all(|i| i["item_id"] != item.as_str()));
}

async fn twins_and_namesakes_stay_apart(p: &Pipeline) {
    let twins = [
        adt(
            "RA1",
            "A04",
            "TWN00001",
            "PID|1||T5001^^^RA1^MR||Twinperson^Amelia||20100615|F|||7 Church Lane^^Leeds^^LS7 3QQ^GBR^H",
        ),
        adt(
            "RA1",
            "A04",
            "TWN00002",
            "PID|1||T5002^^^RA1^MR||Twinperson^Olivia||20100615|F|||7 Church Lane^^Leeds^^LS7 3QQ^GBR^H",
        ),
        // the same twins seen at another site
        adt(
            "RB2",
            "A04",
            "TWN00003",
            "PID|1||T6001^^^RB2^MR||Twinperson^Amelia||20100615|F|||7 Church Lane^^Leeds^^LS7 3QQ^GBR^H",
        ),
    ];
    let namesakes = [
        adt(
            "RA1",
            "A04",
            "NMS00001",
            "PID|1||N7001^^^RA1^MR~9990000026^^^NHS^NH||Sameperson^Robert||19820101|M|||1 Station Road^^Wakefield^^WF1 1AA^GBR^H",
        ),
        adt(
            "RB2",
            "A04",
            "NMS00002",
            "PID|1||N8002^^^RB2^MR~9990000034^^^NHS^NH||Sameperson^Robert||19820101|M|||90 York Road^^Harrogate^^HG1 2BB^GBR^H",
        ),
    ];
    let all: Vec<Vec<u8>> = twins.iter().chain(&namesakes).cloned().collect();
    send(p, &all).await;
    let m = matched(p, &all).await;
    assert!(m.iter().all(|e| e.enterprise_id.is_some()), "none held");
    // the enterprise id of each record now (an id given earlier may have been merged since, as
    // when the second site's message was matched first: the change event says so)
    let links: Vec<IdentityLink> = p.decoded(names::LINKS).await;
    let now = |key: &str| links.iter().rev().find(|l| l.key == key).map(|l| l.enterprise_id.clone()).unwrap();
    assert_ne!(now("mrn|RA1|T5001"), now("mrn|RA1|T5002"), "twins overlaid");
    assert_eq!(
        now("mrn|RA1|T5001"),
        now("mrn|RB2|T6001"),
        "the same twin at two sites is one patient"
    );
    assert_ne!(now("mrn|RB2|T6001"), now("mrn|RA1|T5002"), "twins overlaid through another site");
    assert_ne!(now("mrn|RA1|N7001"), now("mrn|RB2|N8002"), "namesakes overlaid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patient_identity_links_across_sites_and_never_overlays() {
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &[]).await;
    let addr = format!("127.0.0.1:{}", p.review_port);
    an_mrn_only_patient_sent_later_with_the_nhs_number_becomes_one_and_the_change_is_published(&p).await;
    a_review_decision_made_through_the_api_takes_effect_for_the_next_message(&p, &format!("http://{addr}")).await;
    twins_and_namesakes_stay_apart(&p).await;
    let logs = p.logs();
    for secret in ["Testperson", "TESTPERSON", "A1001", "9434765919", REVIEWER] {
        assert!(!logs.contains(secret), "patient data or a token in the logs");
    }
}
