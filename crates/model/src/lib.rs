//! The canonical records of Sluice and how they travel.
//!
//! - [`schemas`]: the `.avsc` files in `schemas/` (the source of truth) assembled into one
//!   self-contained Avro schema per record type;
//! - [`records`]: the Rust shapes of those records (checked against the schemas by tests);
//! - [`wire`]: the Confluent wire format (magic byte, 4-byte schema id, Avro body);
//! - [`topology`]: the topics from `topology/topics.yaml`;
//! - [`ids`] and [`nhs`]: deterministic ids and NHS number validation.
//!
//! Nothing here does I/O.

pub mod ids;
pub mod nhs;
pub mod records;
pub mod schemas;
pub mod time;
pub mod topology;
pub mod wire;

pub use records::*;

/// Microseconds since the Unix epoch: the time unit of every Sluice timestamp.
pub type Micros = i64;
