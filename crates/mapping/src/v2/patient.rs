//! PID (the patient, or in A24/A37 the other record), PV1 (the encounter) and MRG (the merge).

use super::values::Mapper;
use super::{After, Group, Mapped};
use sluice_hl7::Segment;
use sluice_model::{Address, ClinicalEvent, Encounter, Identifier, Merge, Patient, PersonName};

/// The first PID: the patient.
pub(super) fn pid<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Other;
    ev.patient = Some(m.patient(seg));
}

/// A second PID. A24 link / A37 unlink: the second PID is the other record; a second PID
/// (A24/A37's other record, whose identifiers are also in `merge`) travels whole.
pub(super) fn other_record<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) -> Mapped {
    if !(ev.merge.is_none() && matches!(ev.trigger_event.as_str(), "A24" | "A37") && ev.message_type == "ADT") {
        return Mapped::No;
    }
    g.after = After::Other;
    ev.merge = Some(Merge {
        prior_identifiers: m.identifiers(seg, 3),
        kind: Merge::kind_of(&ev.trigger_event).to_owned(),
        ..Default::default()
    });
    Mapped::Yes
}

/// The first PV1: the encounter.
pub(super) fn pv1<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Other;
    ev.encounter = Some(m.encounter(seg));
}

/// MRG: the record merged, moved or changed, unless a merge is already mapped.
pub(super) fn mrg<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent) -> Mapped {
    if ev.merge.is_some() {
        return Mapped::No;
    }
    ev.merge = Some(Merge {
        prior_identifiers: m.identifiers(seg, 1),
        prior_account: m.field_text(seg, 3),
        prior_visit: m.field_text(seg, 5),
        kind: Merge::kind_of(&ev.trigger_event).to_owned(),
    });
    Mapped::Yes
}

impl<'a> Mapper<'_, 'a> {
    pub(super) fn patient(&self, pid: &Segment<'a>) -> Patient {
        let mut identifiers = self.identifiers(pid, 3);
        identifiers.extend(self.identifiers(pid, 2));
        identifiers.extend(self.identifiers(pid, 4));
        // PID-19 social security number and PID-20 driver's licence (number^issuing authority):
        // identifiers of the person, typed so that matching does not use them as record numbers
        if let Some(ssn) = self.first_component(pid, 19) {
            identifiers.push(Identifier {
                value: ssn,
                type_code: Some("SS".into()),
                ..Default::default()
            });
        }
        let dl = pid.field(20).repetition(0);
        if let Some(number) = self.text(dl.component(1).raw()) {
            identifiers.push(Identifier {
                value: number,
                type_code: Some("DL".into()),
                assigning_authority: self.text(dl.component(2).raw()),
                ..Default::default()
            });
        }
        let names = self.person_names(pid, 5);
        let addresses = pid
            .field(11)
            .repetitions()
            .filter(|r| super::values::present(r.raw()))
            .map(|r| {
                let c = |n| self.text(r.component(n).raw());
                Address {
                    lines: [self.text(r.component(1).subcomponent(1)), c(2)].into_iter().flatten().collect(),
                    city: c(3),
                    district: c(4),
                    postcode: c(5),
                    country: c(6),
                    type_code: c(7),
                }
            })
            .collect();
        Patient {
            identifiers,
            names,
            birth_date: self.ts(pid, 7),
            sex: self.field_text(pid, 8),
            addresses,
            death_time: self.ts(pid, 29),
            deceased: self.field_text(pid, 30),
            aliases: self.person_names(pid, 9),
        }
    }

    /// The XPN repetitions of a field (PID-5 names, PID-9 aliases).
    fn person_names(&self, pid: &Segment<'a>, field: usize) -> Vec<PersonName> {
        pid.field(field)
            .repetitions()
            .filter(|r| super::values::present(r.raw()))
            .map(|r| {
                let c = |n| self.text(r.component(n).raw());
                PersonName {
                    family: self.text(r.component(1).subcomponent(1)),
                    given: c(2),
                    middle: c(3),
                    suffix: c(4),
                    prefix: c(5),
                    type_code: c(7),
                }
            })
            .collect()
    }

    pub(super) fn encounter(&self, pv1: &Segment<'a>) -> Encounter {
        Encounter {
            patient_class: self.field_text(pv1, 2),
            location: self.text(pv1.field(3).raw()).map(|_| self.er7(pv1.field(3).raw())),
            prior_location: self.text(pv1.field(6).raw()).map(|_| self.er7(pv1.field(6).raw())),
            admission_type: self.field_text(pv1, 4),
            hospital_service: self.field_text(pv1, 10),
            visit_number: self.identifier(&pv1.field(19).repetition(0)),
            admit_time: self.ts(pv1, 44),
            discharge_time: self.ts(pv1, 45),
        }
    }
}
