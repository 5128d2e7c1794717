//! The mappers of Sluice: an HL7 v2 message ([`v2`]) or a FHIR R4 body ([`fhir_in`]) to the
//! canonical clinical event, and the canonical event to a FHIR R4 Bundle ([`fhir_out`]).
//!
//! Guarantees: pure (bytes or a body in, events out; an event in, JSON out: no I/O and no
//! clock), so the same input always gives the same events and Bundles; nothing in an input is
//! silently discarded: what the model does not map travels with the event whole; meaning is kept
//! rather than guessed (statuses, units, code systems, and times with their zone and precision).
//! Each module's documentation says how.

pub mod fhir_in;
pub mod fhir_out;
pub mod tables;
pub mod v2;

/// The identifier system of NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Where the raw record came from.
#[derive(Debug, Clone, Default)]
pub struct RawPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub replay: bool,
}
