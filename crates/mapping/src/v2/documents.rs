//! TXA: the document of an MDM message.

use super::values::Mapper;
use sluice_hl7::Segment;
use sluice_model::{ClinicalEvent, Document};

/// The first TXA: the document.
pub(super) fn txa<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent) {
    ev.document = Some(Document {
        document_type: m.field_text(seg, 2),
        activity_time: m.ts(seg, 4),
        unique_id: m.text(seg.field(12).raw()).map(|_| m.er7(seg.field(12).raw())),
        parent_id: m.text(seg.field(13).raw()).map(|_| m.er7(seg.field(13).raw())),
        file_name: m.field_text(seg, 16),
        completion_status: m.field_text(seg, 17),
        confidentiality: m.field_text(seg, 18),
        availability: m.field_text(seg, 19),
    });
}
