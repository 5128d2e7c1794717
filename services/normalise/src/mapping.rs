//! HL7 v2 message to canonical [`ClinicalEvent`]. Pure: bytes in, event out.
//!
//! Every segment the model maps has a table of the fields (and components) it maps. Any other
//! non-empty field of a mapped segment travels in `unmapped_fields`, and every segment the model
//! does not map at all (Z-segments, NK1, DG1, PRT, RXC ...) travels whole in
//! `unmapped_segments`: nothing in the message is silently discarded.

use crate::results;
use sluice_hl7::{Message, Repetition, Segment};
use sluice_model::time::parse_hl7;
use sluice_model::{
    Address, Allergy, Appointment, ClinicalEvent, Coded, Document, Encounter, EventSource, Identifier, Immunisation, Medication, Merge,
    Observation, Order, Patient, PersonName, RawMessage, Specimen, UnmappedField, UnmappedSegment, nhs,
};

pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Where the raw record came from.
#[derive(Debug, Clone, Default)]
pub struct RawPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub replay: bool,
}

/// (field, components mapped; empty = the whole field is mapped)
type FieldMap = &'static [(usize, &'static [usize])];

const MSH_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, &[]),
    (5, &[]),
    (6, &[]),
    (7, &[]),
    (9, &[]),
    (10, &[]),
    (11, &[]),
    (12, &[]),
    (18, &[]),
];
const EVN_MAP: FieldMap = &[(1, &[]), (2, &[])];
const CX: &[usize] = &[1, 4, 5, 6];
const PID_MAP: FieldMap = &[
    (1, &[]),
    (2, CX),
    (3, CX),
    (4, CX),
    (5, &[1, 2, 3, 4, 5, 7]),
    (7, &[]),
    (8, &[]),
    (11, &[1, 2, 3, 4, 5, 6, 7]),
    (19, &[]),
    (20, &[1, 2]),
    (29, &[]),
    (30, &[]),
];
const PV1_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, &[]),
    (6, &[]),
    (10, &[]),
    (19, CX),
    (44, &[]),
    (45, &[]),
];
const MRG_MAP: FieldMap = &[(1, CX), (3, &[]), (5, &[])];
const ORC_MAP: FieldMap = &[(1, &[]), (2, &[]), (3, &[]), (5, &[]), (9, &[])];
const CE: &[usize] = &[1, 2, 3, 4, 5, 6];
const OBR_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, CE),
    (5, &[]),
    (6, &[]),
    (7, &[]),
    (8, &[]),
    (14, &[]),
    (15, &[1, 4]),
    (25, &[]),
];
const TQ1_MAP: FieldMap = &[(1, &[]), (7, &[1]), (8, &[1]), (9, &[1])];
const RXA_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, &[1]),
    (5, CE),
    (6, &[]),
    (7, CE),
    (15, &[]),
    (16, &[1]),
    (17, CE),
    (20, &[]),
    (21, &[]),
];
const RXR_MAP: FieldMap = &[(1, CE), (2, CE)];
const TXA_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (4, &[1]),
    (12, &[]),
    (13, &[]),
    (16, &[]),
    (17, &[]),
    (18, &[]),
    (19, &[]),
];
const OBX_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (3, CE),
    (4, &[]),
    (5, &[]),
    (6, CE),
    (7, &[]),
    (8, &[]),
    (11, &[]),
    (14, &[]),
];
const NTE_MAP: FieldMap = &[(1, &[]), (3, &[])];
const SCH_MAP: FieldMap = &[
    (1, &[]),
    (2, &[]),
    (6, CE),
    (7, CE),
    (8, CE),
    (9, &[]),
    (10, CE),
    (11, &[4, 5]),
    (25, &[]),
];
// AIS-4 is only the appointment's start when nothing else gives one: it always travels too
const AIS_MAP: FieldMap = &[(1, &[]), (3, CE)];
const AIG_MAP: FieldMap = &[(1, &[]), (3, CE)];
const AIL_MAP: FieldMap = &[(1, &[]), (3, &[])];
const AIP_MAP: FieldMap = &[(1, &[]), (3, &[])];
const RXO_MAP: FieldMap = &[
    (1, CE),
    (2, &[]),
    (3, &[]),
    (4, CE),
    (5, CE),
    (6, CE),
    (11, &[]),
    (12, CE),
    (13, &[]),
];
const RXE_MAP: FieldMap = &[
    (2, CE),
    (3, &[]),
    (4, &[]),
    (5, CE),
    (6, CE),
    (7, CE),
    (10, &[]),
    (11, CE),
    (12, &[]),
    (15, &[]),
    (21, CE),
];
const RXD_MAP: FieldMap = &[(1, &[]), (2, CE), (3, &[]), (4, &[]), (5, CE), (6, CE), (7, &[]), (8, &[]), (9, CE)];
const RXG_MAP: FieldMap = &[(1, &[]), (4, CE), (5, &[]), (6, &[]), (7, CE), (8, CE), (9, CE)];
const AL1_MAP: FieldMap = &[(1, &[]), (2, &[1, 2, 3]), (3, CE), (4, &[1, 2, 3]), (5, &[]), (6, &[])];
const IAM_MAP: FieldMap = &[
    (1, &[]),
    (2, &[1, 2, 3]),
    (3, CE),
    (4, &[1, 2, 3]),
    (5, &[]),
    (6, &[1, 2, 3]),
    (11, &[]),
    (17, &[1, 2, 3]),
];
const SPM_MAP: FieldMap = &[(1, &[]), (2, &[]), (4, CE), (8, CE), (17, &[1, 2]), (18, &[])];

fn field_map(name: &[u8]) -> Option<FieldMap> {
    Some(match name {
        b"MSH" => MSH_MAP,
        b"EVN" => EVN_MAP,
        b"PID" => PID_MAP,
        b"PV1" => PV1_MAP,
        b"MRG" => MRG_MAP,
        b"ORC" => ORC_MAP,
        b"OBR" => OBR_MAP,
        b"OBX" => OBX_MAP,
        b"NTE" => NTE_MAP,
        b"SPM" => SPM_MAP,
        b"TQ1" => TQ1_MAP,
        b"RXA" => RXA_MAP,
        b"RXR" => RXR_MAP,
        b"TXA" => TXA_MAP,
        b"SCH" => SCH_MAP,
        b"AIS" => AIS_MAP,
        b"AIG" => AIG_MAP,
        b"AIL" => AIL_MAP,
        b"AIP" => AIP_MAP,
        b"RXO" => RXO_MAP,
        b"RXE" => RXE_MAP,
        b"RXD" => RXD_MAP,
        b"RXG" => RXG_MAP,
        b"AL1" => AL1_MAP,
        b"IAM" => IAM_MAP,
        _ => return None,
    })
}

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

struct Mapper<'m, 'a> {
    msg: &'m Message<'a>,
}

impl<'a> Mapper<'_, 'a> {
    fn text(&self, raw: &[u8]) -> Option<String> {
        if raw.is_empty() {
            return None;
        }
        Some(self.msg.text(raw))
    }

    /// Raw ER7 of a segment or field decoded to UTF-8 with escapes kept (for travelling content).
    fn er7(&self, raw: &[u8]) -> String {
        sluice_hl7::decode_bytes(raw, self.msg.charset()).into_owned()
    }

    fn identifier(&self, cx: &Repetition<'a>) -> Option<Identifier> {
        let value = self.text(cx.component(1).raw())?;
        let authority = self
            .text(cx.component(4).subcomponent(1))
            .or_else(|| self.text(cx.component(4).raw()));
        let type_code = self.text(cx.component(5).raw());
        let facility = self.text(cx.component(6).subcomponent(1));
        let is_nhs = matches!(type_code.as_deref(), Some("NH" | "NHS" | "NHSNBR"))
            || authority
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case("NHS") || a.eq_ignore_ascii_case("NHSNBR") || a == "2.16.840.1.113883.2.1.4.1");
        Some(Identifier {
            nhs_number_valid: is_nhs.then(|| nhs::is_valid(&value)),
            system: is_nhs.then(|| NHS_NUMBER_SYSTEM.to_owned()),
            value: if is_nhs { nhs::normalise(&value) } else { value },
            type_code,
            assigning_authority: authority,
            assigning_facility: facility,
        })
    }

    fn identifiers(&self, seg: &Segment<'a>, field: usize) -> Vec<Identifier> {
        seg.field(field).repetitions().filter_map(|r| self.identifier(&r)).collect()
    }

    fn coded(&self, r: &Repetition<'a>) -> Option<Coded> {
        if r.is_empty() {
            return None;
        }
        let c = |n| self.text(r.component(n).raw());
        Some(Coded {
            code: c(1),
            text: c(2),
            system: c(3),
            alt_code: c(4),
            alt_text: c(5),
            alt_system: c(6),
        })
    }

    fn ts(&self, seg: &Segment<'a>, field: usize) -> Option<sluice_model::Timestamp> {
        parse_hl7(&self.text(seg.field(field).repetition(0).component(1).raw())?)
    }

    fn field_text(&self, seg: &Segment<'a>, field: usize) -> Option<String> {
        self.text(seg.field(field).raw())
    }

    /// The first component of a field (the code of a coded value), decoded.
    fn first_component(&self, seg: &Segment<'a>, field: usize) -> Option<String> {
        self.text(seg.field(field).repetition(0).component(1).raw())
    }

    /// A field as sent (escapes kept, components joined by their separator), for composite
    /// values the model keeps whole (locations, staff, entity identifiers).
    fn field_er7(&self, seg: &Segment<'a>, field: usize) -> Option<String> {
        self.text(seg.field(field).raw()).map(|_| self.er7(seg.field(field).raw()))
    }

    fn coded_field(&self, seg: &Segment<'a>, field: usize) -> Option<Coded> {
        self.coded(&seg.field(field).repetition(0))
    }

    /// Free-text instructions of a CE/CWE field: the text of each repetition, else its code.
    fn instruction_texts(&self, seg: &Segment<'a>, field: usize) -> Vec<String> {
        seg.field(field)
            .repetitions()
            .filter_map(|r| self.text(r.component(2).raw()).or_else(|| self.text(r.component(1).raw())))
            .collect()
    }

    /// RXO, RXE, RXD or RXG as a medication of the order it follows.
    fn medication(&self, seg: &Segment<'a>, order_index: Option<i32>) -> Medication {
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

    /// AL1, or IAM (ADT A60), whose action code (IAM-6) and clinical status (IAM-17, HL7 table
    /// 0438) are read as FHIR clinical and verification statuses.
    fn allergy(&self, seg: &Segment<'a>) -> Allergy {
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

    /// OBR-15 specimen source (before v2.5, where SPM does not exist): its type and body site,
    /// with OBR-7/8 collection and OBR-14 received times.
    fn obr_specimen(&self, obr: &Segment<'a>, order_index: i32) -> Option<Specimen> {
        let sps = obr.field(15).repetition(0);
        let coded_sub = |c: sluice_hl7::Component<'a>| {
            let sub = |n| self.text(c.subcomponent(n));
            let code = sub(1);
            let text = sub(2);
            (code.is_some() || text.is_some()).then(|| Coded {
                code,
                text,
                system: sub(3),
                ..Default::default()
            })
        };
        let specimen_type = coded_sub(sps.component(1))?;
        Some(Specimen {
            set_id: None,
            order_index: Some(order_index),
            identifier: None,
            specimen_type: Some(specimen_type),
            source_site: coded_sub(sps.component(4)),
            collection_time: self.ts(obr, 7),
            collection_end: self.ts(obr, 8),
            received_time: self.ts(obr, 14),
        })
    }

    fn appointment(&self, sch: &Segment<'a>) -> Appointment {
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

    fn patient(&self, pid: &Segment<'a>) -> Patient {
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

    fn encounter(&self, pv1: &Segment<'a>) -> Encounter {
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

    /// Non-empty content of a mapped segment that its table does not cover.
    fn unmapped_fields(&self, index: usize, seg: &Segment<'a>, map: FieldMap, out: &mut Vec<UnmappedField>) {
        for f in 1..=seg.field_count() {
            let field = seg.field(f);
            if field.is_empty() {
                continue;
            }
            let covered = match map.iter().find(|(n, _)| *n == f) {
                None => false,
                Some((_, [])) => true,
                Some((_, comps)) => field.repetitions().all(|r| {
                    r.components()
                        .enumerate()
                        .all(|(i, c)| c.raw().is_empty() || comps.contains(&(i + 1)))
                }),
            };
            if !covered {
                out.push(UnmappedField {
                    segment_index: index as i32 + 1,
                    segment: seg.name_str().to_owned(),
                    field: f as i32,
                    text: self.er7(field.raw()),
                });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawMessage {
        RawMessage {
            raw_id: "r".into(),
            transport: "mllp".into(),
            listener: "l".into(),
            peer: "p".into(),
            received_at: 0,
            detected_charset: "ascii".into(),
            payload: vec![],
            msh: None,
            warnings: vec![],
        }
    }

    #[test]
    fn oru_maps_results_with_units_ranges_flags_status_and_offsets() {
        let m = Message::parse(
            b"MSH|^~\\&|LAB|RTH|EPR|RTH|20240630123000+0100||ORU^R01^ORU_R01|C1|P|2.5\rPID|1||123^^^RTH^MR~9434765919^^^NHS^NH||SMITH^ANN^^^MRS||19800101|F|||1 HIGH ST^^LEEDS^^LS1 1AA^GBR\rOBR|1|PL1|FL1|GLU^Glucose^L|||20240630120000+0100||||||||||||||||||F\rOBX|1|NM|GLU^Glucose^L||5.5|mmol/L^mmol/L^UCUM|3.5-5.0|H|||C|||20240630120000+0100\rNTE|1||repeat\\.br\\advised\rZLB|local|stuff\r",
        );
        let ev = map_message(&m, &raw(), &RawPosition::default());
        assert_eq!(ev.kind, "result");
        let p = ev.patient.as_ref().expect("patient");
        assert_eq!(p.identifiers.len(), 2);
        assert_eq!(p.identifiers[1].system.as_deref(), Some(NHS_NUMBER_SYSTEM));
        assert_eq!(p.identifiers[1].nhs_number_valid, Some(true));
        assert_eq!(p.addresses[0].postcode.as_deref(), Some("LS1 1AA"));
        let o = &ev.observations[0];
        assert_eq!(o.values, vec!["5.5"]);
        assert_eq!(o.units.as_ref().and_then(|u| u.code.as_deref()), Some("mmol/L"));
        assert_eq!(o.reference_range.as_deref(), Some("3.5-5.0"));
        assert_eq!(o.abnormal_flags, vec!["H"]);
        assert_eq!(o.result_status.as_deref(), Some("C"), "corrections keep their status");
        assert_eq!(o.observation_time.as_ref().and_then(|t| t.offset_minutes), Some(60));
        assert_eq!(o.notes, vec!["repeat\nadvised"]);
        assert_eq!(o.order_index, Some(0));
        assert_eq!(ev.orders[0].result_status.as_deref(), Some("F"));
        assert_eq!(ev.unmapped_segments.len(), 1);
        assert_eq!(ev.unmapped_segments[0].name, "ZLB");
        assert!(ev.unmapped_fields.is_empty(), "{:?}", ev.unmapped_fields);
    }

    #[test]
    fn unmapped_fields_and_components_travel() {
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5|||||GBR\rPID|1||1^^^X^MR^^^^^extra||N\r");
        let ev = map_message(&m, &raw(), &RawPosition::default());
        let got: Vec<(String, i32)> = ev.unmapped_fields.iter().map(|f| (f.segment.clone(), f.field)).collect();
        assert!(got.contains(&("MSH".into(), 17)), "{got:?}");
        assert!(got.contains(&("PID".into(), 3)), "CX.10 is not mapped so PID-3 travels: {got:?}");
    }

    #[test]
    fn merge_is_mapped_and_invalid_nhs_flagged() {
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A40|1|P|2.5\rPID|1||2^^^X^MR~9434765918^^^NHS^NH\rMRG|1^^^X^MR\r");
        let ev = map_message(&m, &raw(), &RawPosition::default());
        assert_eq!(ev.merge.as_ref().map(|mg| mg.prior_identifiers.len()), Some(1));
        assert_eq!(ev.patient.as_ref().map(|p| p.identifiers[1].nhs_number_valid), Some(Some(false)));
    }

    #[test]
    fn iam_person_identifiers_and_obr_specimen_source() {
        let m = Message::parse(
            b"MSH|^~\\&|PAS|RTH|EPR|RTH|20240701||ADT^A60|C9|P|2.5\rPID|1||123^^^RTH^MR||X^Y||19800101|F|||||||||||123-45-6789|DL99^NY\r\
IAM|1|DA|PEN^Penicillin^L|SV|Hives|D|||||20240101||||||E\r",
        );
        let ev = map_message(&m, &raw(), &RawPosition::default());
        let ids = &ev.patient.as_ref().expect("patient").identifiers;
        let typed: Vec<(&str, Option<&str>)> = ids.iter().map(|i| (i.value.as_str(), i.type_code.as_deref())).collect();
        assert_eq!(typed, [("123", Some("MR")), ("123-45-6789", Some("SS")), ("DL99", Some("DL"))]);
        let a = &ev.allergies[0];
        assert_eq!(a.verification_status.as_deref(), Some("entered-in-error"), "IAM-6 D deletes");
        assert_eq!(a.identified_time.as_ref().map(|t| t.value.as_str()), Some("20240101"));
        assert_eq!(a.reactions, ["Hives"]);

        let m = Message::parse(
            b"MSH|^~\\&|LAB|RTH|EPR|RTH|20240701||ORU^R01|C8|P|2.3\rPID|1||123^^^RTH^MR\r\
OBR|1|P1|F1|CBC^Blood count^L|||20240701080000+0100|||||||20240701090000+0100|BLD&Blood&HL70070^^^LA&Left arm&HL70163||||||||||F\r",
        );
        let ev = map_message(&m, &raw(), &RawPosition::default());
        let s = &ev.specimens[0];
        assert_eq!(s.order_index, Some(0));
        assert_eq!(s.specimen_type.as_ref().and_then(|c| c.code.as_deref()), Some("BLD"));
        assert_eq!(s.source_site.as_ref().and_then(|c| c.text.as_deref()), Some("Left arm"));
        assert_eq!(s.received_time.as_ref().and_then(|t| t.offset_minutes), Some(60));
        assert!(ev.unmapped_fields.iter().all(|f| f.segment != "OBR"), "{:?}", ev.unmapped_fields);
    }
}
