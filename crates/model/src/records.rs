//! Rust shapes of the records in `schemas/`. Field names and types mirror the `.avsc` files;
//! the schema tests encode and decode each one, so a drift fails the build's tests.

use crate::Micros;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Timestamp {
    pub value: String,
    pub precision: String,
    pub offset_minutes: Option<i32>,
    pub utc_micros: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Coded {
    pub code: Option<String>,
    pub text: Option<String>,
    pub system: Option<String>,
    pub alt_code: Option<String>,
    pub alt_text: Option<String>,
    pub alt_system: Option<String>,
    #[serde(default)]
    pub original_text: Option<String>,
}

/// An entity identifier (EI): the value and who assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EntityId {
    pub value: String,
    pub namespace: Option<String>,
    pub universal_id: Option<String>,
    pub universal_id_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identifier {
    pub value: String,
    pub type_code: Option<String>,
    pub assigning_authority: Option<String>,
    pub assigning_facility: Option<String>,
    pub system: Option<String>,
    pub nhs_number_valid: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MshSummary {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub message_datetime: String,
    pub message_type: String,
    pub trigger_event: String,
    pub message_structure: String,
    pub control_id: String,
    pub processing_id: String,
    pub version: String,
    pub charset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RawMessage {
    pub raw_id: String,
    pub transport: String,
    pub listener: String,
    pub peer: String,
    pub received_at: Micros,
    pub detected_charset: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub msh: Option<MshSummary>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventSource {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub control_id: String,
    pub version: String,
    pub processing_id: String,
    pub raw_id: String,
    pub raw_topic: String,
    pub raw_partition: i32,
    pub raw_offset: i64,
    pub transport: String,
    pub charset: String,
    pub replay: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PersonName {
    pub family: Option<String>,
    pub given: Option<String>,
    pub middle: Option<String>,
    pub suffix: Option<String>,
    pub prefix: Option<String>,
    pub type_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Address {
    pub lines: Vec<String>,
    pub city: Option<String>,
    pub district: Option<String>,
    pub postcode: Option<String>,
    pub country: Option<String>,
    pub type_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Patient {
    pub identifiers: Vec<Identifier>,
    pub names: Vec<PersonName>,
    pub birth_date: Option<Timestamp>,
    pub sex: Option<String>,
    pub addresses: Vec<Address>,
    pub death_time: Option<Timestamp>,
    pub deceased: Option<String>,
    /// PID-9: other names the patient is known by (PID-5 repetitions are in `names`).
    #[serde(default)]
    pub aliases: Vec<PersonName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Encounter {
    pub patient_class: Option<String>,
    pub location: Option<String>,
    pub prior_location: Option<String>,
    pub admission_type: Option<String>,
    pub hospital_service: Option<String>,
    pub visit_number: Option<Identifier>,
    pub admit_time: Option<Timestamp>,
    pub discharge_time: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Merge {
    pub prior_identifiers: Vec<Identifier>,
    pub prior_account: Option<String>,
    pub prior_visit: Option<String>,
    /// See [`Merge::kind_of`]; only `patient_merge` and `identifier_change` change identity.
    pub kind: String,
}

impl Merge {
    /// What an ADT trigger event does with the record MRG names (HL7 v2.5 chapter 3.6).
    pub fn kind_of(trigger_event: &str) -> &'static str {
        match trigger_event {
            "A18" | "A30" | "A34" | "A36" | "A39" | "A40" => "patient_merge",
            "A46" | "A47" | "A48" | "A49" => "identifier_change",
            "A35" | "A41" => "account_merge",
            "A42" => "visit_merge",
            "A43" => "patient_move",
            "A44" => "account_move",
            "A45" | "A50" | "A51" => "visit_move",
            // the second PID names the other record
            "A24" => "patient_link",
            "A37" => "patient_unlink",
            _ => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Order {
    pub segment: String,
    pub set_id: Option<String>,
    pub placer_order_number: Option<String>,
    pub filler_order_number: Option<String>,
    pub service: Option<Coded>,
    pub observation_time: Option<Timestamp>,
    pub result_status: Option<String>,
    pub order_control: Option<String>,
    pub order_status: Option<String>,
    pub transaction_time: Option<Timestamp>,
    pub requested_time: Option<Timestamp>,
    pub priority: Option<String>,
    pub timing_start: Option<Timestamp>,
    pub timing_end: Option<Timestamp>,
    pub notes: Vec<String>,
    pub specimen_index: Option<i32>,
    pub intent: Option<String>,
    #[serde(default)]
    pub placer_entity: Option<EntityId>,
    #[serde(default)]
    pub filler_entity: Option<EntityId>,
    #[serde(default)]
    pub prior: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Observation {
    pub set_id: Option<String>,
    pub order_index: Option<i32>,
    pub value_type: Option<String>,
    pub code: Option<Coded>,
    pub sub_id: Option<String>,
    pub values: Vec<String>,
    pub units: Option<Coded>,
    pub reference_range: Option<String>,
    pub abnormal_flags: Vec<String>,
    pub result_status: Option<String>,
    pub observation_time: Option<Timestamp>,
    pub notes: Vec<String>,
    pub status: Option<String>,
    pub result_key: Option<String>,
    pub units_ucum: Option<String>,
    pub specimen_index: Option<i32>,
    #[serde(default)]
    pub interpretations: Vec<Coded>,
    #[serde(default)]
    pub prior: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Specimen {
    pub set_id: Option<String>,
    pub order_index: Option<i32>,
    pub identifier: Option<String>,
    #[serde(default)]
    pub placer_entity: Option<EntityId>,
    #[serde(default)]
    pub filler_entity: Option<EntityId>,
    #[serde(rename = "type")]
    pub specimen_type: Option<Coded>,
    pub source_site: Option<Coded>,
    pub collection_time: Option<Timestamp>,
    pub collection_end: Option<Timestamp>,
    pub received_time: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnmappedSegment {
    pub index: i32,
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnmappedField {
    pub segment_index: i32,
    pub segment: String,
    pub field: i32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClinicalEvent {
    pub event_id: String,
    pub message_type: String,
    pub trigger_event: String,
    pub message_structure: String,
    pub kind: String,
    pub source: EventSource,
    pub message_time: Option<Timestamp>,
    pub event_time: Option<Timestamp>,
    pub patient: Option<Patient>,
    pub encounter: Option<Encounter>,
    pub merge: Option<Merge>,
    pub orders: Vec<Order>,
    pub observations: Vec<Observation>,
    pub notes: Vec<String>,
    pub unmapped_segments: Vec<UnmappedSegment>,
    pub unmapped_fields: Vec<UnmappedField>,
    pub warnings: Vec<String>,
    pub specimens: Vec<Specimen>,
    pub immunisations: Vec<Immunisation>,
    pub document: Option<Document>,
    pub appointment: Option<Appointment>,
    pub medications: Vec<Medication>,
    pub allergies: Vec<Allergy>,
    pub fhir_resources: Vec<FhirResource>,
    #[serde(default)]
    pub identity_key: String,
    #[serde(default)]
    pub content_digest: String,
    #[serde(default)]
    pub control_id_reused: bool,
    #[serde(default)]
    pub explicit_nulls: Vec<ExplicitNull>,
}

/// A value sent as the explicit null `""`: present and null, which in HL7 v2 tells the receiver
/// to delete what it holds. It is never a value, identifier, key, name, date or code; this marker
/// carries the meaning to consumers instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExplicitNull {
    pub segment_index: i32,
    pub segment: String,
    pub field: i32,
    /// 0 when the whole field is `""`, else the (1-based) repetition
    pub repetition: i32,
    /// 0 when the whole field or repetition is `""`, else the component
    pub component: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FhirResource {
    pub resource_type: String,
    pub id: Option<String>,
    pub full_url: Option<String>,
    pub mapped: bool,
    pub json: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Appointment {
    pub placer_id: Option<String>,
    pub filler_id: Option<String>,
    #[serde(default)]
    pub placer_entity: Option<EntityId>,
    #[serde(default)]
    pub filler_entity: Option<EntityId>,
    pub event_reason: Option<Coded>,
    pub reason: Option<Coded>,
    pub appointment_type: Option<Coded>,
    pub duration: Option<String>,
    pub duration_units: Option<Coded>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub status: Option<String>,
    pub services: Vec<Coded>,
    pub resources: Vec<Coded>,
    pub locations: Vec<String>,
    pub staff: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Medication {
    pub segment: String,
    pub order_index: Option<i32>,
    pub medication: Option<Coded>,
    pub amount_min: Option<String>,
    pub amount_max: Option<String>,
    pub units: Option<Coded>,
    pub units_ucum: Option<String>,
    pub dosage_form: Option<Coded>,
    pub instructions: Vec<String>,
    pub dispense_amount: Option<String>,
    pub dispense_units: Option<Coded>,
    pub refills: Option<String>,
    pub prescription_number: Option<String>,
    pub time: Option<Timestamp>,
    pub route: Option<Coded>,
    pub site: Option<Coded>,
    pub status: Option<String>,
    pub intent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Allergy {
    pub set_id: Option<String>,
    pub category: Option<String>,
    pub allergen: Option<Coded>,
    pub severity: Option<String>,
    pub reactions: Vec<String>,
    pub identified_time: Option<Timestamp>,
    pub clinical_status: Option<String>,
    pub verification_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Document {
    pub document_type: Option<String>,
    pub activity_time: Option<Timestamp>,
    pub unique_id: Option<String>,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub unique_entity: Option<EntityId>,
    #[serde(default)]
    pub parent_entity: Option<EntityId>,
    pub file_name: Option<String>,
    pub completion_status: Option<String>,
    pub confidentiality: Option<String>,
    pub availability: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Immunisation {
    pub administered_time: Option<Timestamp>,
    pub vaccine: Option<Coded>,
    pub amount: Option<String>,
    pub units: Option<Coded>,
    pub units_ucum: Option<String>,
    pub lot_numbers: Vec<String>,
    pub expiry: Option<Timestamp>,
    pub manufacturer: Option<Coded>,
    pub completion_status: Option<String>,
    pub action: Option<String>,
    pub route: Option<Coded>,
    pub site: Option<Coded>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MatchResult {
    pub outcome: String,
    pub rule: String,
    pub evidence: Vec<String>,
    pub ignored: Vec<String>,
    #[serde(default)]
    pub score: Option<f64>,
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    #[serde(default)]
    pub candidates: Vec<ReviewCandidate>,
    #[serde(default)]
    pub record_key: Option<String>,
    #[serde(default)]
    pub review_item: Option<String>,
    #[serde(default)]
    pub decision_id: Option<String>,
    #[serde(default)]
    pub weights_version: String,
}

/// One field of a comparison between two records: its level and weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Comparison {
    pub field: String,
    pub level: String,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReviewCandidate {
    pub enterprise_id: String,
    pub record_key: String,
    pub score: f64,
    pub comparisons: Vec<Comparison>,
    pub person: Option<PersonSummary>,
}

/// What the matcher knows of a record, folded, for a reviewer to compare side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PersonSummary {
    pub record_keys: Vec<String>,
    pub nhs_number: Option<String>,
    pub names: Vec<String>,
    pub birth_dates: Vec<String>,
    pub sex: Option<String>,
    pub postcodes: Vec<String>,
    pub addresses: Vec<String>,
}

/// identifier-match's state (identity.records.v1): a record or a review item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IdentityState {
    pub key: String,
    pub record: Option<IdentityRecord>,
    pub item: Option<ReviewItem>,
    pub input_topic: String,
    pub input_partition: i32,
    pub input_offset: i64,
    pub updated_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecordName {
    pub family: String,
    pub given: String,
    pub other: bool,
}

/// One source record as the matcher keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IdentityRecord {
    pub key: String,
    pub enterprise_id: String,
    pub keys: Vec<String>,
    pub nhs_number: Option<String>,
    pub names: Vec<RecordName>,
    pub birth_dates: Vec<i32>,
    pub sex: Option<String>,
    pub postcodes: Vec<String>,
    pub addresses: Vec<String>,
    pub not_same: Vec<String>,
    pub linked: Vec<String>,
    pub merged_into: Option<String>,
    #[serde(default)]
    pub held: bool,
}

/// A question for a person: the held events and what the matcher found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReviewItem {
    pub item_id: String,
    pub status: String,
    pub rule: String,
    pub record_key: Option<String>,
    pub enterprise_id: Option<String>,
    pub subject: Option<PersonSummary>,
    pub candidates: Vec<ReviewCandidate>,
    #[serde(with = "byte_vecs")]
    pub held: Vec<Vec<u8>>,
    pub held_event_ids: Vec<String>,
    pub opened_at: Micros,
    pub closed_at: Option<Micros>,
    pub decisions: Vec<AppliedDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppliedDecision {
    pub decision_id: String,
    pub action: String,
    pub target_enterprise_id: Option<String>,
    pub actor: String,
    pub reason: String,
    pub at: Micros,
    pub outcome: String,
}

/// An enterprise id that changed (identity.changes.v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IdentityChange {
    pub change_id: String,
    pub kind: String,
    pub from_enterprise_id: String,
    pub to_enterprise_id: String,
    pub records: Vec<String>,
    pub rule: String,
    pub source_event_id: Option<String>,
    pub decision_id: Option<String>,
    pub at: Micros,
}

/// A reviewer's decision (identity.decisions.v1), the audit record of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IdentityDecision {
    pub decision_id: String,
    pub action: String,
    pub item_id: Option<String>,
    pub record_key: Option<String>,
    pub target_enterprise_id: Option<String>,
    pub reason: String,
    pub actor: String,
    pub role: String,
    pub at: Micros,
}

/// `Vec<Vec<u8>>` as an Avro array of bytes.
mod byte_vecs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<serde_bytes::ByteBuf> = v.iter().map(|b| serde_bytes::ByteBuf::from(b.clone())).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let wrapped: Vec<serde_bytes::ByteBuf> = Vec::deserialize(d)?;
        Ok(wrapped.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MatchedEvent {
    pub event: ClinicalEvent,
    pub enterprise_id: Option<String>,
    #[serde(rename = "match")]
    pub match_result: MatchResult,
    pub matched_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IdentityLink {
    pub key: String,
    pub enterprise_id: String,
    pub status: String,
    pub source_event_id: String,
    pub updated_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SeenEvent {
    pub event_id: String,
    pub raw_id: String,
    pub first_seen_at: Micros,
    #[serde(default)]
    pub identity_key: String,
    #[serde(default)]
    pub content_digest: String,
    #[serde(default)]
    pub raw_topic: String,
    #[serde(default = "minus_one")]
    pub raw_partition: i32,
    #[serde(default = "minus_one_long")]
    pub raw_offset: i64,
}

fn minus_one() -> i32 {
    -1
}

fn minus_one_long() -> i64 {
    -1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FhirBundle {
    pub event_id: String,
    pub kind: String,
    pub fhir_version: String,
    pub bundle: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeadLetter {
    pub dead_letter_id: String,
    pub stage: String,
    pub reason_code: String,
    pub detail: String,
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    #[serde(with = "serde_bytes")]
    pub original_key: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    pub original_value: Vec<u8>,
    pub original_headers: BTreeMap<String, String>,
    pub attempt: i32,
    pub first_failed_at: Micros,
    pub failed_at: Micros,
    pub trace_parent: Option<String>,
    pub peer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeadLetterAudit {
    pub audit_id: String,
    pub dead_letter_id: String,
    pub action: String,
    pub reason: String,
    pub actor: String,
    pub target_topic: Option<String>,
    pub at: Micros,
}

/// Who did or saw what, and why (audit.events.v1): every action and every view of patient data
/// through an API, with the authenticated actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEvent {
    pub audit_id: String,
    pub at: Micros,
    pub service: String,
    pub action: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub actor: String,
    pub roles: Vec<String>,
    pub authentication: String,
    pub reason: String,
    pub peer: Option<String>,
    pub target_topic: Option<String>,
    pub related_id: Option<String>,
}

/// Ties a Rust record to its schema.
pub trait Record: Serialize + serde::de::DeserializeOwned {
    const TYPE: crate::schemas::RecordType;
}

macro_rules! record {
    ($($t:ident),*) => {$(
        impl Record for $t {
            const TYPE: crate::schemas::RecordType = crate::schemas::RecordType::$t;
        }
    )*};
}
record!(
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
    AuditEvent
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::SchemaSet;
    use crate::wire;

    fn round_trip<T: Record + PartialEq + std::fmt::Debug>(set: &SchemaSet, v: &T) {
        let s = set.get(T::TYPE);
        let bytes = wire::encode(s, 7, v).expect("encode");
        let direct = wire::encode_direct(set.expanded_schema(T::TYPE), 7, v).expect("encode directly");
        assert_eq!(direct, bytes, "the direct encoder writes what the checked one writes");
        let (id, body) = wire::split(&bytes).expect("split");
        assert_eq!(id, 7);
        let back: T = wire::decode(s, s, body).expect("decode");
        assert_eq!(&back, v);
        let direct: T = wire::decode_direct(set.expanded_schema(T::TYPE), body).expect("decode directly");
        assert_eq!(&direct, v);
    }

    pub fn sample_event() -> ClinicalEvent {
        let ts = Timestamp {
            value: "20240101120000+0100".into(),
            precision: "second".into(),
            offset_minutes: Some(60),
            utc_micros: Some(1_704_106_800_000_000),
        };
        let id = Identifier {
            value: "9434765919".into(),
            type_code: Some("NH".into()),
            assigning_authority: Some("NHS".into()),
            system: Some("https://fhir.nhs.uk/Id/nhs-number".into()),
            nhs_number_valid: Some(true),
            ..Default::default()
        };
        ClinicalEvent {
            event_id: "e".into(),
            message_type: "ORU".into(),
            trigger_event: "R01".into(),
            kind: "result".into(),
            message_time: Some(ts.clone()),
            patient: Some(Patient {
                identifiers: vec![id.clone()],
                names: vec![PersonName {
                    family: Some("X".into()),
                    ..Default::default()
                }],
                birth_date: Some(ts.clone()),
                addresses: vec![Address {
                    lines: vec!["1 A St".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            encounter: Some(Encounter {
                visit_number: Some(id.clone()),
                admit_time: Some(ts.clone()),
                ..Default::default()
            }),
            merge: Some(Merge {
                prior_identifiers: vec![id],
                ..Default::default()
            }),
            orders: vec![Order {
                segment: "OBR".into(),
                service: Some(Coded {
                    code: Some("a".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            observations: vec![Observation {
                values: vec!["5.5".into()],
                units: Some(Coded {
                    code: Some("mmol/L".into()),
                    ..Default::default()
                }),
                abnormal_flags: vec!["H".into()],
                observation_time: Some(ts.clone()),
                status: Some("corrected".into()),
                result_key: Some("k".into()),
                units_ucum: Some("mmol/L".into()),
                ..Default::default()
            }],
            document: Some(Document {
                document_type: Some("DS".into()),
                completion_status: Some("AU".into()),
                ..Default::default()
            }),
            immunisations: vec![Immunisation {
                vaccine: Some(Coded {
                    code: Some("140".into()),
                    system: Some("CVX".into()),
                    ..Default::default()
                }),
                lot_numbers: vec!["L1".into()],
                ..Default::default()
            }],
            specimens: vec![Specimen {
                specimen_type: Some(Coded {
                    code: Some("BLD".into()),
                    ..Default::default()
                }),
                collection_time: Some(ts),
                ..Default::default()
            }],
            unmapped_segments: vec![UnmappedSegment {
                index: 4,
                name: "ZXY".into(),
                text: "ZXY|1".into(),
            }],
            unmapped_fields: vec![UnmappedField {
                segment_index: 2,
                segment: "PID".into(),
                field: 30,
                text: "Y".into(),
            }],
            warnings: vec!["w".into()],
            appointment: Some(Appointment {
                status: Some("Booked".into()),
                services: vec![Coded::default()],
                locations: vec!["Clinic 1".into()],
                ..Default::default()
            }),
            medications: vec![Medication {
                segment: "RXE".into(),
                instructions: vec!["once daily".into()],
                ..Default::default()
            }],
            allergies: vec![Allergy {
                reactions: vec!["rash".into()],
                ..Default::default()
            }],
            fhir_resources: vec![FhirResource {
                resource_type: "Patient".into(),
                mapped: true,
                json: "{}".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn every_record_round_trips_through_its_schema() {
        let set = SchemaSet::load().expect("schemas load");
        round_trip(
            &set,
            &RawMessage {
                raw_id: "r".into(),
                transport: "mllp".into(),
                listener: "l".into(),
                peer: "p".into(),
                received_at: 1,
                detected_charset: "ascii".into(),
                payload: b"MSH|\r\x00\xff".to_vec(),
                msh: Some(MshSummary::default()),
                warnings: vec![],
            },
        );
        round_trip(&set, &sample_event());
        round_trip(
            &set,
            &MatchedEvent {
                event: sample_event(),
                enterprise_id: Some("x".into()),
                match_result: MatchResult {
                    outcome: "new".into(),
                    ..Default::default()
                },
                matched_at: 5,
            },
        );
        round_trip(
            &set,
            &IdentityLink {
                key: "k".into(),
                ..Default::default()
            },
        );
        round_trip(&set, &SeenEvent::default());
        round_trip(
            &set,
            &FhirBundle {
                event_id: "e".into(),
                kind: "result".into(),
                fhir_version: "4.0.1".into(),
                bundle: "{}".into(),
            },
        );
        let mut headers = BTreeMap::new();
        headers.insert("traceparent".to_owned(), "00-x".to_owned());
        round_trip(
            &set,
            &DeadLetter {
                original_key: Some(vec![1, 2]),
                original_value: vec![0, 1, 255],
                original_headers: headers,
                original_offset: Some(9),
                ..Default::default()
            },
        );
        round_trip(&set, &DeadLetterAudit::default());
        round_trip(
            &set,
            &AuditEvent {
                audit_id: "a".into(),
                action: "view_payload".into(),
                roles: vec!["operator".into()],
                peer: Some("127.0.0.1:1".into()),
                ..Default::default()
            },
        );
        round_trip(
            &set,
            &IdentityState {
                key: "record|mrn|A|1".into(),
                record: Some(IdentityRecord {
                    key: "mrn|A|1".into(),
                    names: vec![RecordName {
                        family: "X".into(),
                        given: "Y".into(),
                        other: true,
                    }],
                    birth_dates: vec![19800101],
                    held: true,
                    ..Default::default()
                }),
                item: Some(ReviewItem {
                    held: vec![vec![0, 1, 2]],
                    subject: Some(PersonSummary::default()),
                    candidates: vec![ReviewCandidate {
                        comparisons: vec![Comparison {
                            field: "sex".into(),
                            level: "same".into(),
                            weight: 1.0,
                        }],
                        person: Some(PersonSummary::default()),
                        ..Default::default()
                    }],
                    decisions: vec![AppliedDecision::default()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        round_trip(&set, &IdentityChange::default());
        round_trip(&set, &IdentityDecision::default());
    }

    #[test]
    fn schemas_are_self_contained_for_standard_clients() {
        for r in crate::schemas::RecordType::ALL {
            let json = crate::schemas::schema_json(r).expect("schema json");
            assert!(apache_avro::Schema::parse_str(&json).is_ok(), "{}", r.name());
        }
        let matched = crate::schemas::schema_json(crate::schemas::RecordType::MatchedEvent).expect("json");
        assert!(matched.contains("\"name\":\"ClinicalEvent\""));
    }
}
