//! SPM and OBR-15: specimens.

use super::values::Mapper;
use super::{After, Group};
use sluice_hl7::Segment;
use sluice_model::time::parse_hl7;
use sluice_model::{ClinicalEvent, Coded, Specimen};

/// SPM: a specimen, of the last OBR, or in specimen-first structures of the orders after it.
pub(super) fn spm<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Specimen;
    g.specimen_group = Some(ev.specimens.len() as i32);
    g.last_spm = g.specimen_group;
    let collection = seg.field(17).repetition(0);
    let ts = |raw: &[u8]| m.text(raw).and_then(|t| parse_hl7(&t));
    // SPM-2 is an EIP: the placer's and the filler's ids, each an EI in subcomponents
    let (placer, filler) = (m.entity_half(seg, 2, 1), m.entity_half(seg, 2, 2));
    ev.specimens.push(Specimen {
        set_id: m.field_text(seg, 1),
        // specimen-first: set by the first OBR of its group
        order_index: g.last_obr.filter(|_| !g.specimen_first),
        identifier: placer.as_ref().or(filler.as_ref()).map(|e| e.value.clone()),
        placer_entity: placer,
        filler_entity: filler,
        specimen_type: m.coded(&seg.field(4).repetition(0)),
        source_site: m.coded(&seg.field(8).repetition(0)),
        collection_time: ts(collection.component(1).subcomponent(1)),
        collection_end: ts(collection.component(2).subcomponent(1)),
        received_time: m.ts(seg, 18),
    });
}

impl<'a> Mapper<'_, 'a> {
    /// OBR-15 specimen source (before v2.5, where SPM does not exist): its type and body site,
    /// with OBR-7/8 collection and OBR-14 received times.
    pub(super) fn obr_specimen(&self, obr: &Segment<'a>, order_index: i32) -> Option<Specimen> {
        let sps = obr.field(15).repetition(0);
        let coded_sub = |c: sluice_hl7::Component<'a>| {
            let sub = |n| self.text(c.subcomponent(n));
            let code = sub(1);
            let text = sub(2);
            (code.is_some() || text.is_some()).then(|| Coded {
                code,
                text,
                system: sub(3),
                ..Default::default()
            })
        };
        let specimen_type = coded_sub(sps.component(1))?;
        Some(Specimen {
            placer_entity: None,
            filler_entity: None,
            set_id: None,
            order_index: Some(order_index),
            identifier: None,
            specimen_type: Some(specimen_type),
            source_site: coded_sub(sps.component(4)),
            collection_time: self.ts(obr, 7),
            collection_end: self.ts(obr, 8),
            received_time: self.ts(obr, 14),
        })
    }
}
