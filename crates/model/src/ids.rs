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
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// The event id of an HL7 v2 message: sending application and facility, MSH-10, and a hash of
/// every segment after MSH with terminators normalised. A resend of the same message (even with
/// a new MSH-7 time or different line endings) has the same id; a control id reused for
/// different content does not.
pub fn hl7_event_id(msg: &sluice_hl7::Message<'_>) -> String {
    let msh = msg.segment(0);
    let mut body = Sha256::new();
    for seg in msg.segments().skip(1) {
        body.update(seg.raw());
        body.update(b"\r");
    }
    let body = body.finalize();
    uuid_from(&[b"hl7v2", msh.field(3).raw(), msh.field(4).raw(), msh.field(10).raw(), &body])
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
}
