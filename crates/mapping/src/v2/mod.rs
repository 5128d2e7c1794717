//! HL7 v2 message to canonical [`ClinicalEvent`]. Pure: bytes in, event out.
//!
//! Every segment the model maps has a table of the fields (and components) it maps. Any other
//! non-empty field of a mapped segment travels in `unmapped_fields`, and every segment the model
//! does not map at all (Z-segments, NK1, DG1, PRT, RXC ...) travels whole in
//! `unmapped_segments`: nothing in the message is silently discarded.
//!
//! [`map_message`] reads the segments in order and gives each, by its name, to the mapper of its
//! segment group (one module each), over a `Group`: where the segments being read belong in
//! the message structure (the specimen group, what the last mapped segment started, which
//! singleton segments came already).

mod allergies;
mod appointments;
mod documents;
mod fields;
mod immunisation;
mod orders;
mod patient;
mod pharmacy;
pub mod results;
mod specimens;
#[cfg(test)]
mod tests;
mod values;

pub use crate::{NHS_NUMBER_SYSTEM, RawPosition};
use fields::field_map;
use sluice_hl7::{Message, Segment};
use sluice_model::{ClinicalEvent, EventSource, ExplicitNull, RawMessage, UnmappedSegment};
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

/// The segments of which only the first is mapped, and whether one has come yet.
#[derive(Debug, Default)]
struct Singletons {
    pid: bool,
    pv1: bool,
    mrg: bool,
    sch: bool,
    txa: bool,
}

impl Singletons {
    /// Notes a segment: whether one of its name (a singleton) came before.
    fn repeat(&mut self, name: &[u8]) -> bool {
        let seen = match name {
            b"PID" => &mut self.pid,
            b"PV1" => &mut self.pv1,
            b"MRG" => &mut self.mrg,
            b"SCH" => &mut self.sch,
            b"TXA" => &mut self.txa,
            _ => return false,
        };
        std::mem::replace(seen, true)
    }
}

/// Where the segments being read belong: what the message structure has said so far.
#[derive(Debug)]
struct Group {
    /// in these structures an SPM starts a group and the orders after it belong to it
    specimen_first: bool,
    /// what the last mapped segment started: decides where NTE, TQ1 and RXR belong
    after: After,
    /// the SPM whose OBX segments follow (until the next ORC/OBR)
    specimen_group: Option<i32>,
    /// the last SPM: in specimen-first structures, the orders after it are its orders
    last_spm: Option<i32>,
    /// the singleton segments already read
    seen: Singletons,
    /// the last OBR and the last ORC among the orders, so each OBX, SPM or pharmacy segment finds
    /// its order without searching back through the others
    last_obr: Option<i32>,
    last_orc: Option<i32>,
    /// in an order message (OML, OMG, OMI), a PID, PV1 or AL1 after an order starts a prior-result
    /// group (PRIOR_RESULT): the orders and results after it are earlier results sent as
    /// context, until FT1, CTI or BLG closes the order group. Read greedily, as the standard's
    /// grammar reads it: an ORC after prior results stays in the prior group.
    prior: bool,
    /// how many OBX so far had each result key (see [`results::repeated`])
    result_keys: std::collections::HashMap<String, usize>,
}

impl Group {
    /// Follows the structure before a segment is mapped: a patient or visit segment, or an
    /// allergy, after an order in an order message starts a prior-result group; FT1, CTI or BLG
    /// (the rest of the order group) ends it.
    fn note_structure(&mut self, name: &[u8], ev: &ClinicalEvent) {
        let order_message = matches!(ev.message_type.as_str(), "OML" | "OMG" | "OMI");
        if order_message && !ev.orders.is_empty() && matches!(name, b"PID" | b"PD1" | b"PV1" | b"PV2" | b"AL1") {
            self.prior = true;
        } else if matches!(name, b"FT1" | b"CTI" | b"BLG") {
            self.prior = false;
        }
    }

    /// Whether a PID (after the first) is another patient: not the other record of an A24 link
    /// or A37 unlink, and not the patient of a prior-result group.
    fn starts_another_patient(&self, ev: &ClinicalEvent) -> bool {
        let link = ev.message_type == "ADT" && matches!(ev.trigger_event.as_str(), "A24" | "A37");
        !link && !self.prior && ev.patient.is_some()
    }

    fn new(ev: &ClinicalEvent) -> Group {
        Group {
            specimen_first: matches!(
                (ev.message_type.as_str(), ev.trigger_event.as_str()),
                ("OUL", "R22" | "R23") | ("OML", "O33" | "O35")
            ),
            after: After::Other,
            specimen_group: None,
            last_spm: None,
            seen: Singletons::default(),
            last_obr: None,
            last_orc: None,
            prior: false,
            result_keys: std::collections::HashMap::new(),
        }
    }
}

/// Whether a segment went into the model (its other fields then travel in `unmapped_fields`) or
/// travels whole in `unmapped_segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapped {
    Yes,
    No,
}

/// Maps a parsed message into its events, one per patient: every PID group (a BAR^P02 visit,
/// each patient of an ORU with several PATIENT_RESULT groups, each record of an A40 merging
/// several, the two patients of an A17 swap) is an event of its own, carrying the segments before
/// the first PID (MSH, EVN ...) as well. A second PID that is not another patient (the other
/// record of an A24 link or A37 unlink, a prior-result group's patient) stays in its event. Each
/// event has the message's identity (see [`sluice_model::ids::hl7_identity`]); the second
/// patient's event id is told apart by `patient-2`, and so on; a message of several patients
/// says so in each event's warnings (`message_has_several_patients`).
pub fn map_message(msg: &Message<'_>, raw: &RawMessage, pos: &RawPosition) -> Vec<ClinicalEvent> {
    let m = Mapper { msg };
    let mut ev = header(&m, raw, pos);
    let mut g = Group::new(&ev);
    let mut events = Vec::new();
    // the event as it stood before its first PID: what every further patient's event starts from
    let mut before_patients: Option<ClinicalEvent> = None;
    for (i, seg) in msg.segments().enumerate() {
        g.note_structure(seg.name(), &ev);
        if seg.name() == b"PID" {
            match &before_patients {
                None => before_patients = Some(ev.clone()),
                Some(start) if g.starts_another_patient(&ev) => {
                    events.push(std::mem::replace(&mut ev, start.clone()));
                    g = Group::new(&ev);
                }
                Some(_) => {}
            }
        }
        // a repeated PID/PV1/MRG/SCH/TXA is not mapped again: it travels whole
        let repeat = g.seen.repeat(seg.name());
        if map_segment(&m, &seg, repeat, &mut ev, &mut g) == Mapped::No || repeat {
            ev.unmapped_segments.push(UnmappedSegment {
                index: i as i32 + 1,
                name: seg.name_str().to_owned(),
                text: m.er7(seg.raw()),
            });
        } else if let Some(map) = field_map(seg.name()) {
            m.unmapped_fields(i, &seg, map, &mut ev.unmapped_fields);
        }
        explicit_nulls(i, &seg, &mut ev.explicit_nulls);
    }
    events.push(ev);
    if events.len() > 1 {
        let identity = sluice_model::ids::hl7_identity(msg);
        for (n, e) in events.iter_mut().enumerate() {
            e.warnings.push("message_has_several_patients".into());
            if n > 0 {
                e.event_id = identity.event_id("hl7v2", &format!("patient-{}", n + 1));
            }
        }
    }
    events
}

/// Records every field, repetition or component sent as the explicit null `""`: it is never a
/// value (see [`values::present`]), but its "delete this value" meaning travels with the event.
fn explicit_nulls(index: usize, seg: &Segment<'_>, out: &mut Vec<ExplicitNull>) {
    if memchr::memmem::find(seg.raw(), values::NULL).is_none() {
        return;
    }
    let mut push = |field: usize, repetition: usize, component: usize| {
        out.push(ExplicitNull {
            segment_index: index as i32 + 1,
            segment: seg.name_str().to_owned(),
            field: field as i32,
            repetition: repetition as i32,
            component: component as i32,
        });
    };
    let literal = if seg.name() == b"MSH" { 2 } else { 0 };
    for (n, field) in seg.fields().filter(|(n, _)| *n > literal) {
        if field.raw() == values::NULL {
            push(n, 0, 0);
            continue;
        }
        if memchr::memmem::find(field.raw(), values::NULL).is_none() {
            continue;
        }
        for (r, rep) in field.repetitions().enumerate() {
            if rep.raw() == values::NULL {
                push(n, r + 1, 0);
                continue;
            }
            for (c, comp) in rep.components().enumerate() {
                if comp.raw() == values::NULL {
                    push(n, r + 1, c + 1);
                }
            }
        }
    }
}

/// The event as MSH describes it: type, source and time; the segments fill in the rest.
fn header(m: &Mapper<'_, '_>, raw: &RawMessage, pos: &RawPosition) -> ClinicalEvent {
    let msg = m.msg;
    let msh = msg.segment(0);
    let t = |n| m.text(msh.field(n).raw()).unwrap_or_default();
    let typ = msh.field(9).repetition(0);
    let message_type = m.text(typ.component(1).raw()).unwrap_or_default();
    let identity = sluice_model::ids::hl7_identity(msg);
    ClinicalEvent {
        event_id: identity.event_id("hl7v2", ""),
        identity_key: identity.identity,
        content_digest: identity.digest,
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
    }
}

/// Maps one segment into the event with the function of its segment group's module. `repeat`:
/// a singleton segment (PID, PV1, MRG, SCH, TXA) of this name came before.
fn map_segment<'a>(m: &Mapper<'_, 'a>, seg: &Segment<'a>, repeat: bool, ev: &mut ClinicalEvent, g: &mut Group) -> Mapped {
    match seg.name() {
        b"MSH" => {}
        b"EVN" => ev.event_time = m.ts(seg, 2),
        b"PID" if !repeat => patient::pid(m, seg, ev, g),
        b"PID" => return patient::other_record(m, seg, ev, g),
        b"PV1" if !repeat => patient::pv1(m, seg, ev, g),
        b"AL1" | b"IAM" if !g.prior => allergies::al1_iam(m, seg, ev, g),
        b"SCH" if !repeat => appointments::sch(m, seg, ev, g),
        b"AIS" | b"AIG" | b"AIL" | b"AIP" => return appointments::resource(m, seg, ev),
        b"RXO" | b"RXE" | b"RXD" | b"RXG" => pharmacy::rx(m, seg, ev, g),
        b"MRG" => return patient::mrg(m, seg, ev),
        b"ORC" => orders::orc(m, seg, ev, g),
        b"OBR" => orders::obr(m, seg, ev, g),
        b"TXA" if !repeat => {
            // the OBX after a TXA are the document's content, not results of an order
            (g.last_obr, g.last_orc) = (None, None);
            documents::txa(m, seg, ev)
        }
        b"RXA" => immunisation::rxa(m, seg, ev, g),
        b"RXR" => return pharmacy::rxr(m, seg, ev, g),
        b"TQ1" => return orders::tq1(m, seg, ev, g),
        b"OBX" => results::obx(m, seg, ev, g),
        b"SPM" => specimens::spm(m, seg, ev, g),
        b"NTE" => orders::nte(m, seg, ev, g),
        _ => return Mapped::No,
    }
    Mapped::Yes
}
