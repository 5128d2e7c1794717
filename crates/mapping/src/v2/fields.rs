//! The field tables: for every segment the model maps, the fields (and components) it maps, and
//! the collection of every other non-empty field, which travels in `unmapped_fields`.

use super::values::Mapper;
use sluice_hl7::Segment;
use sluice_model::UnmappedField;

/// (field, components mapped; empty = the whole field is mapped)
pub(super) type FieldMap = &'static [(usize, &'static [usize])];

const MSH_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, &[]),
    (5, &[]),
    (6, &[]),
    (7, &[]),
    (9, &[]),
    (10, &[]),
    (11, &[]),
    (12, &[]),
    (18, &[]),
];
const EVN_MAP: FieldMap = &[(1, &[]), (2, &[])];
const CX: &[usize] = &[1, 4, 5, 6];
const PID_MAP: FieldMap = &[
    (1, &[]),
    (2, CX),
    (3, CX),
    (4, CX),
    (5, &[1, 2, 3, 4, 5, 7]),
    (7, &[]),
    (8, &[]),
    (9, &[1, 2, 3, 4, 5, 7]),
    (11, &[1, 2, 3, 4, 5, 6, 7]),
    // PID-19 is an ST, but some feeds send components (a health card number^version): the
    // first is the number, anything after it travels in unmapped_fields
    (19, &[1]),
    (20, &[1, 2]),
    (29, &[]),
    (30, &[]),
];
const PV1_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, &[]),
    (6, &[]),
    (10, &[]),
    (19, CX),
    (44, &[]),
    (45, &[]),
];
const MRG_MAP: FieldMap = &[(1, CX), (3, &[]), (5, &[])];
const ORC_MAP: FieldMap = &[(1, &[]), (2, &[]), (3, &[]), (5, &[]), (9, &[])];
const CE: &[usize] = &[1, 2, 3, 4, 5, 6];
const OBR_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, CE),
    (5, &[]),
    (6, &[]),
    (7, &[]),
    (8, &[]),
    (14, &[]),
    (15, &[1, 4]),
    (25, &[]),
];
const TQ1_MAP: FieldMap = &[(1, &[]), (7, &[1]), (8, &[1]), (9, &[1])];
const RXA_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[1]),
    (5, CE),
    (6, &[]),
    (7, CE),
    (15, &[]),
    (16, &[1]),
    (17, CE),
    (20, &[]),
    (21, &[]),
];
const RXR_MAP: FieldMap = &[(1, CE), (2, CE)];
const TXA_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (4, &[1]),
    (12, &[]),
    (13, &[]),
    (16, &[]),
    (17, &[]),
    (18, &[]),
    (19, &[]),
];
const OBX_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, CE),
    (4, &[]),
    (5, &[]),
    (6, CE),
    (7, &[]),
    (8, &[]),
    (11, &[]),
    (14, &[]),
];
const NTE_MAP: FieldMap = &[(1, &[]), (3, &[])];
const SCH_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (6, CE),
    (7, CE),
    (8, CE),
    (9, &[]),
    (10, CE),
    (11, &[4, 5]),
    (25, &[]),
];
// AIS-4 is only the appointment's start when nothing else gives one: it always travels too
const AIS_MAP: FieldMap = &[(1, &[]), (3, CE)];
const AIG_MAP: FieldMap = &[(1, &[]), (3, CE)];
const AIL_MAP: FieldMap = &[(1, &[]), (3, &[])];
const AIP_MAP: FieldMap = &[(1, &[]), (3, &[])];
const RXO_MAP: FieldMap = &[
    (1, CE),
    (2, &[]),
    (3, &[]),
    (4, CE),
    (5, CE),
    (6, CE),
    (11, &[]),
    (12, CE),
    (13, &[]),
];
const RXE_MAP: FieldMap = &[
    (2, CE),
    (3, &[]),
    (4, &[]),
    (5, CE),
    (6, CE),
    (7, CE),
    (10, &[]),
    (11, CE),
    (12, &[]),
    (15, &[]),
    (21, CE),
];
const RXD_MAP: FieldMap = &[(1, &[]), (2, CE), (3, &[]), (4, &[]), (5, CE), (6, CE), (7, &[]), (8, &[]), (9, CE)];
const RXG_MAP: FieldMap = &[(1, &[]), (4, CE), (5, &[]), (6, &[]), (7, CE), (8, CE), (9, CE)];
const AL1_MAP: FieldMap = &[(1, &[]), (2, &[1, 2, 3]), (3, CE), (4, &[1, 2, 3]), (5, &[]), (6, &[])];
const IAM_MAP: FieldMap = &[
    (1, &[]),
    (2, &[1, 2, 3]),
    (3, CE),
    (4, &[1, 2, 3]),
    (5, &[]),
    (6, &[1, 2, 3]),
    (11, &[]),
    (17, &[1, 2, 3]),
];
const SPM_MAP: FieldMap = &[(1, &[]), (2, &[]), (4, CE), (8, CE), (17, &[1, 2]), (18, &[])];

pub(super) fn field_map(name: &[u8]) -> Option<FieldMap> {
    Some(match name {
        b"MSH" => MSH_MAP,
        b"EVN" => EVN_MAP,
        b"PID" => PID_MAP,
        b"PV1" => PV1_MAP,
        b"MRG" => MRG_MAP,
        b"ORC" => ORC_MAP,
        b"OBR" => OBR_MAP,
        b"OBX" => OBX_MAP,
        b"NTE" => NTE_MAP,
        b"SPM" => SPM_MAP,
        b"TQ1" => TQ1_MAP,
        b"RXA" => RXA_MAP,
        b"RXR" => RXR_MAP,
        b"TXA" => TXA_MAP,
        b"SCH" => SCH_MAP,
        b"AIS" => AIS_MAP,
        b"AIG" => AIG_MAP,
        b"AIL" => AIL_MAP,
        b"AIP" => AIP_MAP,
        b"RXO" => RXO_MAP,
        b"RXE" => RXE_MAP,
        b"RXD" => RXD_MAP,
        b"RXG" => RXG_MAP,
        b"AL1" => AL1_MAP,
        b"IAM" => IAM_MAP,
        _ => return None,
    })
}

impl<'a> Mapper<'_, 'a> {
    /// Non-empty content of a mapped segment that its table does not cover.
    pub(super) fn unmapped_fields(&self, index: usize, seg: &Segment<'a>, map: FieldMap, out: &mut Vec<UnmappedField>) {
        // one pass over the fields: looking each up by number would be quadratic in their count
        for (f, field) in seg.fields() {
            if !super::values::present(field.raw()) {
                continue;
            }
            let covered = match map.iter().find(|(n, _)| *n == f) {
                None => false,
                Some((_, [])) => true,
                Some((_, comps)) => field.repetitions().all(|r| {
                    r.components()
                        .enumerate()
                        .all(|(i, c)| c.raw().is_empty() || comps.contains(&(i + 1)))
                }),
            };
            if !covered {
                out.push(UnmappedField {
                    segment_index: index as i32 + 1,
                    segment: seg.name_str().to_owned(),
                    field: f as i32,
                    text: self.er7(field.raw()),
                });
            }
        }
    }
}
