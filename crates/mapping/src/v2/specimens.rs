//! SPM and OBR-15: specimens.

use super::values::Mapper;
use sluice_hl7::Segment;
use sluice_model::{Coded, Specimen};

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
