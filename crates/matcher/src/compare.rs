//! Comparing two records field by field: the level of each field, its weight and the total.

use crate::index::{Index, NodeId};
use crate::text::{self, DateAgreement};
use crate::weights::{FIELDS, LEVELS, MISSING};

/// The level of each field (see [`crate::weights::LEVELS`]), or [`MISSING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Levels(pub [u8; 8]);

pub const GIVEN: usize = 0;
pub const FAMILY: usize = 1;
pub const DOB: usize = 2;
pub const SEX: usize = 3;
pub const POSTCODE: usize = 4;
pub const ADDRESS: usize = 5;
pub const NHS: usize = 6;
pub const MRN: usize = 7;

/// One field's part of the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldEvidence {
    pub field: &'static str,
    pub level: &'static str,
    pub weight: f32,
}

impl Levels {
    /// The field, level name and weight of every compared field.
    pub fn evidence(&self, ix: &Index) -> Vec<FieldEvidence> {
        FIELDS
            .iter()
            .enumerate()
            .map(|(f, field)| {
                let l = self.0[f];
                FieldEvidence {
                    field,
                    level: if l == MISSING {
                        "missing"
                    } else {
                        LEVELS[f].get(usize::from(l)).copied().unwrap_or("missing")
                    },
                    weight: ix.weights.weight(f, l),
                }
            })
            .collect()
    }

    pub fn total(&self, ix: &Index) -> f32 {
        (0..8).map(|f| ix.weights.weight(f, self.0[f])).sum()
    }

    /// Same surname, birth date and address, different given names: twins (or siblings
    /// born together), never linked automatically whatever the score.
    pub fn twins(&self) -> bool {
        matches!(self.0[FAMILY], 0 | 1) && self.0[DOB] == 0 && (self.0[POSTCODE] == 0 || self.0[ADDRESS] == 0) && self.0[GIVEN] == 4
    }

    /// Two different valid NHS numbers: never one person.
    pub fn nhs_conflict(&self) -> bool {
        self.0[NHS] == 1
    }
}

impl Index {
    fn name_level(&self, a: u32, b: u32, other: bool) -> u8 {
        if a == 0 || b == 0 {
            return MISSING;
        }
        if a == b {
            return if other { 1 } else { 0 };
        }
        let jw = text::jaro_winkler(self.names.get(a), self.names.get(b));
        if jw >= self.weights.file.jaro_winkler_close {
            2
        } else if jw >= self.weights.file.jaro_winkler_similar || self.names.sound(a) == self.names.sound(b) {
            3
        } else {
            4
        }
    }

    /// The levels of two records: for each field the best agreement over all their values.
    pub fn compare(&self, a: NodeId, b: NodeId) -> Levels {
        let (x, y) = (self.node(a), self.node(b));
        let mut l = [MISSING; 8];
        for (fa, ga, oa) in x.names() {
            for (fb, gb, ob) in y.names() {
                l[GIVEN] = l[GIVEN].min(self.name_level(ga, gb, oa || ob));
                l[FAMILY] = l[FAMILY].min(self.name_level(fa, fb, oa || ob));
            }
        }
        for da in x.dobs() {
            for db in y.dobs() {
                let level = match text::compare_dates(da, db) {
                    DateAgreement::Exact => 0,
                    DateAgreement::Transposed => 1,
                    DateAgreement::Near => 2,
                    DateAgreement::Different => 3,
                };
                l[DOB] = l[DOB].min(level);
            }
        }
        if x.sex != 0 && y.sex != 0 {
            l[SEX] = u8::from(x.sex != y.sex);
        }
        for pa in x.postcodes() {
            for pb in y.postcodes() {
                let level = if pa == pb {
                    0
                } else if text::outward(pa) == text::outward(pb) {
                    1
                } else {
                    2
                };
                l[POSTCODE] = l[POSTCODE].min(level);
            }
        }
        for aa in x.addrs() {
            for ab in y.addrs() {
                let (ta, tb) = (self.addr_text(aa), self.addr_text(ab));
                let level = if ta == tb {
                    0
                } else {
                    let (ha, sa) = text::house_and_street(ta);
                    let (hb, sb) = text::house_and_street(tb);
                    if ha.is_some() && ha == hb && sa == sb { 1 } else { 2 }
                };
                l[ADDRESS] = l[ADDRESS].min(level);
            }
        }
        if x.nhs != 0 && y.nhs != 0 {
            l[NHS] = u8::from(x.nhs != y.nhs);
        }
        let authorities =
            |n: &crate::index::Node| -> Vec<String> { n.keys().filter_map(crate::profile::authority_of).map(str::to_owned).collect() };
        let (ax, ay) = (authorities(x), authorities(y));
        if !ax.is_empty() && !ay.is_empty() {
            l[MRN] = if ay.iter().any(|a| ax.contains(a)) { 0 } else { 1 };
        }
        Levels(l)
    }
}
