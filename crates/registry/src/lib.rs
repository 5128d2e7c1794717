//! Schema registry support.
//!
//! - [`client`]: the subset of the Confluent Schema Registry REST API the pipeline needs
//!   (register under `<topic>-value`, fetch by id), used against the user's registry in
//!   production;
//! - [`server`]: the same subset (plus latest-by-subject and a BACKWARD compatibility check),
//!   served by `sluice up` and `sluice registry` so the embedded default needs no outside
//!   service and standard clients (confluent-kafka's `SchemaRegistryClient`) work against it;
//! - [`store`]: a cache of schemas by id and the ids of Sluice's own record types per topic,
//!   so encoding and decoding in the hot path never do I/O.

pub mod client;
pub mod server;
pub mod store;

pub use client::{RegistryClient, RegistryError};
pub use store::{DecodeError, SchemaStore};

/// The subject a topic's values are registered under (Confluent's TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}
