//! The value readers every segment mapper uses: text, ER7 as sent, identifiers, coded values
//! and timestamps of fields, components and repetitions.

use super::NHS_NUMBER_SYSTEM;
use sluice_hl7::{Message, Repetition, Segment};
use sluice_model::time::parse_hl7;
use sluice_model::{Coded, EntityId, Identifier, nhs};

/// The HL7 explicit null: present and null ("delete the value you hold").
pub(super) const NULL: &[u8] = b"\"\"";

/// Whether a raw value holds a value: not empty and not the explicit null.
pub(super) fn present(raw: &[u8]) -> bool {
    !raw.is_empty() && raw != NULL
}

/// Reads the values of one message (its charset and escapes).
pub(super) struct Mapper<'m, 'a> {
    pub(super) msg: &'m Message<'a>,
}

impl<'a> Mapper<'_, 'a> {
    /// A value as text: `None` when empty or the explicit null `""` (present and null, recorded
    /// in `explicit_nulls` instead), so `""` never becomes a value, identifier, name, date or code.
    pub(super) fn text(&self, raw: &[u8]) -> Option<String> {
        if !present(raw) {
            return None;
        }
        Some(self.msg.text(raw))
    }

    /// Raw ER7 of a segment or field decoded to UTF-8 with escapes kept (for travelling content).
    pub(super) fn er7(&self, raw: &[u8]) -> String {
        sluice_hl7::decode_bytes(raw, self.msg.charset()).into_owned()
    }

    pub(super) fn identifier(&self, cx: &Repetition<'a>) -> Option<Identifier> {
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

    pub(super) fn identifiers(&self, seg: &Segment<'a>, field: usize) -> Vec<Identifier> {
        seg.field(field).repetitions().filter_map(|r| self.identifier(&r)).collect()
    }

    pub(super) fn coded(&self, r: &Repetition<'a>) -> Option<Coded> {
        if !present(r.raw()) {
            return None;
        }
        let c = |n| self.text(r.component(n).raw());
        let coded = Coded {
            code: c(1),
            text: c(2),
            system: c(3),
            alt_code: c(4),
            alt_text: c(5),
            alt_system: c(6),
            original_text: c(9),
        };
        (coded != Coded::default()).then_some(coded)
    }

    pub(super) fn ts(&self, seg: &Segment<'a>, field: usize) -> Option<sluice_model::Timestamp> {
        parse_hl7(&self.text(seg.field(field).repetition(0).component(1).raw())?)
    }

    /// An EI field (value^namespace^universal id^universal id type), each part decoded on its
    /// own so no delimiter stays in any of them.
    pub(super) fn entity_field(&self, seg: &Segment<'a>, field: usize) -> Option<EntityId> {
        let r = seg.field(field).repetition(0);
        self.entity_of(|n| r.component(n).raw())
    }

    /// One half of an EIP (`half` 1: placer, 2: filler), whose EI parts are subcomponents.
    pub(super) fn entity_half(&self, seg: &Segment<'a>, field: usize, half: usize) -> Option<EntityId> {
        let c = seg.field(field).repetition(0).component(half);
        self.entity_of(|n| c.subcomponent(n))
    }

    fn entity_of(&self, part: impl Fn(usize) -> &'a [u8]) -> Option<EntityId> {
        Some(EntityId {
            value: self.text(part(1))?,
            namespace: self.text(part(2)),
            universal_id: self.text(part(3)),
            universal_id_type: self.text(part(4)),
        })
    }

    pub(super) fn field_text(&self, seg: &Segment<'a>, field: usize) -> Option<String> {
        self.text(seg.field(field).raw())
    }

    /// The first component of a field (the code of a coded value), decoded.
    pub(super) fn first_component(&self, seg: &Segment<'a>, field: usize) -> Option<String> {
        self.text(seg.field(field).repetition(0).component(1).raw())
    }

    /// A field as sent (escapes kept, components joined by their separator), for composite
    /// values the model keeps whole (locations, staff, entity identifiers).
    pub(super) fn field_er7(&self, seg: &Segment<'a>, field: usize) -> Option<String> {
        self.text(seg.field(field).raw()).map(|_| self.er7(seg.field(field).raw()))
    }

    pub(super) fn coded_field(&self, seg: &Segment<'a>, field: usize) -> Option<Coded> {
        self.coded(&seg.field(field).repetition(0))
    }

    /// Free-text instructions of a CE/CWE field: the text of each repetition, else its code.
    pub(super) fn instruction_texts(&self, seg: &Segment<'a>, field: usize) -> Vec<String> {
        seg.field(field)
            .repetitions()
            .filter_map(|r| self.text(r.component(2).raw()).or_else(|| self.text(r.component(1).raw())))
            .collect()
    }
}
