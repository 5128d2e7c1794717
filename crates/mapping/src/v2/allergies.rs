//! AL1 and IAM: allergies.

use super::values::Mapper;
use super::{After, Group};
use sluice_hl7::Segment;
use sluice_model::{Allergy, ClinicalEvent};

pub(super) fn al1_iam<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Other;
    ev.allergies.push(m.allergy(seg));
}

impl<'a> Mapper<'_, 'a> {
    /// AL1, or IAM (ADT A60), whose action code (IAM-6) and clinical status (IAM-17, HL7 table
    /// 0438) are read as FHIR clinical and verification statuses.
    pub(super) fn allergy(&self, seg: &Segment<'a>) -> Allergy {
        let mut a = Allergy {
            set_id: self.field_text(seg, 1),
            category: self.first_component(seg, 2),
            allergen: self.coded_field(seg, 3),
            severity: self.first_component(seg, 4),
            reactions: seg.field(5).repetitions().filter_map(|r| self.text(r.raw())).collect(),
            identified_time: self.ts(seg, 6),
            clinical_status: None,
            verification_status: None,
        };
        if seg.name() == b"IAM" {
            a.identified_time = self.ts(seg, 11).or_else(|| self.ts(seg, 13));
            let (clinical, verification) = match self.first_component(seg, 17).as_deref() {
                Some("R") => (Some("active"), Some("confirmed")),
                Some("I") => (Some("inactive"), Some("confirmed")),
                Some("U" | "P" | "S" | "D") => (Some("active"), Some("unconfirmed")),
                Some("E") => (None, Some("entered-in-error")),
                _ => (None, None),
            };
            a.clinical_status = clinical.map(str::to_owned);
            a.verification_status = verification.map(str::to_owned);
            if self.first_component(seg, 6).as_deref() == Some("D") {
                a.verification_status = Some("entered-in-error".into());
            }
        }
        a
    }
}
