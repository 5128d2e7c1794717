//! HL7 acknowledgements (original mode): `MSA-1` AA, AE or AR, with an ERR segment for errors.
//! Error texts are fixed strings: they never carry message content.

use sluice_hl7::Message;
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

fn now_hl7() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}+0000", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Builds the ACK for a message. Works on unparseable input too (fields are then empty).
pub fn build(msg: &Message<'_>, code: &str, error: Option<(&str, &str)>) -> Vec<u8> {
    let acceptable_header = msg.segment(0).name() == b"MSH"
        && !msg
            .problems()
            .iter()
            .any(|p| p.code == sluice_hl7::ProblemCode::BadEncodingCharacters);
    let f = |n: usize| -> String {
        if !acceptable_header {
            return String::new();
        }
        // echo only safe header values, re-escaped for the standard delimiters
        sluice_hl7::escape(&msg.text(msg.segment(0).field(n).raw()), &sluice_hl7::Delimiters::default())
    };
    let trigger = if acceptable_header {
        msg.text(msg.segment(0).field(9).repetition(0).component(2).raw())
    } else {
        String::new()
    };
    let version = match f(12) {
        v if v.is_empty() => "2.5".to_owned(),
        v => v,
    };
    let processing = match f(11) {
        p if p.is_empty() => "P".to_owned(),
        p => p,
    };
    let id = format!("ACK{}{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let mut out = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}\rMSA|{}|{}\r",
        f(5),
        f(6),
        f(3),
        f(4),
        now_hl7(),
        sluice_hl7::escape(&trigger, &sluice_hl7::Delimiters::default()),
        id,
        processing,
        version,
        code,
        f(10)
    );
    if let Some((err_code, text)) = error {
        out.push_str(&format!("ERR||MSH^1|{err_code}^{text}^HL70357|E\r"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_echoes_control_id_and_swaps_applications() {
        let m = Message::parse(b"MSH|^~\\&|LAB|RTH|EPR|RTH|2024||ORU^R01|C42|P|2.4\r");
        let a = String::from_utf8(build(&m, "AA", None)).expect("utf8");
        assert!(a.starts_with("MSH|^~\\&|EPR|RTH|LAB|RTH|"), "{a}");
        assert!(a.contains("|ACK^R01^ACK|"));
        assert!(a.contains("\rMSA|AA|C42\r"));
        assert!(a.contains("|P|2.4\r"));
    }

    #[test]
    fn nak_for_garbage_has_an_err_segment() {
        let m = Message::parse(b"not hl7 at all");
        let a = String::from_utf8(build(&m, "AR", Some(("100", "no_msh_segment")))).expect("utf8");
        assert!(a.contains("\rMSA|AR|\r"));
        assert!(a.contains("\rERR||MSH^1|100^no_msh_segment^HL70357|E\r"));
    }
}
