//! Specimen.

use super::datatypes::{concept, entity_identifier, set_period, set_time};
use super::new_resource;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Specimen};

/// SPM (v2-to-FHIR SPM[Specimen]): SPM-2.1, the placer's id, is `identifier`; SPM-2.2, the
/// filler's, is `accessionIdentifier`; `request` names the order's ServiceRequest.
pub(super) fn specimen(ev: &ClinicalEvent, i: usize, s: &Specimen, subject: Option<&Value>, request: Option<Value>) -> Map<String, Value> {
    let mut r = new_resource("Specimen", ev, i);
    match (&s.placer_entity, &s.filler_entity, &s.identifier) {
        (None, None, Some(id)) => {
            r.insert("accessionIdentifier".into(), json!({"value": id}));
        }
        (placer, filler, _) => {
            if let Some(p) = placer {
                r.insert("identifier".into(), json!([entity_identifier(p)]));
            }
            if let Some(f) = filler {
                r.insert("accessionIdentifier".into(), entity_identifier(f));
            }
        }
    }
    if let Some(req) = request {
        r.insert("request".into(), json!([req]));
    }
    if let Some(t) = concept(s.specimen_type.as_ref()) {
        r.insert("type".into(), t);
    }
    if let Some(sub) = subject {
        r.insert("subject".into(), sub.clone());
    }
    set_time(&mut r, "receivedTime", s.received_time.as_ref());
    let mut collection = Map::new();
    if s.collection_end.is_some() {
        set_period(
            &mut collection,
            "collectedPeriod",
            s.collection_time.as_ref(),
            s.collection_end.as_ref(),
        );
    } else {
        set_time(&mut collection, "collectedDateTime", s.collection_time.as_ref());
    }
    if let Some(site) = concept(s.source_site.as_ref()) {
        collection.insert("bodySite".into(), site);
    }
    if !collection.is_empty() {
        r.insert("collection".into(), Value::Object(collection));
    }
    r
}

/// The specimen of each order: the one the order names (specimen-first structures), else the
/// first specimen that names the order. Built once per event, so every lookup is constant time.
pub(super) struct OrderSpecimens(std::collections::HashMap<i32, i32>);

impl OrderSpecimens {
    pub(super) fn new(ev: &ClinicalEvent) -> OrderSpecimens {
        let mut by_order = std::collections::HashMap::new();
        for (i, s) in ev.specimens.iter().enumerate().rev() {
            if let Some(k) = s.order_index {
                by_order.insert(k, i as i32);
            }
        }
        for (k, o) in ev.orders.iter().enumerate() {
            if let Some(s) = o.specimen_index {
                by_order.insert(k as i32, s);
            }
        }
        OrderSpecimens(by_order)
    }

    pub(super) fn of(&self, order: Option<i32>) -> Option<i32> {
        order.and_then(|k| self.0.get(&k).copied())
    }
}
