//! Deterministic ids. The same input always gives the same id, so a replay or a resend is
//! recognisable downstream and never becomes a second clinical event.

use sha2::{Digest, Sha256};

/// Hex sha-256 of the bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A UUID-shaped (version 8) id from a hash over the parts, each length-prefixed so that part
/// boundaries cannot be confused.
pub fn uuid_from(parts: &[&[u8]]) -> String {
    let x = hex::encode(uuid_bytes(parts));
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// What a message is, for telling a resend from a new message: `identity` names the message
/// (sender, control id, type), `digest` its content. An input is skipped as a resend only when
/// both are the same as an earlier one's; the same identity with another digest is a control id
/// reused for different content, which is kept and flagged, never skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageIdentity {
    /// Hex sha-256 over what names the message; empty when the message has no name of its own
    /// (a FHIR body without `Bundle.identifier` or MessageHeader id), so only content can match.
    pub identity: String,
    /// Hex sha-256 over the content, ignoring only what a resend legitimately changes.
    pub digest: String,
}

impl MessageIdentity {
    /// The event id of one event made from the message: `part` tells apart the events of one
    /// message (a FHIR Bundle gives one event per patient); empty for HL7 v2.
    pub fn event_id(&self, kind: &str, part: &str) -> String {
        uuid_from(&[kind.as_bytes(), self.identity.as_bytes(), self.digest.as_bytes(), part.as_bytes()])
    }
}

/// The identity of an HL7 v2 message: sending application (MSH-3), sending facility (MSH-4),
/// control id (MSH-10) and message type with trigger and structure (MSH-9). Its digest covers
/// every MSH field except MSH-7 (a resend may carry a new send time) and every later segment with
/// terminators normalised (a resend may change line endings).
pub fn hl7_identity(msg: &sluice_hl7::Message<'_>) -> MessageIdentity {
    let msh = msg.segment(0);
    let identity = parts_hex(&[
        b"hl7v2",
        msh.field(3).raw(),
        msh.field(4).raw(),
        msh.field(10).raw(),
        msh.field(9).raw(),
    ]);
    let mut body = Sha256::new();
    for n in 1..=msh.field_count() {
        if n != 7 {
            let f = msh.field(n).raw();
            body.update((f.len() as u64).to_be_bytes());
            body.update(f);
        }
    }
    for seg in msg.segments().skip(1) {
        body.update(seg.raw());
        body.update(b"\r");
    }
    MessageIdentity {
        identity,
        digest: hex::encode(body.finalize()),
    }
}

/// The event id of an HL7 v2 message: see [`hl7_identity`]. A resend of the same message (even
/// with a new MSH-7 time or different line endings) has the same id; a control id reused for
/// another message type or different content does not.
pub fn hl7_event_id(msg: &sluice_hl7::Message<'_>) -> String {
    hl7_identity(msg).event_id("hl7v2", "")
}

/// Hex sha-256 over length-prefixed parts.
pub fn parts_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The Kafka key of a record before matching: the sending facility and the first patient
/// identifier (PID-3) with its assigning authority, so one source patient's messages share a
/// partition and keep their order. Messages without a patient are keyed by facility and MSH-10.
pub fn source_patient_key(msg: &sluice_hl7::Message<'_>) -> Vec<u8> {
    let facility = msg.segment(0).field(4).raw();
    let mut key = facility.to_vec();
    key.push(b'|');
    match msg.find("PID", 0) {
        Some(pid) if !pid.field(3).is_empty() => {
            let cx = pid.field(3).repetition(0);
            key.extend_from_slice(cx.component(1).raw());
            key.push(b'^');
            key.extend_from_slice(cx.component(4).raw());
        }
        _ => key.extend_from_slice(msg.segment(0).field(10).raw()),
    }
    key
}

/// The 16 bytes of [`uuid_from`]: SHA-256 over the length-prefixed parts, version 8 and the RFC
/// 9562 variant set.
pub fn uuid_bytes(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_with_new_time_and_line_endings_keeps_the_id() {
        let a = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|42|P|2.5\rPID|1||1\r";
        let b = b"MSH|^~\\&|A|B|C|D|20240102||ADT^A01|42|P|2.5\r\nPID|1||1\r\n";
        let c = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|42|P|2.5\rPID|1||2\r";
        let id = |x: &[u8]| hl7_event_id(&sluice_hl7::Message::parse(x));
        assert_eq!(id(a), id(b));
        assert_ne!(id(a), id(c));
        assert_eq!(id(a).len(), 36);
    }

    #[test]
    fn another_message_type_or_content_under_one_control_id_is_another_message() {
        let id = |x: &[u8]| hl7_identity(&sluice_hl7::Message::parse(x));
        let a04 = id(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|MSG00001|P|2.5\rPID|1||1\r");
        let a11 = id(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A11|MSG00001|P|2.5\rPID|1||1\r");
        let other = id(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|MSG00001|P|2.5\rPID|1||2\r");
        let other_version = id(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|MSG00001|P|2.4\rPID|1||1\r");
        assert_ne!(a04.identity, a11.identity, "the message type is part of what names a message");
        assert_ne!(a04.event_id("hl7v2", ""), a11.event_id("hl7v2", ""));
        assert_eq!(a04.identity, other.identity);
        assert_ne!(a04.digest, other.digest, "different content under one name");
        assert_ne!(a04.digest, other_version.digest, "MSH fields other than MSH-7 are content");
    }
}
