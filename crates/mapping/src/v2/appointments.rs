//! SCH (the appointment) and AIS, AIG, AIL and AIP (its services, resources, locations and staff).

use super::values::Mapper;
use super::{After, Group, Mapped};
use sluice_hl7::Segment;
use sluice_model::time::parse_hl7;
use sluice_model::{Appointment, ClinicalEvent};

/// The first SCH: the appointment.
pub(super) fn sch<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Appointment;
    ev.appointment = Some(m.appointment(seg));
}

/// AIS (a service), AIG (a resource), AIL (a location) or AIP (staff) of the appointment; without
/// an appointment, the segment travels whole.
pub(super) fn resource<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent) -> Mapped {
    let Some(a) = ev.appointment.as_mut() else {
        return Mapped::No;
    };
    match seg.name() {
        b"AIS" => {
            a.services.extend(m.coded_field(seg, 3));
            if a.start.is_none() {
                a.start = m.ts(seg, 4);
            }
        }
        b"AIG" => a.resources.extend(m.coded_field(seg, 3)),
        b"AIL" => a.locations.extend(m.field_er7(seg, 3)),
        _ => a.staff.extend(m.field_er7(seg, 3)),
    }
    Mapped::Yes
}

impl<'a> Mapper<'_, 'a> {
    pub(super) fn appointment(&self, sch: &Segment<'a>) -> Appointment {
        let tq = sch.field(11).repetition(0);
        let ts = |n: usize| self.text(tq.component(n).subcomponent(1)).and_then(|t| parse_hl7(&t));
        let (placer, filler) = (self.entity_field(sch, 1), self.entity_field(sch, 2));
        Appointment {
            placer_id: placer.as_ref().map(|e| e.value.clone()),
            filler_id: filler.as_ref().map(|e| e.value.clone()),
            placer_entity: placer,
            filler_entity: filler,
            event_reason: self.coded_field(sch, 6),
            reason: self.coded_field(sch, 7),
            appointment_type: self.coded_field(sch, 8),
            duration: self.field_text(sch, 9),
            duration_units: self.coded_field(sch, 10),
            start: ts(4),
            end: ts(5),
            status: self.first_component(sch, 25),
            ..Default::default()
        }
    }
}
