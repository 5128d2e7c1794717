//! The Confluent wire format: `0x00`, a big-endian 4-byte schema id, then the Avro binary body.

use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};
use serde::{Serialize, de::DeserializeOwned};

pub const MAGIC: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("value is too short for the confluent wire format")]
    TooShort,
    #[error("value does not start with the confluent magic byte")]
    BadMagic,
    #[error("avro encoding failed: {0}")]
    Encode(Box<apache_avro::Error>),
    #[error("avro decoding failed: {0}")]
    Decode(Box<apache_avro::Error>),
}

impl WireError {
    /// A bounded code for dead letters and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::TooShort | WireError::BadMagic => "bad_wire_format",
            WireError::Encode(_) => "avro_encode_failed",
            WireError::Decode(_) => "avro_decode_failed",
        }
    }
}

/// Splits a framed value into its schema id and Avro body.
pub fn split(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if value.len() < 5 {
        return Err(WireError::TooShort);
    }
    if value[0] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

/// Encodes a record under a registered schema id.
pub fn encode<T: Serialize>(schema: &Schema, id: u32, record: &T) -> Result<Vec<u8>, WireError> {
    let value = to_value(record)
        .and_then(|v| v.resolve(schema))
        .map_err(|e| WireError::Encode(Box::new(e)))?;
    let body = to_avro_datum(schema, value).map_err(|e| WireError::Encode(Box::new(e)))?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes an Avro body written with `writer` into the reader's shape.
pub fn decode<T: DeserializeOwned>(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<T, WireError> {
    let mut cursor = body;
    // the same schema needs no resolution (most reads: a record written by this version)
    let reader = if std::ptr::eq(writer, reader) { None } else { Some(reader) };
    let value = from_avro_datum(writer, &mut cursor, reader).map_err(|e| WireError::Decode(Box::new(e)))?;
    from_value(&value).map_err(|e| WireError::Decode(Box::new(e)))
}
