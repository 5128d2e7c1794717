//! RXA: an immunisation (its route comes from the RXR after it, see the pharmacy module).

use super::results;
use super::values::Mapper;
use super::{After, Group};
use sluice_hl7::Segment;
use sluice_model::{ClinicalEvent, Immunisation};

pub(super) fn rxa<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Immunisation;
    let units = m.coded(&seg.field(7).repetition(0));
    ev.immunisations.push(Immunisation {
        administered_time: m.ts(seg, 3),
        vaccine: m.coded(&seg.field(5).repetition(0)),
        amount: m.field_text(seg, 6),
        units_ucum: units
            .as_ref()
            .and_then(|u| results::ucum(u.code.as_deref(), u.text.as_deref(), u.system.as_deref())),
        units,
        lot_numbers: seg.field(15).repetitions().filter_map(|r| m.text(r.raw())).collect(),
        expiry: m.ts(seg, 16),
        manufacturer: m.coded(&seg.field(17).repetition(0)),
        completion_status: m.field_text(seg, 20),
        action: m.field_text(seg, 21),
        route: None,
        site: None,
    });
}
