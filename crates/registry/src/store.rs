//! Schemas by id and Sluice's own writer ids per topic.

use crate::{RegistryClient, RegistryError, value_subject};
use apache_avro::Schema;
use sluice_model::Record;
use sluice_model::schemas::{RecordType, SchemaSet, schema_json};
use sluice_model::wire::{self, WireError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("schema id {0} is not known")]
    UnknownSchema(u32),
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Wire(w) => w.code(),
            DecodeError::UnknownSchema(_) => "unknown_schema_id",
        }
    }
}

#[derive(Debug)]
pub struct SchemaStore {
    client: RegistryClient,
    own: SchemaSet,
    by_id: RwLock<HashMap<u32, Arc<Schema>>>,
    writer_ids: RwLock<HashMap<String, u32>>,
    /// Whether a writer schema is this build's own schema of a record type (then no resolution).
    same_as_own: RwLock<HashMap<(u32, sluice_model::schemas::RecordType), bool>>,
}

impl SchemaStore {
    pub fn new(client: RegistryClient) -> Result<SchemaStore, sluice_model::schemas::SchemaError> {
        Ok(SchemaStore {
            client,
            own: SchemaSet::load()?,
            by_id: RwLock::default(),
            writer_ids: RwLock::default(),
            same_as_own: RwLock::default(),
        })
    }

    /// Registers the schema of `record` under `<topic>-value` and remembers the id for encoding.
    pub async fn register(&self, topic: &str, record: RecordType) -> Result<u32, RegistryError> {
        let json = schema_json(record).map_err(|_| RegistryError::Status {
            status: 0,
            what: "local schema",
        })?;
        let id = self.client.register(&value_subject(topic), &json).await?;
        self.writer_ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned(), id);
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(self.own.get(record).clone()));
        Ok(id)
    }

    /// Makes sure the writer schema of a framed value is cached (the only I/O of decoding).
    pub async fn prefetch(&self, value: &[u8]) -> Result<(), RegistryError> {
        let Ok((id, _)) = wire::split(value) else { return Ok(()) };
        if self.by_id.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id) {
            return Ok(());
        }
        let text = self.client.schema_by_id(id).await?;
        let schema = Schema::parse_str(&text).map_err(|_| RegistryError::BadSchema { id })?;
        self.by_id.write().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::new(schema));
        Ok(())
    }

    pub fn writer_id(&self, topic: &str) -> Option<u32> {
        self.writer_ids.read().unwrap_or_else(|e| e.into_inner()).get(topic).copied()
    }

    /// Encodes a record for a topic registered with [`SchemaStore::register`].
    pub fn encode<T: Record>(&self, topic: &str, record: &T) -> Result<Vec<u8>, EncodeError> {
        let id = self.writer_id(topic).ok_or_else(|| EncodeError::NotRegistered(topic.to_owned()))?;
        Ok(wire::encode_direct(self.own.expanded_schema(T::TYPE), id, record)?)
    }

    /// Whether decoding under writer schema `id` found it to be this build's own schema of `t`
    /// (`None` before the first such decode).
    pub fn is_own_schema(&self, id: u32, t: sluice_model::schemas::RecordType) -> Option<bool> {
        self.same_as_own.read().unwrap_or_else(|e| e.into_inner()).get(&(id, t)).copied()
    }

    /// Decodes a framed value whose writer schema is cached (see [`SchemaStore::prefetch`]).
    pub fn decode<T: Record>(&self, value: &[u8]) -> Result<T, DecodeError> {
        let (id, body) = wire::split(value)?;
        let writer = self
            .by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .ok_or(DecodeError::UnknownSchema(id))?;
        let own = self.own.get(T::TYPE);
        let cached = self
            .same_as_own
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id, T::TYPE))
            .copied();
        let same = match cached {
            Some(same) => same,
            None => {
                let same = sluice_model::schemas::stable_canonical_form(&writer) == sluice_model::schemas::stable_canonical_form(own);
                self.same_as_own
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((id, T::TYPE), same);
                same
            }
        };
        if same {
            return Ok(wire::decode_direct(self.own.expanded_schema(T::TYPE), body)?);
        }
        Ok(wire::decode(&writer, own, body)?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("topic {0} has no registered writer schema")]
    NotRegistered(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}
