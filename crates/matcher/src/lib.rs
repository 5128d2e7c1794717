//! The patient matcher: which enterprise patient a message is about.
//!
//! Records (what one source system knows as one patient) are compared field by field
//! ([`compare`]): given and family names (Jaro-Winkler, Soundex, previous names and aliases),
//! birth date (exact, day and month transposed, near), sex, postcode and address, NHS number,
//! local record number authority. Each field's level has m/u weights from a versioned file
//! ([`weights`], estimated by [`estimate`]); the sum is the pair's score. Blocking keys find the
//! candidates, so no per-message work grows with the number of patients. Records that score at
//! or above the link threshold, share a valid NHS number, or that a reviewer linked form one
//! enterprise id; between the review and link thresholds a new record is held for a person.
//!
//! Guarantees, whatever the scores:
//! - an NHS number failing its check digit is never a key, and `""` is never a value or key;
//! - never two different valid NHS numbers in one enterprise id, chains of records included;
//! - twins (same surname, birth date and address, different given names) are never linked
//!   automatically; a reviewer's "not the same person" is never undone by a score;
//! - the enterprise ids depend on the records and decisions, not on the order messages arrived
//!   in across partitions (ADR 0004); every change of enterprise id is reported as a [`Change`].
//!
//! No I/O, no clock: the identifier-match service stores records and decisions in Kafka and
//! calls [`Index::commit`] or [`Index::abort`] with its transactions.

pub mod cluster;
pub mod compare;
pub mod estimate;
pub mod ids;
pub mod index;
mod persist;
pub mod profile;
pub mod text;
pub mod weights;

pub use cluster::{Candidate, Change, Edge, EdgeKind, Observation};
pub use compare::{FieldEvidence, Levels};
pub use index::{Index, NodeId};
pub use profile::{Key, Profile, keys_of, usable};
pub use weights::Weights;

#[cfg(test)]
mod tests;
