//! RXO, RXE, RXD and RXG (the medications of an order) and RXR (the route of a medication or
//! immunisation).

use super::results;
use super::values::Mapper;
use super::{After, Group, Mapped};
use sluice_hl7::Segment;
use sluice_model::{ClinicalEvent, Coded, Medication};

/// RXO, RXE, RXD or RXG: a medication of the last ORC.
pub(super) fn rx<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Medication;
    let order_index = g.last_orc;
    ev.medications.push(m.medication(seg, order_index));
}

/// RXR: the route and site of the immunisation (RXA) or medication it follows, when that has
/// none yet; otherwise the segment travels whole.
pub(super) fn rxr<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) -> Mapped {
    let after = g.after;
    if !((after == After::Immunisation && ev.immunisations.last().is_some_and(|i| i.route.is_none() && i.site.is_none()))
        || (after == After::Medication && ev.medications.last().is_some_and(|x| x.route.is_none() && x.site.is_none())))
    {
        return Mapped::No;
    }
    let (route, site) = (m.coded_field(seg, 1), m.coded_field(seg, 2));
    if after == After::Immunisation
        && let Some(imm) = ev.immunisations.last_mut()
    {
        (imm.route, imm.site) = (route, site);
    } else if let Some(med) = ev.medications.last_mut() {
        (med.route, med.site) = (route, site);
    }
    Mapped::Yes
}

impl<'a> Mapper<'_, 'a> {
    /// RXO, RXE, RXD or RXG as a medication of the order it follows.
    pub(super) fn medication(&self, seg: &Segment<'a>, order_index: Option<i32>) -> Medication {
        let ucum = |u: &Option<Coded>| {
            u.as_ref()
                .and_then(|u| results::ucum(u.code.as_deref(), u.text.as_deref(), u.system.as_deref()))
        };
        let mut m = Medication {
            segment: seg.name_str().to_owned(),
            order_index,
            ..Default::default()
        };
        match seg.name() {
            b"RXO" => {
                m.medication = self.coded_field(seg, 1);
                m.amount_min = self.field_text(seg, 2);
                m.amount_max = self.field_text(seg, 3);
                m.units = self.coded_field(seg, 4);
                m.dosage_form = self.coded_field(seg, 5);
                m.instructions = self.instruction_texts(seg, 6);
                m.dispense_amount = self.field_text(seg, 11);
                m.dispense_units = self.coded_field(seg, 12);
                m.refills = self.field_text(seg, 13);
            }
            b"RXE" => {
                m.medication = self.coded_field(seg, 2);
                m.amount_min = self.field_text(seg, 3);
                m.amount_max = self.field_text(seg, 4);
                m.units = self.coded_field(seg, 5);
                m.dosage_form = self.coded_field(seg, 6);
                m.instructions = self.instruction_texts(seg, 7);
                m.instructions.extend(self.instruction_texts(seg, 21));
                m.dispense_amount = self.field_text(seg, 10);
                m.dispense_units = self.coded_field(seg, 11);
                m.refills = self.field_text(seg, 12);
                m.prescription_number = self.field_text(seg, 15);
            }
            b"RXD" => {
                m.medication = self.coded_field(seg, 2);
                m.time = self.ts(seg, 3);
                m.amount_min = self.field_text(seg, 4);
                m.units = self.coded_field(seg, 5);
                m.dosage_form = self.coded_field(seg, 6);
                m.prescription_number = self.field_text(seg, 7);
                m.refills = self.field_text(seg, 8);
                m.instructions = self.instruction_texts(seg, 9);
            }
            _ => {
                m.medication = self.coded_field(seg, 4);
                m.amount_min = self.field_text(seg, 5);
                m.amount_max = self.field_text(seg, 6);
                m.units = self.coded_field(seg, 7);
                m.dosage_form = self.coded_field(seg, 8);
                m.instructions = self.instruction_texts(seg, 9);
            }
        }
        m.units_ucum = ucum(&m.units);
        m
    }
}
