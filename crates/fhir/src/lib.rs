//! FHIR R4 bodies as received over HTTP, JSON (`application/fhir+json`) or XML
//! (`application/fhir+xml`), read into one tree so that the rest of the pipeline reads both the
//! same way.
//!
//! JSON is read as it is. XML follows the FHIR XML rules: the root element names the resource
//! (`resourceType`), a primitive is an element with a `value` attribute, other attributes (`url`
//! of an extension, `id`) are fields, a resource inside `resource` / `contained` / `outcome` is
//! that resource, and XHTML narrative (`div`) is kept as its XHTML text. XML cannot say which
//! elements are lists, so every XML child element becomes a list; the accessors here ([`items`],
//! [`first`], [`text`], [`text_at`]) treat a single value and a list of one alike.

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// Deepest nesting of elements a body may have (JSON's parser stops at the same depth): every
/// FHIR resource fits easily, and nothing later walks a tree deep enough to exhaust a stack.
pub const MAX_DEPTH: usize = 128;

/// Why a body is not a FHIR resource. [`ParseError::code`] is a bounded reason code. Texts
/// never carry content from the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    Json(String),
    #[error("body is not well-formed XML: {0}")]
    Xml(String),
    #[error("body is neither JSON nor XML")]
    UnknownFormat,
    #[error("body has no resourceType")]
    NoResourceType,
    #[error("body nests elements deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("body has more than one root element")]
    SeveralRoots,
    #[error("body names a resource type that FHIR R4 does not have")]
    UnknownResourceType,
    #[error("a Bundle entry's resource has no known resourceType")]
    EntryWithoutResourceType,
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Json(_) => "fhir_not_json",
            ParseError::Xml(_) => "fhir_not_xml",
            ParseError::UnknownFormat => "fhir_unknown_format",
            ParseError::NoResourceType => "fhir_no_resource_type",
            ParseError::TooDeep => "fhir_too_deep",
            ParseError::SeveralRoots => "fhir_several_roots",
            ParseError::UnknownResourceType => "fhir_unknown_resource_type",
            ParseError::EntryWithoutResourceType => "fhir_entry_without_resource_type",
        }
    }
}

/// Every FHIR R4 (4.0.1) resource type: a body naming any other type is not a FHIR R4 resource.
pub const R4_RESOURCE_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// The encoding a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// From the first non-blank byte (a UTF-8 byte-order mark is skipped).
    pub fn sniff(body: &[u8]) -> Option<Format> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        match body.iter().find(|b| !b.is_ascii_whitespace())? {
            b'{' => Some(Format::Json),
            b'<' => Some(Format::Xml),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Xml => "xml",
        }
    }
}

/// Reads a body into a tree whose root is a resource (it has a `resourceType`).
pub fn parse(body: &[u8]) -> Result<(Format, Value), ParseError> {
    let format = Format::sniff(body).ok_or(ParseError::UnknownFormat)?;
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let tree = match format {
        Format::Json => serde_json::from_slice::<Value>(body).map_err(|e| {
            if e.to_string().starts_with("recursion limit exceeded") {
                ParseError::TooDeep
            } else {
                ParseError::Json(e.to_string())
            }
        })?,
        Format::Xml => from_xml(body)?,
    };
    match resource_type(&tree) {
        None => return Err(ParseError::NoResourceType),
        Some(t) if !R4_RESOURCE_TYPES.contains(&t) => return Err(ParseError::UnknownResourceType),
        Some(_) => {}
    }
    check_entries(&tree)?;
    Ok((format, tree))
}

/// Every Bundle entry's resource (nested Bundles included) must name a known R4 type.
fn check_entries(tree: &Value) -> Result<(), ParseError> {
    if resource_type(tree) != Some("Bundle") {
        return Ok(());
    }
    for e in items(tree, "entry") {
        if let Some(r) = first(e, "resource") {
            if !resource_type(r).is_some_and(|t| R4_RESOURCE_TYPES.contains(&t)) {
                return Err(ParseError::EntryWithoutResourceType);
            }
            check_entries(r)?;
        }
    }
    Ok(())
}

/// The `resourceType` of a resource.
pub fn resource_type(v: &Value) -> Option<&str> {
    v.get("resourceType").and_then(Value::as_str).filter(|t| !t.is_empty())
}

/// Every value of `key`: the items of a list, or the one value.
pub fn items<'v>(v: &'v Value, key: &str) -> Vec<&'v Value> {
    match v.get(key) {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(one) => vec![one],
    }
}

/// The first value of `key`.
pub fn first<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v.get(key)? {
        Value::Array(list) => list.first(),
        Value::Null => None,
        one => Some(one),
    }
}

/// A primitive as text: a string, number or boolean (or, from XML, an element whose `value`
/// is one). Empty strings are absent.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => o.get("value").and_then(text),
        Value::Array(list) => list.first().and_then(text),
        _ => None,
    }
}

/// The text at a path of keys, taking the first value at each step.
pub fn text_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = first(cur, key)?;
    }
    text(cur)
}

/// The resources of a body: the entries of a Bundle (nested Bundles included), else the body.
pub fn resources(tree: &Value) -> Vec<(Option<String>, &Value)> {
    let mut out = Vec::new();
    collect(tree, None, &mut out);
    out
}

fn collect<'v>(v: &'v Value, full_url: Option<String>, out: &mut Vec<(Option<String>, &'v Value)>) {
    if resource_type(v) == Some("Bundle") {
        for e in items(v, "entry") {
            if let Some(r) = first(e, "resource") {
                collect(r, text_at(e, &["fullUrl"]), out);
            }
        }
    } else {
        out.push((full_url, v));
    }
}

/// Bundle entries that carry no resource (a `DELETE` or `GET` request of a transaction or
/// batch), nested Bundles included: they mean something and must not vanish.
pub fn entries_without_resource(tree: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if resource_type(tree) == Some("Bundle") {
        for e in items(tree, "entry") {
            match first(e, "resource") {
                Some(r) => out.extend(entries_without_resource(r)),
                None => out.push(e),
            }
        }
    }
    out
}

/// The first patient identifier (system, value) a body names: a Patient's first identifier, else
/// the identifier of a logical `subject`/`patient` reference. Used only to key and partition.
pub fn first_patient_identifier(tree: &Value) -> Option<(String, String)> {
    let all = resources(tree);
    let of = |id: &Value| Some((text_at(id, &["system"]).unwrap_or_default(), text_at(id, &["value"])?));
    all.iter()
        .filter(|(_, r)| resource_type(r) == Some("Patient"))
        .find_map(|(_, r)| items(r, "identifier").into_iter().find_map(of))
        .or_else(|| {
            all.iter().find_map(|(_, r)| {
                ["subject", "patient"]
                    .iter()
                    .find_map(|k| first(r, k).and_then(|s| first(s, "identifier")).and_then(of))
            })
        })
}

struct Frame {
    name: String,
    fields: Map<String, Value>,
}

fn attributes(e: &BytesStart<'_>) -> Result<Map<String, Value>, ParseError> {
    let mut fields = Map::new();
    // quick-xml's own duplicate check compares every attribute with every other (quadratic in
    // their number); the map finds duplicates in linear time instead
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|x| ParseError::Xml(x.to_string()))?;
        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        if a.key.as_ref().starts_with(b"xmlns") {
            continue;
        }
        let value = a.unescape_value().map_err(|x| ParseError::Xml(x.to_string()))?;
        if fields.insert(key, Value::String(value.into_owned())).is_some() {
            return Err(ParseError::Xml("duplicate attribute".into()));
        }
    }
    Ok(fields)
}

fn is_resource_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

/// The value of a finished element: a primitive's `value`, a resource container's resource, or
/// the element's fields.
fn finish(frame: Frame) -> Value {
    let Frame { name, mut fields } = frame;
    if is_resource_name(&name) {
        let mut r = Map::new();
        r.insert("resourceType".into(), Value::String(name));
        r.extend(fields);
        return Value::Object(r);
    }
    if fields.len() == 1 {
        if let Some(Value::String(_)) = fields.get("value") {
            return fields.remove("value").unwrap_or(Value::Null);
        }
        let only = fields.iter().next().map(|(k, v)| (k.clone(), v.clone()));
        if let Some((k, Value::Array(list))) = only
            && is_resource_name(&k)
            && list.len() == 1
        {
            return list.into_iter().next().unwrap_or(Value::Null);
        }
    }
    Value::Object(fields)
}

fn attach(stack: &mut [Frame], root: &mut Option<Value>, name: String, value: Value) -> Result<(), ParseError> {
    match stack.last_mut() {
        Some(parent) => {
            let slot = parent.fields.entry(name).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = slot {
                list.push(value);
            }
        }
        None if root.is_some() => return Err(ParseError::SeveralRoots),
        None => *root = Some(value),
    }
    Ok(())
}

fn from_xml(body: &[u8]) -> Result<Value, ParseError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = None;
    let xml_err = |e: quick_xml::Error| ParseError::Xml(e.to_string());
    loop {
        match reader.read_event().map_err(xml_err)? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "div" {
                    // XHTML narrative: kept as its XHTML text, as FHIR JSON carries it
                    let start = String::from_utf8_lossy(&e).into_owned();
                    let end = e.to_end().into_owned();
                    let span = reader.read_to_end(end.name()).map_err(xml_err)?;
                    let inner = body
                        .get(span.start as usize..span.end as usize)
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    attach(&mut stack, &mut root, name, Value::String(format!("<{start}>{inner}</div>")))?;
                    continue;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                stack.push(Frame {
                    name,
                    fields: attributes(&e)?,
                });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let value = finish(Frame {
                    name: name.clone(),
                    fields: attributes(&e)?,
                });
                attach(&mut stack, &mut root, name, value)?;
            }
            Event::End(_) => {
                let frame = stack.pop().ok_or_else(|| ParseError::Xml("unbalanced end tag".into()))?;
                let name = frame.name.clone();
                let value = finish(frame);
                attach(&mut stack, &mut root, name, value)?;
            }
            Event::Text(t) if stack.is_empty() && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(ParseError::Xml("text outside the root element".into()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::Xml("document ended inside an element".into()));
    }
    root.ok_or_else(|| ParseError::Xml("no root element".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir">
  <type value="collection"/>
  <entry>
    <fullUrl value="urn:uuid:p1"/>
    <resource>
      <Patient>
        <id value="p1"/>
        <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Jo &amp; Co</p></div></text>
        <extension url="https://example.org/ext"><valueString value="x"/></extension>
        <identifier>
          <system value="https://fhir.nhs.uk/Id/nhs-number"/>
          <value value="9434765919"/>
        </identifier>
        <name><family value="O&apos;Brien"/><given value="Ann"/><given value="Marie"/></name>
        <birthDate value="1980-02-03"/>
        <active value="true"/>
      </Patient>
    </resource>
  </entry>
</Bundle>"#;

    #[test]
    fn xml_reads_like_json() {
        let (format, tree) = parse(XML.as_bytes()).expect("xml");
        assert_eq!(format, Format::Xml);
        assert_eq!(resource_type(&tree), Some("Bundle"));
        let rs = resources(&tree);
        assert_eq!(rs.len(), 1);
        let (url, p) = &rs[0];
        assert_eq!(url.as_deref(), Some("urn:uuid:p1"));
        assert_eq!(resource_type(p), Some("Patient"));
        assert_eq!(text_at(p, &["name", "family"]).as_deref(), Some("O'Brien"));
        let given: Vec<String> = first(p, "name")
            .map(|n| items(n, "given").into_iter().filter_map(text).collect())
            .unwrap_or_default();
        assert_eq!(given, ["Ann", "Marie"]);
        assert_eq!(text_at(p, &["birthDate"]).as_deref(), Some("1980-02-03"));
        assert_eq!(text_at(p, &["extension", "url"]).as_deref(), Some("https://example.org/ext"));
        assert!(text_at(p, &["text", "div"]).is_some_and(|d| d.contains("<p>Jo &amp; Co</p>") && d.starts_with("<div")));
        assert_eq!(
            first_patient_identifier(&tree),
            Some(("https://fhir.nhs.uk/Id/nhs-number".into(), "9434765919".into()))
        );

        let json = r#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:p1","resource":
            {"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],
             "name":[{"family":"O'Brien","given":["Ann","Marie"]}],"birthDate":"1980-02-03","active":true}}]}"#;
        let (format, j) = parse(json.as_bytes()).expect("json");
        assert_eq!(format, Format::Json);
        let (_, jp) = &resources(&j)[0];
        for path in [
            &["name", "family"][..],
            &["birthDate"],
            &["identifier", "value"],
            &["active"],
            &["id"],
        ] {
            assert_eq!(text_at(jp, path), text_at(p, path), "{path:?}");
        }
    }

    #[test]
    fn bad_bodies_have_bounded_codes() {
        let code = |b: &[u8]| parse(b).err().map(|e| e.code());
        assert_eq!(code(b"{not json"), Some("fhir_not_json"));
        assert_eq!(code(b"<Patient><id value='1'></Patient>"), Some("fhir_not_xml"));
        assert_eq!(code(b"MSH|^~\\&|"), Some("fhir_unknown_format"));
        assert_eq!(code(b"{\"id\": \"1\"}"), Some("fhir_no_resource_type"));
        assert_eq!(code(b"[1,2]"), Some("fhir_unknown_format"));
        assert!(parse(b"\xEF\xBB\xBF {\"resourceType\":\"Patient\"}").is_ok());
        assert_eq!(code(b"{\"resourceType\": \"Foo\"}"), Some("fhir_unknown_resource_type"));
        assert_eq!(
            code(b"{\"resourceType\": \"../../etc/passwd\"}"),
            Some("fhir_unknown_resource_type")
        );
        assert_eq!(code(b"<Foo xmlns='http://hl7.org/fhir'/>"), Some("fhir_unknown_resource_type"));
        assert_eq!(code(b"<Patient/><Patient/>"), Some("fhir_several_roots"));
        assert_eq!(code(b"<Patient/>trailing"), Some("fhir_not_xml"));
        assert_eq!(
            code(br#"{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "x"}}]}"#),
            Some("fhir_entry_without_resource_type")
        );
        assert_eq!(
            code(br#"{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Nope"}}]}}]}"#),
            Some("fhir_entry_without_resource_type")
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        // 10,000 nested elements used to overflow the stack (dropping or printing the tree)
        let depth = 10_000;
        let xml = format!("<Patient>{}{}</Patient>", "<extension>".repeat(depth), "</extension>".repeat(depth));
        assert_eq!(parse(xml.as_bytes()).err(), Some(ParseError::TooDeep));
        let json = format!(
            "{{\"resourceType\": \"Patient\", \"x\": {}1{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(parse(json.as_bytes()).err(), Some(ParseError::TooDeep));
        let ok = format!("<Patient>{}{}</Patient>", "<extension>".repeat(100), "</extension>".repeat(100));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn many_attributes_are_read_in_linear_time_and_duplicates_refused() {
        let attrs: String = (0..80_000).map(|i| format!(" a{i}=\"v\"")).collect();
        let xml = format!("<Patient><id value=\"1\"{attrs}/></Patient>");
        assert!(parse(xml.as_bytes()).is_ok());
        assert_eq!(
            parse(b"<Patient><id value='1' value='2'/></Patient>").err().map(|e| e.code()),
            Some("fhir_not_xml")
        );
    }
}
