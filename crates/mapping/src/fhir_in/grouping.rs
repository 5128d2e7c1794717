//! Which resources of a body make one patient's event, how the body and each event are named
//! across resends, and how references are resolved in the body.

use serde_json::Value;
use sluice_fhir::{first, items, resource_type, text_at};
use std::collections::HashMap;

/// What names this message across resends: Bundle.identifier, else the content.
pub(super) fn identity_basis(tree: &Value) -> Vec<u8> {
    match (text_at(tree, &["identifier", "system"]), text_at(tree, &["identifier", "value"])) {
        (system, Some(value)) => format!("bundle-identifier|{}|{value}", system.unwrap_or_default()).into_bytes(),
        // serde_json keeps object keys sorted, so key order and white space do not matter, and
        // a Bundle's entries are taken in sorted order, so neither does their order
        _ if resource_type(tree) == Some("Bundle") => {
            let mut entries: Vec<String> = items(tree, "entry").into_iter().map(Value::to_string).collect();
            entries.sort();
            sluice_model::ids::sha256_hex(entries.join("\n").as_bytes()).into_bytes()
        }
        _ => sluice_model::ids::sha256_hex(tree.to_string().as_bytes()).into_bytes(),
    }
}

pub(super) struct Group<'v> {
    pub(super) patient: Option<(Option<String>, &'v Value)>,
    pub(super) logical: Option<&'v Value>,
    pub(super) resources: Vec<(Option<String>, &'v Value)>,
    pub(super) unresolved: bool,
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
            unresolved: false,
        });
    }
    let mut orphans: Option<usize> = None;
    for (url, r) in all.iter().filter(|(_, r)| resource_type(r) != Some("Patient") && patient_bound(r)) {
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
                    unresolved: false,
                });
                groups.len() - 1
            }),
            (None, None) => *orphans.get_or_insert_with(|| {
                groups.push(Group {
                    patient: None,
                    logical: None,
                    resources: Vec::new(),
                    unresolved: true,
                });
                groups.len() - 1
            }),
        };
        groups[g].resources.push((url.clone(), r));
    }
    if groups.is_empty() {
        // no patient at all (a Practitioner, a Bundle of reference data): one event without one
        groups.push(Group {
            patient: None,
            logical: None,
            resources: Vec::new(),
            unresolved: false,
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
        (None, None) if g.unresolved => "unresolved".into(),
        (None, None) => "none".into(),
    }
}
