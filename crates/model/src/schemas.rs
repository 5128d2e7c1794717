//! Assembles the `.avsc` files into self-contained schemas: a reference to a named type defined
//! in another file is replaced by its definition at first use, so what is registered with a
//! schema registry needs no schema references and any standard client can read it.

use apache_avro::Schema;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// The schema files, compiled in so a binary needs no files at run time.
pub const FILES: &[(&str, &str)] = &[
    ("common.avsc", include_str!("../../../schemas/common.avsc")),
    ("raw_message.avsc", include_str!("../../../schemas/raw_message.avsc")),
    ("clinical_event.avsc", include_str!("../../../schemas/clinical_event.avsc")),
    ("matched_event.avsc", include_str!("../../../schemas/matched_event.avsc")),
    ("identity_link.avsc", include_str!("../../../schemas/identity_link.avsc")),
    ("seen_event.avsc", include_str!("../../../schemas/seen_event.avsc")),
    ("fhir_bundle.avsc", include_str!("../../../schemas/fhir_bundle.avsc")),
    ("dead_letter.avsc", include_str!("../../../schemas/dead_letter.avsc")),
    ("dead_letter_audit.avsc", include_str!("../../../schemas/dead_letter_audit.avsc")),
    ("identity_state.avsc", include_str!("../../../schemas/identity_state.avsc")),
    ("identity_change.avsc", include_str!("../../../schemas/identity_change.avsc")),
    ("identity_decision.avsc", include_str!("../../../schemas/identity_decision.avsc")),
    ("audit_event.avsc", include_str!("../../../schemas/audit_event.avsc")),
];

const NAMESPACE: &str = "sluice.v1";

/// The record types that are the value of some topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    RawMessage,
    ClinicalEvent,
    MatchedEvent,
    IdentityLink,
    SeenEvent,
    FhirBundle,
    DeadLetter,
    DeadLetterAudit,
    IdentityState,
    IdentityChange,
    IdentityDecision,
    AuditEvent,
}

impl RecordType {
    pub const ALL: [RecordType; 12] = [
        RecordType::RawMessage,
        RecordType::ClinicalEvent,
        RecordType::MatchedEvent,
        RecordType::IdentityLink,
        RecordType::SeenEvent,
        RecordType::FhirBundle,
        RecordType::DeadLetter,
        RecordType::DeadLetterAudit,
        RecordType::IdentityState,
        RecordType::IdentityChange,
        RecordType::IdentityDecision,
        RecordType::AuditEvent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecordType::RawMessage => "RawMessage",
            RecordType::ClinicalEvent => "ClinicalEvent",
            RecordType::MatchedEvent => "MatchedEvent",
            RecordType::IdentityLink => "IdentityLink",
            RecordType::SeenEvent => "SeenEvent",
            RecordType::FhirBundle => "FhirBundle",
            RecordType::DeadLetter => "DeadLetter",
            RecordType::DeadLetterAudit => "DeadLetterAudit",
            RecordType::IdentityState => "IdentityState",
            RecordType::IdentityChange => "IdentityChange",
            RecordType::IdentityDecision => "IdentityDecision",
            RecordType::AuditEvent => "AuditEvent",
        }
    }

    pub fn from_name(name: &str) -> Option<RecordType> {
        RecordType::ALL.into_iter().find(|r| r.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema file {file} is not valid json: {source}")]
    Json { file: &'static str, source: serde_json::Error },
    #[error("schema {name} references unknown type {reference}")]
    UnknownReference { name: String, reference: String },
    #[error("schema {name} is not valid avro: {source}")]
    Avro { name: String, source: Box<apache_avro::Error> },
    #[error("no schema named {0}")]
    Missing(String),
}

const PRIMITIVES: &[&str] = &["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Every named type defined in the files, by full name.
fn definitions() -> Result<BTreeMap<String, Value>, SchemaError> {
    let mut defs = BTreeMap::new();
    fn collect(v: &Value, ns: &str, defs: &mut BTreeMap<String, Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| collect(i, ns, defs)),
            Value::Object(o) => {
                let ns = o.get("namespace").and_then(Value::as_str).unwrap_or(ns).to_owned();
                if let (Some(Value::String(t)), Some(Value::String(n))) = (o.get("type"), o.get("name"))
                    && matches!(t.as_str(), "record" | "enum" | "fixed")
                {
                    let mut def = o.clone();
                    def.insert("namespace".into(), Value::String(ns.clone()));
                    defs.insert(full_name(n, &ns), Value::Object(def));
                }
                for key in ["fields", "items", "values", "type"] {
                    if let Some(child) = o.get(key) {
                        collect(child, &ns, defs);
                    }
                }
            }
            _ => {}
        }
    }
    for (file, text) in FILES {
        let v: Value = serde_json::from_str(text).map_err(|source| SchemaError::Json { file, source })?;
        collect(&v, NAMESPACE, &mut defs);
    }
    Ok(defs)
}

fn inline(v: &Value, ns: &str, defs: &BTreeMap<String, Value>, seen: &mut HashSet<String>, root: &str) -> Result<Value, SchemaError> {
    Ok(match v {
        Value::String(s) if PRIMITIVES.contains(&s.as_str()) => v.clone(),
        Value::String(s) => {
            let name = full_name(s, ns);
            if seen.contains(&name) {
                Value::String(name)
            } else {
                let def = defs.get(&name).ok_or_else(|| SchemaError::UnknownReference {
                    name: root.to_owned(),
                    reference: s.clone(),
                })?;
                inline(def, ns, defs, seen, root)?
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| inline(i, ns, defs, seen, root)).collect::<Result<_, _>>()?),
        Value::Object(o) => {
            let ns = o.get("namespace").and_then(Value::as_str).unwrap_or(ns).to_owned();
            let mut out = Map::new();
            if let (Some(Value::String(t)), Some(Value::String(n))) = (o.get("type"), o.get("name"))
                && matches!(t.as_str(), "record" | "enum" | "fixed")
            {
                // a type defined where it is used, already defined earlier: named, not again
                if !seen.insert(full_name(n, &ns)) {
                    return Ok(Value::String(full_name(n, &ns)));
                }
            }
            for (k, child) in o {
                let child = match k.as_str() {
                    "fields" => Value::Array(
                        child
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|f| {
                                let mut f = f.as_object().cloned().unwrap_or_default();
                                if let Some(t) = f.get("type").cloned() {
                                    f.insert("type".into(), inline(&t, &ns, defs, seen, root)?);
                                }
                                Ok(Value::Object(f))
                            })
                            .collect::<Result<_, SchemaError>>()?,
                    ),
                    "items" | "values" | "type"
                        if !child.is_string() || !matches!(child.as_str(), Some("record" | "enum" | "fixed" | "array" | "map")) =>
                    {
                        inline(child, &ns, defs, seen, root)?
                    }
                    _ => child.clone(),
                };
                out.insert(k.clone(), child);
            }
            Value::Object(out)
        }
        _ => v.clone(),
    })
}

/// The self-contained JSON text of a record type's schema.
pub fn schema_json(record: RecordType) -> Result<String, SchemaError> {
    let defs = definitions()?;
    let name = full_name(record.name(), NAMESPACE);
    let def = defs.get(&name).ok_or_else(|| SchemaError::Missing(name.clone()))?;
    let mut seen = HashSet::new();
    let v = inline(def, NAMESPACE, &defs, &mut seen, &name)?;
    Ok(v.to_string())
}

/// The parsed schema of a record type.
pub fn schema(record: RecordType) -> Result<Schema, SchemaError> {
    let json = schema_json(record)?;
    Schema::parse_str(&json).map_err(|source| SchemaError::Avro {
        name: record.name().to_owned(),
        source: Box::new(source),
    })
}

/// All record schemas, parsed once.
#[derive(Debug, Clone)]
pub struct SchemaSet {
    schemas: BTreeMap<RecordType, Schema>,
    /// The same schemas with every named reference replaced by its definition, for
    /// [`crate::wire::encode_direct`] and [`crate::wire::decode_direct`].
    expanded: BTreeMap<RecordType, Schema>,
}

impl SchemaSet {
    pub fn load() -> Result<SchemaSet, SchemaError> {
        let mut schemas = BTreeMap::new();
        let mut expanded = BTreeMap::new();
        for r in RecordType::ALL {
            let s = schema(r)?;
            let e = crate::wire::expand(&s).map_err(|e| SchemaError::Avro {
                name: r.name().to_owned(),
                source: Box::new(e),
            })?;
            expanded.insert(r, e);
            schemas.insert(r, s);
        }
        Ok(SchemaSet { schemas, expanded })
    }

    /// The schema of `r` with no named references, for [`crate::wire::encode_direct`] and
    /// [`crate::wire::decode_direct`].
    pub fn expanded_schema(&self, r: RecordType) -> &Schema {
        #[allow(clippy::indexing_slicing)]
        &self.expanded[&r]
    }

    pub fn get(&self, r: RecordType) -> &Schema {
        // load() fills every record type
        #[allow(clippy::indexing_slicing)]
        &self.schemas[&r]
    }
}

/// A schema's Parsing Canonical Form, made stable: apache-avro's `canonical_form` is not
/// idempotent (a logical type's `{"type":"long"}` stays an object, and becomes `"long"` once the
/// form is parsed again), so a writer schema fetched as canonical text never equalled this
/// build's own, and every record was decoded through full schema resolution. Two schemas with
/// equal stable forms write the same bytes.
pub fn stable_canonical_form(schema: &Schema) -> String {
    let once = schema.canonical_form();
    match Schema::parse_str(&once) {
        Ok(again) => again.canonical_form(),
        Err(_) => once,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_canonical_form_survives_a_trip_through_canonical_text() {
        let set = SchemaSet::load().expect("schemas");
        let mut unstable = 0;
        for r in RecordType::ALL {
            let own = set.get(r);
            let fetched = Schema::parse_str(&own.canonical_form()).expect("canonical text parses");
            // what the registry's canonical text used to do to every type with a timestamp
            unstable += usize::from(fetched.canonical_form() != own.canonical_form());
            let stable = stable_canonical_form(own);
            assert_eq!(stable_canonical_form(&fetched), stable, "{r:?}");
            let again = Schema::parse_str(&stable).expect("stable text parses");
            assert_eq!(stable_canonical_form(&again), stable, "{r:?}");
        }
        assert!(
            unstable > 0,
            "apache-avro's canonical form became idempotent: the stable form may be redundant"
        );
    }
}
