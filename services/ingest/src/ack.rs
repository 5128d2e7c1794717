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

/// Longest header value echoed into an ACK (longer ones are cut): an ACK stays small.
const MAX_ECHO: usize = 199;

/// A header value as it may appear in an ACK: decoded text re-escaped for the standard
/// delimiters, with every control character (CR, LF, the MLLP bytes 0x0B and 0x1C ...) written
/// as a `\Xhh\` escape, so nothing a sender writes can end, split or add an ACK frame or
/// segment.
pub fn echo(text: &str) -> String {
    let cut: String = text.chars().take(MAX_ECHO).collect();
    let escaped = sluice_hl7::escape(&cut, &sluice_hl7::Delimiters::default());
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            out.push_str("\\X");
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("{b:02X}"));
            }
            out.push('\\');
        } else {
            out.push(c);
        }
    }
    out
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
        echo(&msg.text(msg.segment(0).field(n).raw()))
    };
    let trigger = if acceptable_header {
        echo(&msg.text(msg.segment(0).field(9).repetition(0).component(2).raw()))
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
        trigger,
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

    /// An ACK is one well-formed frame whatever the input: MSH, MSA and at most an ERR segment,
    /// each ended by CR, no MLLP byte inside, and the control id and type echoed in encoded form.
    fn assert_one_well_formed_ack(ack: &[u8], input: &[u8]) {
        let shown = String::from_utf8_lossy(input);
        assert!(!ack.contains(&0x0B) && !ack.contains(&0x1C), "MLLP byte in the ACK for {shown:?}");
        assert!(!ack.contains(&b'\n'), "line feed in the ACK for {shown:?}");
        let segments: Vec<&[u8]> = ack.split(|b| *b == b'\r').filter(|s| !s.is_empty()).collect();
        assert!(ack.ends_with(b"\r"));
        assert!(
            (2..=3).contains(&segments.len()),
            "{} segments in the ACK for {shown:?}",
            segments.len()
        );
        assert!(segments[0].starts_with(b"MSH|^~\\&|") && segments[1].starts_with(b"MSA|"));
        let m = Message::parse(ack);
        assert!(m.is_acceptable(), "the ACK does not parse for {shown:?}");
        assert_eq!(m.segment(0).field(9).repetition(0).component(1).raw(), b"ACK");
    }

    #[test]
    fn nothing_in_a_header_can_end_split_or_add_an_ack_frame() {
        let hostile = [
            "\\X1C0D\\",
            "\\X1C0D0B\\",
            "\\X0D\\",
            "\\X0A\\MSA|AA|X",
            "\\X0B\\MSH|^~\\&|",
            "\\.br\\",
            "a\\F\\b\\S\\c\\R\\d\\E\\",
            "\\X00\\\\X7F\\",
            "\\XC3A9\\",
        ];
        for h in hostile {
            for template in [
                "MSH|^~\\&|{h}|{h}|R|F|2024||ADT^{h}|{h}|P|2.5\rPID|1\r",
                "MSH|^~\\&|A|B|{h}|{h}|2024||ADT^A01|C1|{h}|{h}\r",
            ] {
                let input = template.replace("{h}", h);
                for (code, err) in [("AA", None), ("AR", Some(("207", "application internal error, resend")))] {
                    let ack = build(&Message::parse(input.as_bytes()), code, err);
                    assert_one_well_formed_ack(&ack, input.as_bytes());
                }
            }
        }
    }

    #[test]
    fn any_input_gets_one_well_formed_ack() {
        // property: random header bytes, including every control byte and escape, never break it
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: Vec<u8> = (0u8..=0x7F).chain([0xC3, 0xA9, 0xFF]).collect();
        for _ in 0..5_000 {
            let mut input = b"MSH|^~\\&|".to_vec();
            let len = rng.random_range(0..120);
            for _ in 0..len {
                let b = if rng.random_bool(0.3) {
                    *[b'\\', b'X', b'0', b'1', b'C', b'D', b'B', b'|', b'^']
                        .get(rng.random_range(0..9))
                        .unwrap_or(&b'X')
                } else {
                    alphabet[rng.random_range(0..alphabet.len())]
                };
                input.push(b);
            }
            let m = Message::parse(&input);
            let ack = build(&m, if m.is_acceptable() { "AA" } else { "AR" }, Some(("100", "x")));
            assert_one_well_formed_ack(&ack, &input);
        }
    }

    #[test]
    fn nak_for_garbage_has_an_err_segment() {
        let m = Message::parse(b"not hl7 at all");
        let a = String::from_utf8(build(&m, "AR", Some(("100", "no_msh_segment")))).expect("utf8");
        assert!(a.contains("\rMSA|AR|\r"));
        assert!(a.contains("\rERR||MSH^1|100^no_msh_segment^HL70357|E\r"));
    }
}
