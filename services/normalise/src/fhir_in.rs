//! FHIR R4 in: a resource or Bundle (JSON or XML, as received on `fhir.raw.v1`) to the same
//! canonical events HL7 v2 gives. Pure: body in, events out.
//!
//! - One event per patient: a Bundle naming several patients gives one event each, holding the
//!   resources whose `subject`/`patient` refers to that patient. A clinical resource whose patient
//!   cannot be resolved is never given to a patient: it goes in an event of its own without a
//!   patient (identifier-match holds such events for review). Resources that belong to no patient
//!   (Practitioner, Organization, Medication, MessageHeader ...) travel with every event.
//! - A patient named only by a logical reference (`subject.identifier`, usual in NHS messaging)
//!   is that identifier.
//! - NHS numbers (`https://fhir.nhs.uk/Id/nhs-number`) are checked (modulus 11); one that fails
//!   keeps its value but `nhs_number_valid` is false, so it is never a match key.
//! - Nothing is lost: each event carries every resource it came from whole in `fhir_resources`,
//!   next to the elements the model maps; statuses, units, code systems and times (with their
//!   zone and precision) are kept as sent.
//! - Event ids are deterministic: from `Bundle.identifier` when sent (a resend with a new
//!   timestamp is the same message), else from the content, plus the patient's position.

use crate::mapping::{NHS_NUMBER_SYSTEM, RawPosition};
use serde_json::Value;
use sluice_fhir::{first, items, resource_type, resources, text, text_at};
use sluice_model::time::parse_fhir;
use sluice_model::{
    Allergy, Appointment, ClinicalEvent, Coded, Encounter, EventSource, FhirResource, Identifier, Immunisation, Medication, Merge,
    Observation, Order, Patient, PersonName, RawMessage, Specimen, Timestamp, nhs,
};
use std::collections::HashMap;

/// Resource types the model maps; every other type travels whole only.
pub const MAPPED: &[&str] = &[
    "Patient",
    "Encounter",
    "Observation",
    "DiagnosticReport",
    "ServiceRequest",
    "Specimen",
    "AllergyIntolerance",
    "Immunization",
    "MedicationRequest",
    "MedicationDispense",
    "MedicationStatement",
    "Appointment",
    "MessageHeader",
];

/// A body that cannot become an event: a bounded code and a detail without patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub code: &'static str,
    pub detail: String,
}

/// Maps a FHIR body (the payload of a raw record) to one canonical event per patient.
pub fn map_body(raw: &RawMessage, pos: &RawPosition) -> Result<Vec<ClinicalEvent>, Rejected> {
    let (_, tree) = sluice_fhir::parse(&raw.payload).map_err(|e| Rejected {
        code: e.code(),
        detail: e.to_string(),
    })?;
    let all = resources(&tree);
    if all.is_empty() {
        return Err(Rejected {
            code: "fhir_empty_bundle",
            detail: "the Bundle has no resources".into(),
        });
    }
    let groups = group_by_patient(&all);
    let basis = identity_basis(&tree);
    let header = all.iter().map(|(_, r)| *r).find(|r| resource_type(r) == Some("MessageHeader"));
    let context: Vec<(Option<String>, &Value)> = all.iter().filter(|(_, r)| !patient_bound(r)).cloned().collect();
    let index = Index::new(&all);
    // requests without a resource (a transaction's DELETE) travel with every event, flagged
    let requests: Vec<FhirResource> = sluice_fhir::entries_without_resource(&tree)
        .into_iter()
        .map(|e| FhirResource {
            resource_type: "Bundle.entry".into(),
            id: None,
            full_url: text_at(e, &["fullUrl"]),
            mapped: false,
            json: e.to_string(),
        })
        .collect();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(n, g)| {
            let mut ev = envelope(&tree, header, raw, pos, &basis, &group_key(&g, n));
            let mut mapper = Mapper {
                ev: &mut ev,
                index: &index,
                obs_by_ref: HashMap::new(),
                spec_by_ref: HashMap::new(),
            };
            mapper.group(&g);
            for (url, r) in g
                .resources
                .iter()
                .chain(context.iter().filter(|(_, r)| resource_type(r) != Some("Patient")))
            {
                ev.fhir_resources.push(FhirResource {
                    resource_type: resource_type(r).unwrap_or_default().to_owned(),
                    id: text_at(r, &["id"]),
                    full_url: url.clone(),
                    mapped: resource_type(r).is_some_and(|t| MAPPED.contains(&t)),
                    json: r.to_string(),
                });
            }
            if !requests.is_empty() {
                ev.fhir_resources.extend(requests.iter().cloned());
                ev.warnings.push("fhir_entry_without_resource".into());
            }
            ev.kind = kind_of(&ev).to_owned();
            if g.unresolved {
                ev.warnings.push("fhir_patient_unresolved".into());
            }
            ev
        })
        .collect())
}

/// What names this message across resends: Bundle.identifier, else the content.
fn identity_basis(tree: &Value) -> Vec<u8> {
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

struct Group<'v> {
    patient: Option<(Option<String>, &'v Value)>,
    logical: Option<&'v Value>,
    resources: Vec<(Option<String>, &'v Value)>,
    unresolved: bool,
}

/// The direct patient reference of a resource: `subject`, `patient` or `beneficiary`.
fn patient_reference(r: &Value) -> Option<&Value> {
    ["subject", "patient", "beneficiary"].iter().find_map(|k| first(r, k))
}

/// References that may name the patient: the direct one, then participants' actors
/// (Appointment, Encounter), which name practitioners and locations too.
fn patient_candidates(r: &Value) -> Vec<&Value> {
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
fn patient_bound(r: &Value) -> bool {
    !patient_candidates(r).is_empty() || !resource_type(r).is_some_and(|t| SHARED.contains(&t))
}

/// Splits the resources by the patient they are about (see the module documentation).
fn group_by_patient<'v>(all: &[(Option<String>, &'v Value)]) -> Vec<Group<'v>> {
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
fn by_reference<T: Copy>(table: &HashMap<String, T>, reference: &str) -> Option<T> {
    table.get(reference).copied().or_else(|| {
        let mut parts = reference.rsplitn(3, '/');
        let (id, ty) = (parts.next()?, parts.next()?);
        parts.next()?;
        table.get(&format!("{ty}/{id}")).copied()
    })
}

/// Resources of the whole body by the references that can name them.
struct Index<'v> {
    by_ref: HashMap<String, &'v Value>,
}

impl<'v> Index<'v> {
    fn new(all: &[(Option<String>, &'v Value)]) -> Index<'v> {
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

    fn resolve(&self, reference: &Value) -> Option<&'v Value> {
        by_reference(&self.by_ref, &text_at(reference, &["reference"])?)
    }
}

/// What tells one patient's event of a body from another's, stable when a sender reorders the
/// entries on a resend: the patient's first identifier, else its reference, else the position.
fn group_key(g: &Group<'_>, n: usize) -> String {
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

fn envelope(tree: &Value, header: Option<&Value>, raw: &RawMessage, pos: &RawPosition, basis: &[u8], group: &str) -> ClinicalEvent {
    let root_type = resource_type(tree).unwrap_or_default().to_owned();
    let trigger = header
        .and_then(|h| text_at(h, &["eventCoding", "code"]).or_else(|| text_at(h, &["eventUri"])))
        .or_else(|| (root_type == "Bundle").then(|| text_at(tree, &["type"])).flatten())
        .unwrap_or_else(|| root_type.clone());
    ClinicalEvent {
        event_id: sluice_model::ids::uuid_from(&[b"fhir", basis, group.as_bytes()]),
        message_type: "FHIR".into(),
        trigger_event: trigger,
        message_structure: root_type,
        kind: String::new(),
        source: EventSource {
            sending_application: header
                .and_then(|h| text_at(h, &["source", "name"]).or_else(|| text_at(h, &["source", "endpoint"])))
                .unwrap_or_else(|| raw.listener.clone()),
            sending_facility: header
                .and_then(|h| text_at(h, &["sender", "display"]).or_else(|| text_at(h, &["sender", "identifier", "value"])))
                .unwrap_or_default(),
            receiving_application: header
                .and_then(|h| text_at(h, &["destination", "name"]).or_else(|| text_at(h, &["destination", "endpoint"])))
                .unwrap_or_default(),
            receiving_facility: header.and_then(|h| text_at(h, &["receiver", "display"])).unwrap_or_default(),
            control_id: text_at(tree, &["identifier", "value"])
                .or_else(|| header.and_then(|h| text_at(h, &["id"])))
                .or_else(|| text_at(tree, &["id"]))
                .unwrap_or_default(),
            version: "4.0.1".into(),
            processing_id: String::new(),
            raw_id: raw.raw_id.clone(),
            raw_topic: pos.topic.clone(),
            raw_partition: pos.partition,
            raw_offset: pos.offset,
            transport: raw.transport.clone(),
            charset: "UTF-8".into(),
            replay: pos.replay,
        },
        message_time: text_at(tree, &["timestamp"])
            .or_else(|| text_at(tree, &["meta", "lastUpdated"]))
            .and_then(|t| parse_fhir(&t)),
        ..Default::default()
    }
}

/// The event kind from what it holds, most specific first.
fn kind_of(ev: &ClinicalEvent) -> &'static str {
    if !ev.observations.is_empty() || ev.orders.iter().any(|o| o.segment == "DiagnosticReport") {
        "result"
    } else if !ev.orders.is_empty() {
        "order"
    } else if !ev.medications.is_empty() {
        "pharmacy"
    } else if !ev.immunisations.is_empty() {
        "immunisation"
    } else if ev.appointment.is_some() {
        "schedule"
    } else if ev.patient.is_some() || ev.encounter.is_some() || !ev.allergies.is_empty() {
        "adt"
    } else {
        "generic"
    }
}

fn ts(v: &Value, path: &[&str]) -> Option<Timestamp> {
    text_at(v, path).and_then(|t| parse_fhir(&t))
}

/// A CodeableConcept (or a Coding) as a coded value: the first two codings, the text.
pub fn coded(cc: &Value) -> Option<Coded> {
    let codings = if cc.get("coding").is_some() {
        items(cc, "coding")
    } else {
        vec![cc]
    };
    let c = |i: usize, k: &str| codings.get(i).and_then(|c| text_at(c, &[k]));
    let out = Coded {
        code: c(0, "code"),
        text: text_at(cc, &["text"]).or_else(|| c(0, "display")),
        system: c(0, "system"),
        alt_code: c(1, "code"),
        alt_text: c(1, "display"),
        alt_system: c(1, "system"),
    };
    (out.code.is_some() || out.text.is_some()).then_some(out)
}

fn coded_at(v: &Value, key: &str) -> Option<Coded> {
    first(v, key).and_then(coded)
}

/// An Identifier; NHS numbers are normalised and checked.
pub fn identifier(id: &Value) -> Option<Identifier> {
    let value = text_at(id, &["value"])?;
    let system = text_at(id, &["system"]);
    let is_nhs = system.as_deref() == Some(NHS_NUMBER_SYSTEM);
    Some(Identifier {
        nhs_number_valid: is_nhs.then(|| nhs::is_valid(&value)),
        value: if is_nhs { nhs::normalise(&value) } else { value },
        type_code: text_at(id, &["type", "coding", "code"]).or_else(|| text_at(id, &["type", "text"])),
        assigning_authority: text_at(id, &["assigner", "display"]).or_else(|| system.clone().filter(|_| !is_nhs)),
        system,
        assigning_facility: None,
    })
}

fn patient(r: &Value) -> Patient {
    let names = items(r, "name")
        .into_iter()
        .map(|n| {
            let given: Vec<String> = items(n, "given").into_iter().filter_map(text).collect();
            PersonName {
                family: text_at(n, &["family"]).or_else(|| text_at(n, &["text"])),
                given: given.first().cloned(),
                middle: (given.len() > 1).then(|| given[1..].join(" ")),
                suffix: text_at(n, &["suffix"]),
                prefix: text_at(n, &["prefix"]),
                type_code: text_at(n, &["use"]),
            }
        })
        .collect();
    let addresses = items(r, "address")
        .into_iter()
        .map(|a| sluice_model::Address {
            lines: items(a, "line").into_iter().filter_map(text).collect(),
            city: text_at(a, &["city"]),
            district: text_at(a, &["district"]),
            postcode: text_at(a, &["postalCode"]),
            country: text_at(a, &["country"]),
            type_code: text_at(a, &["use"]),
        })
        .collect();
    // HL7 table 0001, which the canonical event uses
    let sex = text_at(r, &["gender"]).map(|g| match g.as_str() {
        "male" => "M".to_owned(),
        "female" => "F".to_owned(),
        "other" => "O".to_owned(),
        "unknown" => "U".to_owned(),
        other => other.to_owned(),
    });
    let deceased = text_at(r, &["deceasedBoolean"]).map(|b| if b == "true" { "Y".to_owned() } else { "N".to_owned() });
    let death_time = ts(r, &["deceasedDateTime"]);
    Patient {
        identifiers: items(r, "identifier").into_iter().filter_map(identifier).collect(),
        names,
        birth_date: ts(r, &["birthDate"]),
        sex,
        addresses,
        deceased: deceased.or_else(|| death_time.as_ref().map(|_| "Y".to_owned())),
        death_time,
    }
}

/// FHIR ObservationStatus / DiagnosticReportStatus back to HL7 table 0085/0123, so
/// `result_status` reads the same whatever the source (the FHIR status is kept in `status`).
fn v2_result_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "final" => "F",
        "preliminary" | "partial" => "P",
        "corrected" | "amended" => "C",
        "appended" => "A",
        "cancelled" => "X",
        "entered-in-error" => "W",
        "registered" => "I",
        _ => return None,
    })
}

/// FHIR RequestStatus back to HL7 table 0038, as the canonical order carries it.
fn v2_order_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "active" => "IP",
        "completed" => "CM",
        "revoked" => "CA",
        "on-hold" => "HD",
        "entered-in-error" => "ER",
        "draft" => "SC",
        _ => return None,
    })
}

fn quantity_text(q: &Value) -> Option<(String, Option<Coded>, Option<String>)> {
    let value = text_at(q, &["value"])?;
    let value = match text_at(q, &["comparator"]) {
        Some(c) => format!("{c}{value}"),
        None => value,
    };
    let system = text_at(q, &["system"]);
    let code = text_at(q, &["code"]);
    let unit = text_at(q, &["unit"]);
    let units = (code.is_some() || unit.is_some()).then(|| Coded {
        code: code.clone().or_else(|| unit.clone()),
        text: unit,
        system: system.clone(),
        ..Default::default()
    });
    let ucum = code.filter(|_| system.as_deref() == Some("http://unitsofmeasure.org"));
    Some((value, units, ucum))
}

fn reference_range(r: &Value) -> Option<String> {
    let rr = first(r, "referenceRange")?;
    if let Some(t) = text_at(rr, &["text"]) {
        return Some(t);
    }
    let low = first(rr, "low").and_then(quantity_text).map(|q| q.0);
    let high = first(rr, "high").and_then(quantity_text).map(|q| q.0);
    match (low, high) {
        (Some(l), Some(h)) => Some(format!("{l}-{h}")),
        (Some(l), None) => Some(format!(">={l}")),
        (None, Some(h)) => Some(format!("<={h}")),
        _ => None,
    }
}

struct Mapper<'e, 'v> {
    ev: &'e mut ClinicalEvent,
    index: &'e Index<'v>,
    /// Observation references (fullUrl, Type/id) to their index in `observations`.
    obs_by_ref: HashMap<String, usize>,
    /// Specimen references to their index in `specimens`.
    spec_by_ref: HashMap<String, usize>,
}

impl<'v> Mapper<'_, 'v> {
    fn group(&mut self, g: &Group<'v>) {
        if let Some((_, p)) = g.patient {
            let mut pat = patient(p);
            // a Patient that replaces another record is a merge, as ADT A40 is
            let prior: Vec<Identifier> = items(p, "link")
                .into_iter()
                .filter(|l| text_at(l, &["type"]).as_deref() == Some("replaces"))
                .filter_map(|l| first(l, "other").and_then(|o| first(o, "identifier")).and_then(identifier))
                .collect();
            if !prior.is_empty() {
                self.ev.merge = Some(Merge {
                    prior_identifiers: prior,
                    kind: "patient_merge".into(),
                    ..Default::default()
                });
            }
            if items(p, "identifier").iter().any(|i| {
                text_at(i, &["system"]).as_deref() == Some(NHS_NUMBER_SYSTEM) && !nhs::is_valid(&text_at(i, &["value"]).unwrap_or_default())
            }) {
                self.ev.warnings.push("nhs_number_invalid".into());
            }
            pat.identifiers.dedup();
            self.ev.patient = Some(pat);
        } else if let Some(id) = g.logical.and_then(identifier) {
            self.ev.patient = Some(Patient {
                identifiers: vec![id],
                ..Default::default()
            });
        }
        // specimens, then observations (naming their specimen), so reports can name them
        for (url, r) in &g.resources {
            if resource_type(r) == Some("Specimen") {
                if let Some(u) = url {
                    self.spec_by_ref.insert(u.clone(), self.ev.specimens.len());
                }
                if let Some(id) = text_at(r, &["id"]) {
                    self.spec_by_ref.insert(format!("Specimen/{id}"), self.ev.specimens.len());
                }
                self.specimen(r);
            }
        }
        for (url, r) in &g.resources {
            if resource_type(r) == Some("Observation") {
                self.observation(url.as_deref(), r);
            }
        }
        for (_, r) in &g.resources {
            match resource_type(r).unwrap_or_default() {
                "Encounter" if self.ev.encounter.is_none() => self.encounter(r),
                "DiagnosticReport" | "ServiceRequest" => self.order(r),
                "AllergyIntolerance" => self.allergy(r),
                "Immunization" => self.immunisation(r),
                "MedicationRequest" | "MedicationDispense" | "MedicationStatement" => self.medication(r),
                "Appointment" if self.ev.appointment.is_none() => self.appointment(r),
                _ => {}
            }
        }
    }

    fn encounter(&mut self, r: &Value) {
        let class = text_at(r, &["class", "code"]).map(|c| match c.as_str() {
            "IMP" | "ACUTE" | "NONAC" => "I".to_owned(),
            "AMB" => "O".to_owned(),
            "EMER" => "E".to_owned(),
            "PRENC" => "P".to_owned(),
            other => other.to_owned(),
        });
        self.ev.encounter = Some(Encounter {
            patient_class: class,
            location: first(r, "location")
                .and_then(|l| text_at(l, &["location", "display"]).or_else(|| text_at(l, &["location", "reference"]))),
            prior_location: None,
            admission_type: text_at(r, &["priority", "coding", "code"]),
            hospital_service: first(r, "serviceType").and_then(coded).and_then(|c| c.code.or(c.text)),
            visit_number: first(r, "identifier").and_then(identifier),
            admit_time: ts(r, &["period", "start"]),
            discharge_time: ts(r, &["period", "end"]),
        });
    }

    fn observation(&mut self, url: Option<&str>, r: &Value) {
        let mut values = Vec::new();
        let mut units = None;
        let mut units_ucum = None;
        let value_type = if let Some(q) = first(r, "valueQuantity") {
            if let Some((v, u, ucum)) = quantity_text(q) {
                values.push(v);
                (units, units_ucum) = (u, ucum);
            }
            "NM"
        } else if let Some(c) = first(r, "valueCodeableConcept").and_then(coded) {
            // code^text^system, as an HL7 CWE value
            values.push(format!(
                "{}^{}^{}",
                c.code.unwrap_or_default(),
                c.text.unwrap_or_default(),
                c.system.unwrap_or_default()
            ));
            "CWE"
        } else if let Some(s) = text_at(r, &["valueString"]) {
            values.push(s);
            "ST"
        } else if let Some((k, v)) = [
            "valueBoolean",
            "valueInteger",
            "valueDateTime",
            "valueTime",
            "valuePeriod",
            "valueRatio",
            "valueRange",
        ]
        .iter()
        .find_map(|k| first(r, k).map(|v| (*k, v)))
        {
            values.push(text(v).unwrap_or_else(|| v.to_string()));
            match k {
                "valueInteger" => "NM",
                "valueDateTime" => "DTM",
                "valueTime" => "TM",
                _ => "ST",
            }
        } else {
            ""
        };
        let status = text_at(r, &["status"]);
        let code = coded_at(r, "code");
        let key_basis = first(r, "identifier")
            .and_then(|i| {
                Some(format!(
                    "{}|{}",
                    text_at(i, &["system"]).unwrap_or_default(),
                    text_at(i, &["value"])?
                ))
            })
            .or_else(|| text_at(r, &["id"]).map(|id| format!("Observation/{id}")));
        let idx = self.ev.observations.len();
        self.ev.observations.push(Observation {
            set_id: Some((idx + 1).to_string()),
            order_index: None,
            value_type: (!value_type.is_empty()).then(|| value_type.to_owned()),
            code,
            sub_id: None,
            values,
            units,
            reference_range: reference_range(r),
            abnormal_flags: items(r, "interpretation")
                .into_iter()
                .filter_map(coded)
                .filter_map(|c| c.code.or(c.text))
                .collect(),
            result_status: status.as_deref().and_then(v2_result_status).map(str::to_owned),
            observation_time: ts(r, &["effectiveDateTime"])
                .or_else(|| ts(r, &["effectivePeriod", "start"]))
                .or_else(|| ts(r, &["effectiveInstant"])),
            notes: items(r, "note").into_iter().filter_map(|n| text_at(n, &["text"])).collect(),
            status,
            // the same for every version of one result: a correction updates the same resource
            result_key: key_basis.map(|k| sluice_model::ids::uuid_from(&[b"fhir-result", k.as_bytes()])),
            units_ucum,
            specimen_index: first(r, "specimen")
                .and_then(|x| text_at(x, &["reference"]))
                .and_then(|x| by_reference(&self.spec_by_ref, &x).map(|i| i as i32)),
        });
        if let Some(u) = url {
            self.obs_by_ref.insert(u.to_owned(), idx);
        }
        if let Some(id) = text_at(r, &["id"]) {
            self.obs_by_ref.insert(format!("Observation/{id}"), idx);
        }
    }

    fn order(&mut self, r: &Value) {
        let is_report = resource_type(r) == Some("DiagnosticReport");
        let ids = items(r, "identifier");
        let typed = |code: &str| {
            ids.iter()
                .find(|i| text_at(i, &["type", "coding", "code"]).as_deref() == Some(code))
                .and_then(|i| text_at(i, &["value"]))
        };
        let status = text_at(r, &["status"]);
        let k = self.ev.orders.len() as i32;
        let mut o = Order {
            segment: resource_type(r).unwrap_or_default().to_owned(),
            set_id: Some((k + 1).to_string()),
            placer_order_number: typed("PLAC").or_else(|| (!is_report).then(|| ids.first().and_then(|i| text_at(i, &["value"]))).flatten()),
            filler_order_number: typed("FILL").or_else(|| is_report.then(|| ids.first().and_then(|i| text_at(i, &["value"]))).flatten()),
            service: coded_at(r, "code"),
            notes: items(r, "note").into_iter().filter_map(|n| text_at(n, &["text"])).collect(),
            intent: text_at(r, &["intent"]),
            ..Default::default()
        };
        if is_report {
            o.result_status = status.as_deref().and_then(v2_result_status).map(str::to_owned);
            o.observation_time = ts(r, &["effectiveDateTime"]).or_else(|| ts(r, &["effectivePeriod", "start"]));
            if let Some(c) = text_at(r, &["conclusion"]) {
                o.notes.push(c);
            }
            for res in items(r, "result") {
                let target = text_at(res, &["reference"]).and_then(|x| by_reference(&self.obs_by_ref, &x));
                match target.and_then(|i| self.ev.observations.get_mut(i)) {
                    Some(obs) => obs.order_index = Some(k),
                    None => self.ev.warnings.push("fhir_reference_unresolved".into()),
                }
            }
        } else {
            o.order_status = status.as_deref().and_then(v2_order_status).map(str::to_owned);
            o.priority = text_at(r, &["priority"]).map(|p| match p.as_str() {
                "stat" => "S".to_owned(),
                "asap" => "A".to_owned(),
                "routine" => "R".to_owned(),
                other => other.to_owned(),
            });
            o.transaction_time = ts(r, &["authoredOn"]);
            o.requested_time = ts(r, &["occurrenceDateTime"]);
            o.timing_start = ts(r, &["occurrencePeriod", "start"]);
            o.timing_end = ts(r, &["occurrencePeriod", "end"]);
        }
        self.ev.orders.push(o);
    }

    fn specimen(&mut self, r: &Value) {
        let collection = first(r, "collection");
        let c = |path: &[&str]| collection.and_then(|c| ts(c, path));
        self.ev.specimens.push(Specimen {
            set_id: Some((self.ev.specimens.len() + 1).to_string()),
            order_index: None,
            identifier: text_at(r, &["accessionIdentifier", "value"]).or_else(|| text_at(r, &["identifier", "value"])),
            specimen_type: coded_at(r, "type"),
            source_site: collection.and_then(|c| coded_at(c, "bodySite")),
            collection_time: c(&["collectedDateTime"]).or_else(|| c(&["collectedPeriod", "start"])),
            collection_end: c(&["collectedPeriod", "end"]),
            received_time: ts(r, &["receivedTime"]),
        });
    }

    fn allergy(&mut self, r: &Value) {
        self.ev.allergies.push(Allergy {
            set_id: Some((self.ev.allergies.len() + 1).to_string()),
            category: text_at(r, &["category"]),
            allergen: coded_at(r, "code"),
            severity: text_at(r, &["criticality"]),
            reactions: items(r, "reaction")
                .into_iter()
                .flat_map(|x| items(x, "manifestation"))
                .filter_map(coded)
                .filter_map(|c| c.text.or(c.code))
                .collect(),
            identified_time: ts(r, &["onsetDateTime"]).or_else(|| ts(r, &["recordedDate"])),
            clinical_status: text_at(r, &["clinicalStatus", "coding", "code"]),
            verification_status: text_at(r, &["verificationStatus", "coding", "code"]),
        });
    }

    fn immunisation(&mut self, r: &Value) {
        let dose = first(r, "doseQuantity").and_then(quantity_text);
        let status = text_at(r, &["status"]);
        self.ev.immunisations.push(Immunisation {
            administered_time: ts(r, &["occurrenceDateTime"]),
            vaccine: coded_at(r, "vaccineCode"),
            amount: dose.as_ref().map(|d| d.0.clone()),
            units: dose.as_ref().and_then(|d| d.1.clone()),
            units_ucum: dose.and_then(|d| d.2),
            lot_numbers: text_at(r, &["lotNumber"]).into_iter().collect(),
            expiry: ts(r, &["expirationDate"]),
            manufacturer: first(r, "manufacturer").and_then(|m| {
                text_at(m, &["display"]).map(|d| Coded {
                    text: Some(d),
                    ..Default::default()
                })
            }),
            // HL7 RXA-20/21 as the canonical event carries them
            completion_status: status.as_deref().map(|s| match s {
                "not-done" => "NA".to_owned(),
                _ if text_at(r, &["isSubpotent"]).as_deref() == Some("true") => "PA".to_owned(),
                _ => "CP".to_owned(),
            }),
            action: (status.as_deref() == Some("entered-in-error")).then(|| "D".to_owned()),
            route: coded_at(r, "route"),
            site: coded_at(r, "site"),
        });
    }

    fn medication(&mut self, r: &Value) {
        let kind = resource_type(r).unwrap_or_default().to_owned();
        // medicationCodeableConcept, or the code of the Medication it references
        let medication = coded_at(r, "medicationCodeableConcept").or_else(|| {
            first(r, "medicationReference").and_then(|m| {
                self.index.resolve(m).and_then(|med| coded_at(med, "code")).or_else(|| {
                    text_at(m, &["display"]).map(|d| Coded {
                        text: Some(d),
                        ..Default::default()
                    })
                })
            })
        });
        let dosage_key = if kind == "MedicationStatement" {
            "dosage"
        } else {
            "dosageInstruction"
        };
        let dosages = items(r, dosage_key);
        let dose_rate = dosages.first().and_then(|d| first(d, "doseAndRate"));
        let (low, high) = match dose_rate {
            Some(dr) => match (first(dr, "doseQuantity"), first(dr, "doseRange")) {
                (Some(q), _) => (quantity_text(q), None),
                (None, Some(range)) => (
                    first(range, "low").and_then(quantity_text),
                    first(range, "high").and_then(quantity_text),
                ),
                _ => (None, None),
            },
            None => (None, None),
        };
        let dispense = first(r, "dispenseRequest");
        let dispense_qty = dispense
            .and_then(|d| first(d, "quantity"))
            .or_else(|| first(r, "quantity"))
            .and_then(quantity_text);
        let is_dispense = kind == "MedicationDispense";
        let (amount_min, units, units_ucum) = if is_dispense {
            match dispense_qty.clone() {
                Some((v, u, c)) => (Some(v), u, c),
                None => (None, None, None),
            }
        } else {
            match low.clone() {
                Some((v, u, c)) => (Some(v), u, c),
                None => (None, None, None),
            }
        };
        self.ev.medications.push(Medication {
            segment: kind,
            order_index: None,
            medication,
            amount_min,
            amount_max: high.map(|h| h.0).filter(|_| !is_dispense),
            units,
            units_ucum,
            dosage_form: None,
            instructions: dosages.iter().filter_map(|d| text_at(d, &["text"])).collect(),
            dispense_amount: dispense_qty.as_ref().filter(|_| !is_dispense).map(|d| d.0.clone()),
            dispense_units: dispense_qty.filter(|_| !is_dispense).and_then(|d| d.1),
            refills: dispense.and_then(|d| text_at(d, &["numberOfRepeatsAllowed"])),
            prescription_number: first(r, "identifier").and_then(|i| text_at(i, &["value"])),
            time: ts(r, &["whenHandedOver"])
                .or_else(|| ts(r, &["authoredOn"]))
                .or_else(|| ts(r, &["effectiveDateTime"])),
            route: dosages.first().and_then(|d| coded_at(d, "route")),
            site: dosages.first().and_then(|d| coded_at(d, "site")),
            status: text_at(r, &["status"]),
            intent: text_at(r, &["intent"]),
        });
    }

    fn appointment(&mut self, r: &Value) {
        let mut a = Appointment {
            placer_id: first(r, "identifier").and_then(|i| text_at(i, &["value"])),
            reason: coded_at(r, "reasonCode"),
            appointment_type: coded_at(r, "appointmentType"),
            event_reason: coded_at(r, "cancelationReason"),
            duration: text_at(r, &["minutesDuration"]),
            duration_units: text_at(r, &["minutesDuration"]).map(|_| Coded {
                code: Some("min".into()),
                system: Some("http://unitsofmeasure.org".into()),
                ..Default::default()
            }),
            start: ts(r, &["start"]),
            end: ts(r, &["end"]),
            status: text_at(r, &["status"]),
            services: items(r, "serviceType").into_iter().filter_map(coded).collect(),
            ..Default::default()
        };
        for p in items(r, "participant") {
            let Some(actor) = first(p, "actor") else { continue };
            let reference = text_at(actor, &["reference"]).unwrap_or_default();
            let name = text_at(actor, &["display"]).unwrap_or_else(|| reference.clone());
            if reference.contains("Location/") {
                a.locations.push(name);
            } else if reference.contains("Practitioner") {
                a.staff.push(name);
            } else if !reference.contains("Patient/") && text_at(actor, &["type"]).as_deref() != Some("Patient") {
                a.resources.push(Coded {
                    text: Some(name),
                    ..Default::default()
                });
            }
        }
        self.ev.appointment = Some(a);
    }
}

/// The Kafka key of a FHIR body before matching: the sender and the first patient identifier,
/// so one patient's messages keep their order (as [`sluice_model::ids::source_patient_key`]).
pub fn source_patient_key(ev: &ClinicalEvent) -> Vec<u8> {
    let id = ev
        .patient
        .as_ref()
        .and_then(|p| p.identifiers.first())
        .map(|i| format!("{}^{}", i.value, i.system.as_deref().unwrap_or_default()));
    format!("{}|{}", ev.source.sending_facility, id.unwrap_or_else(|| ev.event_id.clone())).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(body: &str) -> RawMessage {
        RawMessage {
            raw_id: sluice_model::ids::sha256_hex(body.as_bytes()),
            transport: "http".into(),
            listener: "fhir".into(),
            payload: body.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn map(body: &str) -> Vec<ClinicalEvent> {
        map_body(&raw(body), &RawPosition::default()).expect("maps")
    }

    const TWO_PATIENTS: &str = r#"{"resourceType":"Bundle","type":"transaction","entry":[
      {"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"943 476 5919"}]}},
      {"fullUrl":"urn:uuid:b","resource":{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765918"}]}},
      {"fullUrl":"urn:uuid:o1","resource":{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2823-3"}]},
        "subject":{"reference":"urn:uuid:a"},"valueQuantity":{"value":5.1,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"},
        "effectiveDateTime":"2024-07-01T09:30:00+01:00"}},
      {"fullUrl":"urn:uuid:o2","resource":{"resourceType":"Observation","status":"corrected","code":{"text":"Sodium"},
        "subject":{"reference":"urn:uuid:b"},"valueQuantity":{"value":140,"unit":"mmol/L"}}},
      {"fullUrl":"urn:uuid:o3","resource":{"resourceType":"Observation","status":"final","code":{"text":"Orphan"},
        "subject":{"reference":"Patient/elsewhere"},"valueString":"x"}},
      {"fullUrl":"urn:uuid:pr","resource":{"resourceType":"Practitioner","name":[{"family":"Green"}]}}
    ]}"#;

    #[test]
    fn a_bundle_splits_by_patient_and_never_files_an_orphan_against_one() {
        let evs = map(TWO_PATIENTS);
        assert_eq!(evs.len(), 3, "two patients and one event for the unresolved result");
        let a = &evs[0];
        let id = &a.patient.as_ref().expect("patient").identifiers[0];
        assert_eq!((id.value.as_str(), id.nhs_number_valid), ("9434765919", Some(true)));
        assert_eq!(a.observations.len(), 1);
        let o = &a.observations[0];
        assert_eq!(o.values, ["5.1"]);
        assert_eq!(o.units_ucum.as_deref(), Some("mmol/L"));
        assert_eq!(o.status.as_deref(), Some("final"));
        assert_eq!(o.result_status.as_deref(), Some("F"));
        let t = o.observation_time.as_ref().expect("time");
        assert_eq!((t.offset_minutes, t.precision.as_str()), (Some(60), "second"));
        assert_eq!(a.kind, "result");
        assert_eq!(a.message_type, "FHIR");
        let b = &evs[1];
        assert_eq!(b.patient.as_ref().expect("patient").identifiers[0].nhs_number_valid, Some(false));
        assert!(b.warnings.contains(&"nhs_number_invalid".to_owned()));
        assert_eq!(b.observations[0].status.as_deref(), Some("corrected"));
        let orphan = &evs[2];
        assert!(orphan.patient.is_none());
        assert!(orphan.warnings.contains(&"fhir_patient_unresolved".to_owned()));
        assert_eq!(orphan.observations.len(), 1);
        // every resource travels; the practitioner with every event
        for ev in &evs {
            assert!(ev.fhir_resources.iter().any(|r| r.resource_type == "Practitioner" && !r.mapped));
        }
        let ids: std::collections::HashSet<&str> = evs.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn event_ids_survive_reformatting_and_follow_bundle_identifier() {
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(TWO_PATIENTS).expect("json")).expect("pretty");
        assert_eq!(map(TWO_PATIENTS)[0].event_id, map(&pretty)[0].event_id);
        let with_id = |ts: &str| {
            format!(
                r#"{{"resourceType":"Bundle","type":"message","identifier":{{"system":"urn:x","value":"m1"}},"timestamp":"{ts}",
                "entry":[{{"resource":{{"resourceType":"Patient","id":"p"}}}}]}}"#
            )
        };
        assert_eq!(
            map(&with_id("2024-01-01T00:00:00Z"))[0].event_id,
            map(&with_id("2024-01-01T00:05:00Z"))[0].event_id,
            "a resend with a new timestamp is the same message"
        );
        // a resend with its entries in another order: the same events
        let mut tree: Value = serde_json::from_str(TWO_PATIENTS).expect("json");
        if let Some(entries) = tree["entry"].as_array_mut() {
            entries.reverse();
        }
        let ids = |evs: Vec<ClinicalEvent>| evs.into_iter().map(|e| e.event_id).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(ids(map(TWO_PATIENTS)), ids(map(&tree.to_string())));
    }

    #[test]
    fn logical_references_and_merges() {
        let body = r#"{"resourceType":"AllergyIntolerance","clinicalStatus":{"coding":[{"code":"active"}]},
          "category":["medication"],"criticality":"high","code":{"text":"Penicillin"},
          "patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}},
          "reaction":[{"manifestation":[{"text":"Rash"}]}]}"#;
        let ev = &map(body)[0];
        assert_eq!(ev.patient.as_ref().expect("logical patient").identifiers[0].value, "9434765919");
        assert_eq!(ev.allergies[0].reactions, ["Rash"]);
        assert_eq!(ev.kind, "adt");
        let merge = r#"{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],
          "link":[{"type":"replaces","other":{"identifier":{"system":"urn:mrn","value":"OLD1","type":{"coding":[{"code":"MR"}]}}}},
                  {"type":"seealso","other":{"identifier":{"system":"urn:mrn","value":"OTHER"}}}]}"#;
        let m = map(merge)[0].merge.clone().expect("merge");
        assert_eq!(m.kind, "patient_merge");
        assert_eq!(m.prior_identifiers.len(), 1, "only `replaces` is a merge");
    }

    #[test]
    fn bad_bodies_are_rejected_with_codes() {
        let code = |b: &str| map_body(&raw(b), &RawPosition::default()).err().map(|r| r.code);
        assert_eq!(code("{"), Some("fhir_not_json"));
        assert_eq!(
            code(r#"{"resourceType":"Bundle","type":"batch","entry":[]}"#),
            Some("fhir_empty_bundle")
        );
    }
}
