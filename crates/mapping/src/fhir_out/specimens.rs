//! Specimen.

use super::datatypes::{concept, set_period, set_time};
use super::new_resource;
use serde_json::{Map, Value, json};
use sluice_model::{ClinicalEvent, Specimen};

pub(super) fn specimen(ev: &ClinicalEvent, i: usize, s: &Specimen, subject: Option<&Value>) -> Map<String, Value> {
    let mut r = new_resource("Specimen", ev, i);
    if let Some(id) = &s.identifier {
        r.insert("accessionIdentifier".into(), json!({"value": id}));
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

/// Which specimen an order or observation is of: named directly (specimen-first structures, an
/// OBX after its SPM), else the specimen of its order.
pub(super) fn order_specimen(ev: &ClinicalEvent, k: Option<i32>) -> Option<i32> {
    k.and_then(|k| ev.orders.get(k as usize))
        .and_then(|o| o.specimen_index)
        .or_else(|| {
            ev.specimens
                .iter()
                .position(|s| s.order_index.is_some() && s.order_index == k)
                .map(|x| x as i32)
        })
}
