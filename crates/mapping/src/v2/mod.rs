//! HL7 v2 message to canonical [`ClinicalEvent`]. Pure: bytes in, event out.
//!
//! Every segment the model maps has a table of the fields (and components) it maps. Any other
//! non-empty field of a mapped segment travels in `unmapped_fields`, and every segment the model
//! does not map at all (Z-segments, NK1, DG1, PRT, RXC ...) travels whole in
//! `unmapped_segments`: nothing in the message is silently discarded.

mod allergies;
mod appointments;
mod fields;
mod patient;
mod pharmacy;
pub mod results;
mod specimens;
#[cfg(test)]
mod tests;
mod values;

pub use crate::{NHS_NUMBER_SYSTEM, RawPosition};
use fields::field_map;
use sluice_hl7::Message;
use sluice_model::time::parse_hl7;
use sluice_model::{ClinicalEvent, Document, EventSource, Immunisation, Merge, Observation, Order, RawMessage, Specimen, UnmappedSegment};
use values::Mapper;

pub fn kind_of(message_type: &str) -> &'static str {
    match message_type {
        "ADT" => "adt",
        "ORU" | "OUL" => "result",
        "ORM" | "OML" | "OMG" | "OMP" | "ORR" => "order",
        "SIU" => "schedule",
        "MDM" => "document",
        "VXU" => "immunisation",
        "RDE" | "RDS" | "RAS" => "pharmacy",
        _ => "generic",
    }
}

/// What the last mapped segment started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Other,
    Order,
    Observation,
    Specimen,
    Immunisation,
    Medication,
    Appointment,
}

/// Maps a parsed message. The event id and source position are filled in by the caller.
pub fn map_message(msg: &Message<'_>, raw: &RawMessage, pos: &RawPosition) -> ClinicalEvent {
    let m = Mapper { msg };
    let msh = msg.segment(0);
    let t = |n| m.text(msh.field(n).raw()).unwrap_or_default();
    let typ = msh.field(9).repetition(0);
    let message_type = m.text(typ.component(1).raw()).unwrap_or_default();
    let mut ev = ClinicalEvent {
        event_id: sluice_model::ids::hl7_event_id(msg),
        kind: kind_of(&message_type).to_owned(),
        message_type,
        trigger_event: m.text(typ.component(2).raw()).unwrap_or_default(),
        message_structure: m.text(typ.component(3).raw()).unwrap_or_default(),
        source: EventSource {
            sending_application: t(3),
            sending_facility: t(4),
            receiving_application: t(5),
            receiving_facility: t(6),
            control_id: t(10),
            version: t(12),
            processing_id: t(11),
            raw_id: raw.raw_id.clone(),
            raw_topic: pos.topic.clone(),
            raw_partition: pos.partition,
            raw_offset: pos.offset,
            transport: raw.transport.clone(),
            charset: msg.charset().as_str().to_owned(),
            replay: pos.replay,
        },
        message_time: m.ts(&msh, 7),
        warnings: msg.problems().iter().map(|p| p.code.as_str().to_owned()).collect(),
        ..Default::default()
    };
    // in these structures an SPM starts a group and the orders after it belong to it
    let specimen_first = matches!(
        (ev.message_type.as_str(), ev.trigger_event.as_str()),
        ("OUL", "R22" | "R23") | ("OML", "O33" | "O35")
    );
    // what the last mapped segment started: decides where NTE, TQ1 and RXR belong
    let mut after = After::Other;
    // the SPM whose OBX segments follow (until the next ORC/OBR)
    let mut specimen_group: Option<i32> = None;
    // the last SPM: in specimen-first structures, the orders after it are its orders
    let mut last_spm: Option<i32> = None;
    for (i, seg) in msg.segments().enumerate() {
        let name = seg.name();
        match name {
            b"MSH" => {}
            b"EVN" => ev.event_time = m.ts(&seg, 2),
            b"PID" if ev.patient.is_none() => {
                after = After::Other;
                ev.patient = Some(m.patient(&seg));
            }
            // A24 link / A37 unlink: the second PID is the other record
            b"PID" if ev.merge.is_none() && matches!(ev.trigger_event.as_str(), "A24" | "A37") && ev.message_type == "ADT" => {
                after = After::Other;
                ev.merge = Some(Merge {
                    prior_identifiers: m.identifiers(&seg, 3),
                    kind: Merge::kind_of(&ev.trigger_event).to_owned(),
                    ..Default::default()
                });
            }
            b"PV1" if ev.encounter.is_none() => {
                after = After::Other;
                ev.encounter = Some(m.encounter(&seg));
            }
            b"AL1" | b"IAM" => {
                after = After::Other;
                ev.allergies.push(m.allergy(&seg));
            }
            b"SCH" if ev.appointment.is_none() => {
                after = After::Appointment;
                ev.appointment = Some(m.appointment(&seg));
            }
            b"AIS" | b"AIG" | b"AIL" | b"AIP" if ev.appointment.is_some() => {
                if let Some(a) = ev.appointment.as_mut() {
                    match name {
                        b"AIS" => {
                            a.services.extend(m.coded_field(&seg, 3));
                            if a.start.is_none() {
                                a.start = m.ts(&seg, 4);
                            }
                        }
                        b"AIG" => a.resources.extend(m.coded_field(&seg, 3)),
                        b"AIL" => a.locations.extend(m.field_er7(&seg, 3)),
                        _ => a.staff.extend(m.field_er7(&seg, 3)),
                    }
                }
            }
            b"RXO" | b"RXE" | b"RXD" | b"RXG" => {
                after = After::Medication;
                let order_index = ev.orders.iter().rposition(|o| o.segment == "ORC").map(|i| i as i32);
                ev.medications.push(m.medication(&seg, order_index));
            }
            b"MRG" if ev.merge.is_none() => {
                ev.merge = Some(Merge {
                    prior_identifiers: m.identifiers(&seg, 1),
                    prior_account: m.field_text(&seg, 3),
                    prior_visit: m.field_text(&seg, 5),
                    kind: Merge::kind_of(&ev.trigger_event).to_owned(),
                });
            }
            b"ORC" => {
                after = After::Order;
                specimen_group = None;
                ev.orders.push(Order {
                    specimen_index: last_spm.filter(|_| specimen_first),
                    segment: "ORC".into(),
                    order_control: m.field_text(&seg, 1),
                    placer_order_number: m.field_text(&seg, 2),
                    filler_order_number: m.field_text(&seg, 3),
                    order_status: m.field_text(&seg, 5),
                    transaction_time: m.ts(&seg, 9),
                    ..Default::default()
                });
            }
            b"OBR" => {
                after = After::Order;
                specimen_group = None;
                let specimen_index = last_spm.filter(|_| specimen_first);
                if let Some(s) = specimen_index.and_then(|k| ev.specimens.get_mut(k as usize))
                    && s.order_index.is_none()
                {
                    s.order_index = Some(ev.orders.len() as i32);
                }
                if let Some(s) = m.obr_specimen(&seg, ev.orders.len() as i32) {
                    ev.specimens.push(s);
                }
                ev.orders.push(Order {
                    specimen_index,
                    segment: "OBR".into(),
                    set_id: m.field_text(&seg, 1),
                    placer_order_number: m.field_text(&seg, 2),
                    filler_order_number: m.field_text(&seg, 3),
                    service: m.coded(&seg.field(4).repetition(0)),
                    observation_time: m.ts(&seg, 7),
                    result_status: m.field_text(&seg, 25),
                    requested_time: m.ts(&seg, 6),
                    priority: m.field_text(&seg, 5),
                    ..Default::default()
                });
            }
            b"TXA" if ev.document.is_none() => {
                ev.document = Some(Document {
                    document_type: m.field_text(&seg, 2),
                    activity_time: m.ts(&seg, 4),
                    unique_id: m.text(seg.field(12).raw()).map(|_| m.er7(seg.field(12).raw())),
                    parent_id: m.text(seg.field(13).raw()).map(|_| m.er7(seg.field(13).raw())),
                    file_name: m.field_text(&seg, 16),
                    completion_status: m.field_text(&seg, 17),
                    confidentiality: m.field_text(&seg, 18),
                    availability: m.field_text(&seg, 19),
                });
            }
            b"RXA" => {
                after = After::Immunisation;
                let units = m.coded(&seg.field(7).repetition(0));
                ev.immunisations.push(Immunisation {
                    administered_time: m.ts(&seg, 3),
                    vaccine: m.coded(&seg.field(5).repetition(0)),
                    amount: m.field_text(&seg, 6),
                    units_ucum: units
                        .as_ref()
                        .and_then(|u| results::ucum(u.code.as_deref(), u.text.as_deref(), u.system.as_deref())),
                    units,
                    lot_numbers: seg.field(15).repetitions().filter_map(|r| m.text(r.raw())).collect(),
                    expiry: m.ts(&seg, 16),
                    manufacturer: m.coded(&seg.field(17).repetition(0)),
                    completion_status: m.field_text(&seg, 20),
                    action: m.field_text(&seg, 21),
                    route: None,
                    site: None,
                });
            }
            b"RXR"
                if (after == After::Immunisation && ev.immunisations.last().is_some_and(|i| i.route.is_none() && i.site.is_none()))
                    || (after == After::Medication && ev.medications.last().is_some_and(|x| x.route.is_none() && x.site.is_none())) =>
            {
                let (route, site) = (m.coded_field(&seg, 1), m.coded_field(&seg, 2));
                if after == After::Immunisation
                    && let Some(imm) = ev.immunisations.last_mut()
                {
                    (imm.route, imm.site) = (route, site);
                } else if let Some(med) = ev.medications.last_mut() {
                    (med.route, med.site) = (route, site);
                }
            }
            b"TQ1" => {
                // timing and priority of the order it follows (ORC or OBR)
                let ts = |f: usize| m.text(seg.field(f).repetition(0).component(1).raw()).and_then(|t| parse_hl7(&t));
                if after == After::Appointment
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
                    ev.unmapped_segments.push(UnmappedSegment {
                        index: i as i32 + 1,
                        name: seg.name_str().to_owned(),
                        text: m.er7(seg.raw()),
                    });
                    continue;
                }
            }
            b"OBX" => {
                after = After::Observation;
                // an OBX of a specimen group in a specimen-first structure belongs to no order
                let order_index = ev
                    .orders
                    .iter()
                    .rposition(|o| o.segment == "OBR")
                    .map(|i| i as i32)
                    .filter(|_| !(specimen_first && specimen_group.is_some()));
                let value_type = m.field_text(&seg, 2);
                let code = m.coded(&seg.field(3).repetition(0));
                let units = m.coded(&seg.field(6).repetition(0));
                let result_status = m.field_text(&seg, 11);
                let sub_id = m.field_text(&seg, 4);
                let order = order_index.and_then(|i| ev.orders.get(i as usize));
                let order_number = order.and_then(|o| o.filler_order_number.as_deref().or(o.placer_order_number.as_deref()));
                let result_key = results::result_key(
                    &ev.source.sending_facility,
                    order_number,
                    code.as_ref().and_then(|c| c.code.as_deref()),
                    code.as_ref().and_then(|c| c.system.as_deref()),
                    sub_id.as_deref(),
                );
                let units_ucum = units
                    .as_ref()
                    .and_then(|u| results::ucum(u.code.as_deref(), u.text.as_deref(), u.system.as_deref()));
                ev.observations.push(Observation {
                    set_id: m.field_text(&seg, 1),
                    order_index,
                    code,
                    sub_id,
                    // ED (encapsulated data, e.g. base64 documents) is kept as sent, components included
                    values: seg
                        .field(5)
                        .repetitions()
                        .map(|r| {
                            if value_type.as_deref() == Some("ED") {
                                m.er7(r.raw())
                            } else {
                                msg.text(r.raw())
                            }
                        })
                        .collect(),
                    value_type,
                    units,
                    reference_range: m.field_text(&seg, 7),
                    abnormal_flags: seg.field(8).repetitions().filter_map(|r| m.text(r.raw())).collect(),
                    status: result_status.as_deref().and_then(results::observation_status).map(str::to_owned),
                    result_status,
                    observation_time: m.ts(&seg, 14),
                    notes: Vec::new(),
                    result_key,
                    units_ucum,
                    specimen_index: specimen_group,
                });
            }
            b"SPM" => {
                after = After::Specimen;
                specimen_group = Some(ev.specimens.len() as i32);
                last_spm = specimen_group;
                let collection = seg.field(17).repetition(0);
                let ts = |raw: &[u8]| m.text(raw).and_then(|t| parse_hl7(&t));
                ev.specimens.push(Specimen {
                    set_id: m.field_text(&seg, 1),
                    // specimen-first: set by the first OBR of its group
                    order_index: ev
                        .orders
                        .iter()
                        .rposition(|o| o.segment == "OBR")
                        .map(|i| i as i32)
                        .filter(|_| !specimen_first),
                    identifier: m.text(seg.field(2).raw()).map(|_| m.er7(seg.field(2).raw())),
                    specimen_type: m.coded(&seg.field(4).repetition(0)),
                    source_site: m.coded(&seg.field(8).repetition(0)),
                    collection_time: ts(collection.component(1).subcomponent(1)),
                    collection_end: ts(collection.component(2).subcomponent(1)),
                    received_time: m.ts(&seg, 18),
                });
            }
            b"NTE" => {
                let note = seg.field(3).repetitions().map(|r| msg.text(r.raw())).collect::<Vec<_>>().join("\n");
                match after {
                    After::Observation if let Some(o) = ev.observations.last_mut() => o.notes.push(note),
                    After::Order | After::Medication if let Some(o) = ev.orders.last_mut() => o.notes.push(note),
                    _ => ev.notes.push(note),
                }
            }
            _ => {
                ev.unmapped_segments.push(UnmappedSegment {
                    index: i as i32 + 1,
                    name: seg.name_str().to_owned(),
                    text: m.er7(seg.raw()),
                });
                continue;
            }
        }
        // a repeated PID/PV1/MRG/SCH is not mapped again: it travels whole
        let mapped_now = match name {
            b"SCH" => msg.segments().take(i).all(|s| s.name() != b"SCH"),
            // a second PID (A24/A37's other record, whose identifiers are also in `merge`)
            // travels whole
            b"PID" => msg.segments().take(i).all(|s| s.name() != b"PID"),
            b"PV1" => msg.segments().take(i).all(|s| s.name() != b"PV1"),
            b"MRG" => msg.segments().take(i).all(|s| s.name() != b"MRG"),
            _ => true,
        };
        if !mapped_now {
            ev.unmapped_segments.push(UnmappedSegment {
                index: i as i32 + 1,
                name: seg.name_str().to_owned(),
                text: m.er7(seg.raw()),
            });
        } else if let Some(map) = field_map(name) {
            m.unmapped_fields(i, &seg, map, &mut ev.unmapped_fields);
        }
    }
    ev
}
