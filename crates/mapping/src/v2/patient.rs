//! PID (the patient) and PV1 (the encounter).

use super::values::Mapper;
use sluice_hl7::Segment;
use sluice_model::{Address, Encounter, Identifier, Patient, PersonName};

impl<'a> Mapper<'_, 'a> {
    pub(super) fn patient(&self, pid: &Segment<'a>) -> Patient {
        let mut identifiers = self.identifiers(pid, 3);
        identifiers.extend(self.identifiers(pid, 2));
        identifiers.extend(self.identifiers(pid, 4));
        // PID-19 social security number and PID-20 driver's licence (number^issuing authority):
        // identifiers of the person, typed so that matching does not use them as record numbers
        if let Some(ssn) = self.field_text(pid, 19) {
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
        let names = pid
            .field(5)
            .repetitions()
            .filter(|r| !r.is_empty())
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
            .collect();
        let addresses = pid
            .field(11)
            .repetitions()
            .filter(|r| !r.is_empty())
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
        }
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
