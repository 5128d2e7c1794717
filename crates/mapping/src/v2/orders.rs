//! ORC and OBR (the orders), TQ1 (the timing of an order or appointment) and NTE (notes, which
//! belong to what they follow).

use super::values::Mapper;
use super::{After, Group, Mapped};
use sluice_hl7::Segment;
use sluice_model::time::parse_hl7;
use sluice_model::{ClinicalEvent, Order};

pub(super) fn orc<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Order;
    g.specimen_group = None;
    // a new order group: OBX after this ORC belong to its OBR (or, without one, to it)
    g.last_obr = None;
    g.last_orc = Some(ev.orders.len() as i32);
    let (placer, filler) = (m.entity_field(seg, 2), m.entity_field(seg, 3));
    ev.orders.push(Order {
        specimen_index: g.last_spm.filter(|_| g.specimen_first),
        segment: "ORC".into(),
        order_control: m.field_text(seg, 1),
        placer_order_number: placer.as_ref().map(|e| e.value.clone()),
        filler_order_number: filler.as_ref().map(|e| e.value.clone()),
        placer_entity: placer,
        filler_entity: filler,
        prior: g.prior,
        order_status: m.field_text(seg, 5),
        transaction_time: m.ts(seg, 9),
        ..Default::default()
    });
}

/// OBR: an order, with the specimen OBR-15 names (before v2.5); in specimen-first structures
/// the order of the last SPM.
pub(super) fn obr<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) {
    g.after = After::Order;
    g.specimen_group = None;
    let specimen_index = g.last_spm.filter(|_| g.specimen_first);
    if let Some(s) = specimen_index.and_then(|k| ev.specimens.get_mut(k as usize))
        && s.order_index.is_none()
    {
        s.order_index = Some(ev.orders.len() as i32);
    }
    if let Some(s) = m.obr_specimen(seg, ev.orders.len() as i32) {
        ev.specimens.push(s);
    }
    g.last_obr = Some(ev.orders.len() as i32);
    let (placer, filler) = (m.entity_field(seg, 2), m.entity_field(seg, 3));
    ev.orders.push(Order {
        specimen_index,
        segment: "OBR".into(),
        set_id: m.field_text(seg, 1),
        placer_order_number: placer.as_ref().map(|e| e.value.clone()),
        filler_order_number: filler.as_ref().map(|e| e.value.clone()),
        placer_entity: placer,
        filler_entity: filler,
        prior: g.prior,
        service: m.coded(&seg.field(4).repetition(0)),
        observation_time: m.ts(seg, 7),
        result_status: m.field_text(seg, 25),
        requested_time: m.ts(seg, 6),
        priority: m.field_text(seg, 5),
        ..Default::default()
    });
}

/// TQ1: the start and end of the appointment it follows, else the timing and priority of the
/// last order; with neither, the segment travels whole.
pub(super) fn tq1<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &mut Group) -> Mapped {
    // timing and priority of the order it follows (ORC or OBR)
    let ts = |f: usize| m.text(seg.field(f).repetition(0).component(1).raw()).and_then(|t| parse_hl7(&t));
    if g.after == After::Appointment
        && let Some(a) = ev.appointment.as_mut()
    {
        a.start = ts(7).or(a.start.take());
        a.end = ts(8).or(a.end.take());
    } else if let Some(o) = ev.orders.last_mut() {
        if let Some(p) = m.text(seg.field(9).repetition(0).component(1).raw()) {
            o.priority = Some(p);
        }
        o.timing_start = ts(7).or(o.timing_start.take());
        o.timing_end = ts(8).or(o.timing_end.take());
    } else {
        return Mapped::No;
    }
    Mapped::Yes
}

/// NTE: a note of the OBX, or the order (and its TQ1 or pharmacy segment), it follows, else of
/// the event.
pub(super) fn nte<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, ev: &mut ClinicalEvent, g: &Group) {
    let note = seg
        .field(3)
        .repetitions()
        .filter(|r| super::values::present(r.raw()))
        .map(|r| m.msg.text(r.raw()))
        .collect::<Vec<_>>()
        .join("\n");
    match g.after {
        After::Observation if let Some(o) = ev.observations.last_mut() => o.notes.push(note),
        After::Order | After::Medication if let Some(o) = ev.orders.last_mut() => o.notes.push(note),
        _ => ev.notes.push(note),
    }
}
