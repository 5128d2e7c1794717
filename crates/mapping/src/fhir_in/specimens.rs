//! Specimen.

use super::Mapper;
use super::values::{coded_at, ts};
use serde_json::Value;
use sluice_fhir::{first, text_at};
use sluice_model::Specimen;

impl<'v> Mapper<'_, 'v> {
    pub(super) fn specimen(&mut self, r: &Value) {
        let collection = first(r, "collection");
        let c = |path: &[&str]| collection.and_then(|c| ts(c, path));
        self.ev.specimens.push(Specimen {
            set_id: Some((self.ev.specimens.len() + 1).to_string()),
            order_index: None,
            identifier: text_at(r, &["accessionIdentifier", "value"]).or_else(|| text_at(r, &["identifier", "value"])),
            placer_entity: None,
            filler_entity: None,
            specimen_type: coded_at(r, "type"),
            source_site: collection.and_then(|c| coded_at(c, "bodySite")),
            collection_time: c(&["collectedDateTime"]).or_else(|| c(&["collectedPeriod", "start"])),
            collection_end: c(&["collectedPeriod", "end"]),
            received_time: ts(r, &["receivedTime"]),
        });
    }
}
