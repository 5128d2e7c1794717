//! TXA: the document of an MDM message.

use super::values::Mapper;
use sluice_hl7::Segment;
use sluice_model::{ClinicalEvent, Document};

/// The first TXA: the document.
pub(super) fn txa<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent) {
    let (unique, parent) = (m.entity_field(seg, 12), m.entity_field(seg, 13));
    ev.document = Some(Document {
        document_type: m.field_text(seg, 2),
        activity_time: m.ts(seg, 4),
        unique_id: unique.as_ref().map(|e| e.value.clone()),
        parent_id: parent.as_ref().map(|e| e.value.clone()),
        unique_entity: unique,
        parent_entity: parent,
        file_name: m.field_text(seg, 16),
        completion_status: m.field_text(seg, 17),
        confidentiality: m.field_text(seg, 18),
        availability: m.field_text(seg, 19),
    });
}
