//! AllergyIntolerance.

use super::Mapper;
use super::values::{coded, coded_at, ts};
use serde_json::Value;
use sluice_fhir::{items, text_at};
use sluice_model::Allergy;

impl<'v> Mapper<'_, 'v> {
    pub(super) fn allergy(&mut self, r: &Value) {
        self.ev.allergies.push(Allergy {
            set_id: Some((self.ev.allergies.len() + 1).to_string()),
            category: text_at(r, &["category"]),
            allergen: coded_at(r, "code"),
            severity: text_at(r, &["criticality"]),
            reactions: items(r, "reaction")
                .into_iter()
                .flat_map(|x| items(x, "manifestation"))
                .filter_map(coded)
                .filter_map(|c| c.text.or(c.code))
                .collect(),
            identified_time: ts(r, &["onsetDateTime"]).or_else(|| ts(r, &["recordedDate"])),
            clinical_status: text_at(r, &["clinicalStatus", "coding", "code"]),
            verification_status: text_at(r, &["verificationStatus", "coding", "code"]),
        });
    }
}
