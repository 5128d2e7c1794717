//! Which resources of a body make one patient's event, how the body and each event are named
//! across resends, and how references are resolved in the body.

use serde_json::Value;
use sluice_fhir::{first, items, resource_type, text_at};
use std::collections::HashMap;

/// What names this message across resends, and its content (see
/// [`sluice_model::ids::MessageIdentity`]).
///
/// - Identity: `Bundle.identifier` (system and value), else the MessageHeader's id, with the
///   MessageHeader's source; a body with neither has no identity of its own and only its content
///   can make it a resend. Identifiers of the resources inside never name the message: different
///   resources share identifier values all the time.
/// - Digest: the content in a canonical form that only a legitimate resend can leave unchanged:
///   keys sorted, JSON and XML read alike (a list of one is its item, numbers and booleans are
///   text), Bundle entries in sorted order, and the Bundle's `timestamp` and `meta.lastUpdated` /
///   `meta.versionId` left out (when it was sent or stored, like MSH-7).
pub(super) fn message_identity(tree: &Value, header: Option<&Value>) -> sluice_model::ids::MessageIdentity {
    let source = header
        .and_then(|h| text_at(h, &["source", "endpoint"]).or_else(|| text_at(h, &["source", "name"])))
        .unwrap_or_default();
    let identity = match (text_at(tree, &["identifier", "system"]), text_at(tree, &["identifier", "value"])) {
        (system, Some(value)) if resource_type(tree) == Some("Bundle") => {
            let system = system.unwrap_or_default();
            sluice_model::ids::parts_hex(&[b"fhir-bundle", source.as_bytes(), system.as_bytes(), value.as_bytes()])
        }
        _ => match header.and_then(|h| text_at(h, &["id"])) {
            Some(id) => sluice_model::ids::parts_hex(&[b"fhir-message-header", source.as_bytes(), id.as_bytes()]),
            None => String::new(),
        },
    };
    let mut text = String::new();
    match (resource_type(tree), tree) {
        (Some("Bundle"), Value::Object(root)) => {
            let mut entries: Vec<String> = items(tree, "entry")
                .into_iter()
                .map(|e| {
                    let mut t = String::new();
                    canonical(e, &mut t);
                    t
                })
                .collect();
            entries.sort();
            for (k, v) in root.iter().filter(|(k, _)| !matches!(k.as_str(), "entry" | "timestamp")) {
                text.push_str(k);
                text.push('=');
                if k == "meta" {
                    canonical(&without(v, &["lastUpdated", "versionId"]), &mut text);
                } else {
                    canonical(v, &mut text);
                }
                text.push('\n');
            }
            text.push_str(&entries.join("\n"));
        }
        _ => canonical(tree, &mut text),
    }
    sluice_model::ids::MessageIdentity {
        identity,
        digest: sluice_model::ids::sha256_hex(text.as_bytes()),
    }
}

fn without(v: &Value, keys: &[&str]) -> Value {
    match v {
        Value::Array(list) => Value::Array(list.iter().map(|x| without(x, keys)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, x)| (k.clone(), x.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Writes a value in a form that JSON and XML of the same content share (see
/// [`message_identity`]). Depth is bounded by the parser's nesting limit.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Array(list) if list.len() == 1 => canonical(&list[0], out),
        Value::Array(list) => {
            out.push('[');
            for x in list {
                canonical(x, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(&o[k], out);
                out.push(',');
            }
            out.push('}');
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Number(n) => out.push_str(&serde_json::to_string(&n.to_string()).unwrap_or_default()),
        Value::Bool(b) => out.push_str(&serde_json::to_string(&b.to_string()).unwrap_or_default()),
        Value::Null => out.push_str("null"),
    }
}

pub(super) struct Group<'v> {
    pub(super) patient: Option<(Option<String>, &'v Value)>,
    pub(super) logical: Option<&'v Value>,
    pub(super) resources: Vec<(Option<String>, &'v Value)>,
    /// For resources whose patient cannot be resolved: what groups them (the reference they
    /// name, else the entry).
    pub(super) unresolved: Option<String>,
}

/// The direct patient reference of a resource: `subject`, `patient` or `beneficiary`.
pub(super) fn patient_reference(r: &Value) -> Option<&Value> {
    ["subject", "patient", "beneficiary"].iter().find_map(|k| first(r, k))
}

/// References that may name the patient: the direct one, then participants' actors
/// (Appointment, Encounter), which name practitioners and locations too.
pub(super) fn patient_candidates(r: &Value) -> Vec<&Value> {
    patient_reference(r)
        .into_iter()
        .chain(items(r, "participant").into_iter().filter_map(|p| first(p, "actor")))
        .collect()
}

/// Resources about no patient in particular: they travel with every event of the body.
const SHARED: &[&str] = &[
    "MessageHeader",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "HealthcareService",
    "Endpoint",
    "Medication",
    "Substance",
    "Device",
    "Schedule",
    "Slot",
    "Questionnaire",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "StructureDefinition",
    "SearchParameter",
    "CapabilityStatement",
    "OperationDefinition",
    "OperationOutcome",
    "Binary",
    "Provenance",
    "AuditEvent",
    "Parameters",
    "Linkage",
    "ResearchStudy",
    "Group",
    "Library",
    "PlanDefinition",
    "ActivityDefinition",
];

/// Whether a resource belongs to one patient's event: a Patient, anything naming a patient, and
/// any clinical resource even without one (it then goes to an event without a patient, never to
/// a patient it does not name).
pub(super) fn patient_bound(r: &Value) -> bool {
    !patient_candidates(r).is_empty() || !resource_type(r).is_some_and(|t| SHARED.contains(&t))
}

/// Splits the resources by the patient they are about (see the module documentation).
pub(super) fn group_by_patient<'v>(all: &[(Option<String>, &'v Value)]) -> Vec<Group<'v>> {
    let mut groups: Vec<Group<'v>> = Vec::new();
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    for (url, r) in all.iter().filter(|(_, r)| resource_type(r) == Some("Patient")) {
        let g = groups.len();
        if let Some(u) = url {
            by_ref.insert(u.clone(), g);
        }
        if let Some(id) = text_at(r, &["id"]) {
            by_ref.insert(format!("Patient/{id}"), g);
        }
        for id in items(r, "identifier") {
            if let (Some(s), Some(v)) = (text_at(id, &["system"]), text_at(id, &["value"])) {
                by_ref.entry(format!("identifier|{s}|{v}")).or_insert(g);
            }
        }
        groups.push(Group {
            patient: Some((url.clone(), r)),
            logical: None,
            resources: vec![(url.clone(), r)],
            unresolved: None,
        });
    }
    // resources whose patient cannot be resolved: one group per reference they name (two
    // unresolved patients are never put together), one each when they name none
    let mut orphans: HashMap<String, usize> = HashMap::new();
    for (position, (url, r)) in all
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| resource_type(r) != Some("Patient") && patient_bound(r))
    {
        let target = patient_candidates(r)
            .into_iter()
            .find_map(|c| text_at(c, &["reference"]).and_then(|x| by_reference(&by_ref, &x)));
        let reference = patient_reference(r).unwrap_or(&Value::Null);
        let logical = first(reference, "identifier").and_then(|id| Some((text_at(id, &["system"])?, text_at(id, &["value"])?)));
        let g = match (target, logical) {
            (Some(g), _) => g,
            (None, Some((s, v))) => *by_ref.entry(format!("identifier|{s}|{v}")).or_insert_with(|| {
                groups.push(Group {
                    patient: None,
                    logical: first(reference, "identifier"),
                    resources: Vec::new(),
                    unresolved: None,
                });
                groups.len() - 1
            }),
            (None, None) => {
                let named = patient_candidates(r).into_iter().find_map(|c| text_at(c, &["reference"]));
                let key = match named {
                    Some(reference) => format!("reference|{reference}"),
                    None => format!("entry|{}", url.clone().unwrap_or_else(|| position.to_string())),
                };
                *orphans.entry(key.clone()).or_insert_with(|| {
                    groups.push(Group {
                        patient: None,
                        logical: None,
                        resources: Vec::new(),
                        unresolved: Some(key),
                    });
                    groups.len() - 1
                })
            }
        };
        groups[g].resources.push((url.clone(), r));
    }
    if groups.is_empty() {
        // no patient at all (a Practitioner, a Bundle of reference data): one event without one
        groups.push(Group {
            patient: None,
            logical: None,
            resources: Vec::new(),
            unresolved: None,
        });
    }
    groups
}

/// What a reference names in a table keyed by fullUrl and `Type/id`: the reference as written,
/// else (an absolute URL such as `https://server/fhir/Patient/7`) its last `Type/id`.
pub(super) fn by_reference<T: Copy>(table: &HashMap<String, T>, reference: &str) -> Option<T> {
    table.get(reference).copied().or_else(|| {
        let mut parts = reference.rsplitn(3, '/');
        let (id, ty) = (parts.next()?, parts.next()?);
        parts.next()?;
        table.get(&format!("{ty}/{id}")).copied()
    })
}

/// Resources of the whole body by the references that can name them.
pub(super) struct Index<'v> {
    by_ref: HashMap<String, &'v Value>,
}

impl<'v> Index<'v> {
    pub(super) fn new(all: &[(Option<String>, &'v Value)]) -> Index<'v> {
        let mut by_ref = HashMap::new();
        for (url, r) in all {
            if let Some(u) = url {
                by_ref.insert(u.clone(), *r);
            }
            if let (Some(t), Some(id)) = (resource_type(r), text_at(r, &["id"])) {
                by_ref.insert(format!("{t}/{id}"), *r);
            }
            // contained resources, referenced as #id
            for c in items(r, "contained") {
                if let Some(id) = text_at(c, &["id"]) {
                    by_ref.insert(format!("#{id}"), c);
                }
            }
        }
        Index { by_ref }
    }

    pub(super) fn resolve(&self, reference: &Value) -> Option<&'v Value> {
        by_reference(&self.by_ref, &text_at(reference, &["reference"])?)
    }
}

/// What tells one patient's event of a body from another's, stable when a sender reorders the
/// entries on a resend: the patient's first identifier, else its reference, else the position.
pub(super) fn group_key(g: &Group<'_>, n: usize) -> String {
    let id = g.patient.as_ref().and_then(|(_, p)| first(p, "identifier")).or(g.logical);
    match (id, &g.patient) {
        (Some(id), _) => format!(
            "identifier|{}|{}",
            text_at(id, &["system"]).unwrap_or_default(),
            text_at(id, &["value"]).unwrap_or_default()
        ),
        (None, Some((Some(url), _))) => format!("patient|{url}"),
        (None, Some((None, p))) => format!("patient|{}|{n}", text_at(p, &["id"]).unwrap_or_default()),
        (None, None) if g.unresolved.is_some() => format!("unresolved|{}", g.unresolved.as_deref().unwrap_or_default()),
        (None, None) => "none".into(),
    }
}
