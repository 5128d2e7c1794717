//! The envelope of an event from FHIR: ids, source and times from the Bundle and its
//! MessageHeader.

use crate::RawPosition;
use serde_json::Value;
use sluice_fhir::{resource_type, text_at};
use sluice_model::time::parse_fhir;
use sluice_model::{ClinicalEvent, EventSource, RawMessage};

pub(super) fn envelope(
    tree: &Value,
    header: Option<&Value>,
    raw: &RawMessage,
    pos: &RawPosition,
    identity: &sluice_model::ids::MessageIdentity,
    group: &str,
) -> ClinicalEvent {
    let root_type = resource_type(tree).unwrap_or_default().to_owned();
    let trigger = header
        .and_then(|h| text_at(h, &["eventCoding", "code"]).or_else(|| text_at(h, &["eventUri"])))
        .or_else(|| (root_type == "Bundle").then(|| text_at(tree, &["type"])).flatten())
        .unwrap_or_else(|| root_type.clone());
    ClinicalEvent {
        event_id: identity.event_id("fhir", group),
        identity_key: identity.identity.clone(),
        content_digest: identity.digest.clone(),
        message_type: "FHIR".into(),
        trigger_event: trigger,
        message_structure: root_type,
        kind: String::new(),
        source: EventSource {
            sending_application: header
                .and_then(|h| text_at(h, &["source", "name"]).or_else(|| text_at(h, &["source", "endpoint"])))
                .unwrap_or_else(|| raw.listener.clone()),
            sending_facility: header
                .and_then(|h| text_at(h, &["sender", "display"]).or_else(|| text_at(h, &["sender", "identifier", "value"])))
                .unwrap_or_default(),
            receiving_application: header
                .and_then(|h| text_at(h, &["destination", "name"]).or_else(|| text_at(h, &["destination", "endpoint"])))
                .unwrap_or_default(),
            receiving_facility: header.and_then(|h| text_at(h, &["receiver", "display"])).unwrap_or_default(),
            control_id: text_at(tree, &["identifier", "value"])
                .or_else(|| header.and_then(|h| text_at(h, &["id"])))
                .or_else(|| text_at(tree, &["id"]))
                .unwrap_or_default(),
            version: "4.0.1".into(),
            processing_id: String::new(),
            raw_id: raw.raw_id.clone(),
            raw_topic: pos.topic.clone(),
            raw_partition: pos.partition,
            raw_offset: pos.offset,
            transport: raw.transport.clone(),
            charset: "UTF-8".into(),
            replay: pos.replay,
        },
        message_time: text_at(tree, &["timestamp"])
            .or_else(|| text_at(tree, &["meta", "lastUpdated"]))
            .and_then(|t| parse_fhir(&t)),
        ..Default::default()
    }
}
