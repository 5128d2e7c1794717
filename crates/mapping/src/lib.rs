//! The mappers of Sluice: an HL7 v2 message ([`v2`]) or a FHIR R4 body ([`fhir_in`]) to the
//! canonical clinical event.
//!
//! Guarantees: pure (bytes in, event out: no I/O and no clock), so the same input always gives
//! the same event; nothing in the input is silently discarded: what the model does not map
//! travels with the event whole (see each module).

pub mod fhir_in;
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
