//! Input larger than Kafka takes, on the real broker process: it is refused with a reason code
//! and kept (its first part), never answered "resend" for ever, and it never stops a stage for
//! the messages behind it.
//! - ingest: an HL7 v2 message or FHIR body whose raw record would exceed
//!   `runtime.kafka.max_record_bytes` gets `AR` (not 207) or `413`, and a dead letter
//!   `message_too_large`; ingest stays ready;
//! - normalise, configured with a smaller limit than ingest: a message whose canonical event
//!   would not fit is dead-lettered as `output_too_large` in its transaction, and the next
//!   message is normalised and routed.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BrokerKind, Pipeline};
use sluice_model::DeadLetter;
use sluice_model::topology::names;
use std::collections::HashSet;
use std::time::Duration;

fn oru(control: &str, text_bytes: usize) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LIMS|RTH|EPR|RTH|20240701101500+0100||ORU^R01^ORU_R01|{control}|P|2.5.1\rPID|1||LIM1^^^RTH^MR~9434765919^^^NHS^NH||BIG^REPORT\rOBR|1|PL|FL|REP^Report^L|||20240701093000+0100||||||||||||||||||F\rOBX|1|TX|REP^Report^L||{}||||||F\r",
        "X".repeat(text_bytes)
    )
    .into_bytes()
}

async fn dead_letters(p: &Pipeline, topic: &str) -> Vec<DeadLetter> {
    let store = p.store();
    let mut out = Vec::new();
    for (_, _, _, v) in p.read_all(topic) {
        store.prefetch(&v).await.unwrap();
        out.push(store.decode::<DeadLetter>(&v).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_input_is_refused_and_kept_and_never_stops_a_stage() {
    let env = [("normalise", "SLUICE_RUNTIME__KAFKA__MAX_RECORD_BYTES", "150000")];
    let p = Pipeline::start_on(BrokerKind::exactly_once(), &env).await;

    // 1.5 MB over MLLP: more than a record may be
    let acks = common::send_all(p.mllp_port, &[oru("BIG1", 1_500_000)]).await;
    assert_eq!(acks[0].0, "AR", "refused, not 'resend'");
    let ready = reqwest::get(p.metrics_url("ingest").replace("/metrics", "/readyz")).await.unwrap();
    assert!(ready.status().is_success(), "one large message does not make ingest unready");
    // the same over HTTP as a FHIR body
    let body = format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"text":"x"}},"valueString":"{}"}}"#,
        "X".repeat(1_500_000)
    );
    let r = common::http_with(common::SENDER_TOKEN)
        .post(format!("http://127.0.0.1:{}/fhir", p.fhir_port))
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // 300 KB fits ingest's limit, but its canonical event and Bundle do not fit normalise's
    // 150 KB: dead-lettered in the transaction, and the message behind it still flows
    let small = oru("SMALL1", 10);
    let acks = common::send_all(p.mllp_port, &[oru("MID1", 300_000), small.clone()]).await;
    assert_eq!((acks[0].0.as_str(), acks[1].0.as_str()), ("AA", "AA"));
    let expected: HashSet<String> = [sluice_model::ids::hl7_event_id(&sluice_hl7::Message::parse(&small))].into();
    let routed = p.wait_routed(&expected, Duration::from_secs(90)).await;
    routed.assert_exactly_once(&expected);

    let ingest = dead_letters(&p, names::DL_INGEST).await;
    assert_eq!(ingest.len(), 2);
    for dl in &ingest {
        assert_eq!(dl.reason_code, "message_too_large");
        assert!(
            dl.original_value.len() <= 500_000 && !dl.original_value.is_empty(),
            "its first part is kept"
        );
    }
    let normalise = dead_letters(&p, names::DL_NORMALISE).await;
    assert_eq!(normalise.len(), 1);
    assert_eq!(normalise[0].reason_code, "output_too_large");
    assert_eq!(
        normalise[0].original_topic.as_deref(),
        Some(names::RAW),
        "it can be replayed once limits are raised"
    );
}
