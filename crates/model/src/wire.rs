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

/// Encodes like [`encode`], but serialises the record straight into Avro against `expanded` (a
/// schema from [`expand`]) instead of building a `Value` tree, resolving it against the schema
/// and then writing it: the same bytes (the tests compare both) for a fraction of the work and
/// allocations. A record that does not fit the schema is still refused.
pub fn encode_direct<T: Serialize>(expanded: &Schema, id: u32, record: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(512);
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    apache_avro::write_avro_datum_ref(expanded, record, &mut out).map_err(|e| WireError::Encode(Box::new(e)))?;
    Ok(out)
}

/// `schema` with every named reference replaced by the definition it names, so a serialiser
/// without a table of names can follow it. Our schemas are not recursive, so this ends.
pub fn expand(schema: &Schema) -> Result<Schema, apache_avro::Error> {
    let resolved = apache_avro::schema::ResolvedSchema::try_from(schema)?;
    expand_with(schema, resolved.get_names(), 0)
}

fn expand_with(schema: &Schema, names: &apache_avro::schema::NamesRef<'_>, depth: usize) -> Result<Schema, apache_avro::Error> {
    use apache_avro::schema::{ArraySchema, MapSchema, RecordField, RecordSchema, UnionSchema};
    if depth > 64 {
        return Err(apache_avro::Error::new(apache_avro::error::Details::SchemaResolutionError(
            apache_avro::schema::Name::new("recursive").map_err(|_| apache_avro::Error::new(apache_avro::error::Details::GetNameField))?,
        )));
    }
    Ok(match schema {
        Schema::Ref { name } => match names.get(name) {
            Some(s) => expand_with(s, names, depth + 1)?,
            None => {
                return Err(apache_avro::Error::new(apache_avro::error::Details::SchemaResolutionError(
                    name.clone(),
                )));
            }
        },
        Schema::Record(r) => {
            let fields = r
                .fields
                .iter()
                .map(|f| {
                    Ok(RecordField {
                        schema: expand_with(&f.schema, names, depth + 1)?,
                        ..f.clone()
                    })
                })
                .collect::<Result<Vec<_>, apache_avro::Error>>()?;
            Schema::Record(RecordSchema { fields, ..r.clone() })
        }
        Schema::Array(a) => Schema::Array(ArraySchema {
            items: Box::new(expand_with(&a.items, names, depth + 1)?),
            attributes: a.attributes.clone(),
        }),
        Schema::Map(m) => Schema::Map(MapSchema {
            types: Box::new(expand_with(&m.types, names, depth + 1)?),
            attributes: m.attributes.clone(),
        }),
        Schema::Union(u) => Schema::Union(UnionSchema::new(
            u.variants()
                .iter()
                .map(|v| expand_with(v, names, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        )?),
        other => other.clone(),
    })
}

/// Decodes a body written with exactly the schema `expanded` was made from (see [`expand`]):
/// no schema resolution, and no table of names rebuilt for every record (which cost a quarter
/// of identifier-match's work when decoding went through [`decode`]).
pub fn decode_direct<T: DeserializeOwned>(expanded: &Schema, body: &[u8]) -> Result<T, WireError> {
    let mut cursor = body;
    let value =
        apache_avro::from_avro_datum_schemata(expanded, Vec::new(), &mut cursor, None).map_err(|e| WireError::Decode(Box::new(e)))?;
    from_value(&value).map_err(|e| WireError::Decode(Box::new(e)))
}

/// Decodes an Avro body written with `writer` into the reader's shape.
pub fn decode<T: DeserializeOwned>(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<T, WireError> {
    let mut cursor = body;
    // the same schema needs no resolution (most reads: a record written by this version)
    let reader = if std::ptr::eq(writer, reader) { None } else { Some(reader) };
    let value = from_avro_datum(writer, &mut cursor, reader).map_err(|e| WireError::Decode(Box::new(e)))?;
    from_value(&value).map_err(|e| WireError::Decode(Box::new(e)))
}
