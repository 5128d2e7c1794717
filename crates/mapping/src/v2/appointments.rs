//! SCH: the appointment.

use super::values::Mapper;
use sluice_hl7::Segment;
use sluice_model::Appointment;
use sluice_model::time::parse_hl7;

impl<'a> Mapper<'_, 'a> {
    pub(super) fn appointment(&self, sch: &Segment<'a>) -> Appointment {
        let tq = sch.field(11).repetition(0);
        let ts = |n: usize| self.text(tq.component(n).subcomponent(1)).and_then(|t| parse_hl7(&t));
        Appointment {
            placer_id: self.field_er7(sch, 1),
            filler_id: self.field_er7(sch, 2),
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
