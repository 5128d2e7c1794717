//! The properties the fuzz target checks on arbitrary input, shared with the stable-toolchain
//! mutation test so both check the same thing. Each violated property panics.

use crate::{Delimiters, Message, escape, split_messages, unescape};

/// Parses `data` and walks everything a caller can reach, checking that:
/// - parsing never panics and a message is acceptable only without a fatal problem;
/// - encoding gives back exactly the input bytes (nothing dropped or rewritten);
/// - every value is a slice of the input, and every path lookup, text decode and
///   unescape of any value completes;
/// - splitting into messages loses no message start and each part parses;
/// - escaping any decoded text and unescaping it again gives the same text.
pub fn check(data: &[u8]) {
    let msg = Message::parse(data);
    assert_eq!(msg.encode(), data, "encode is not the identity");
    assert_eq!(msg.is_acceptable(), msg.fatal_problem().is_none());
    let span = data.as_ptr_range();
    let inside = |s: &[u8]| s.is_empty() || (span.start <= s.as_ptr() && s.as_ptr_range().end <= span.end);
    let d = *msg.delimiters();
    for seg in msg.segments() {
        assert!(inside(seg.raw()));
        // the single-pass visitor yields exactly what walking the levels yields
        let mut walked = Vec::new();
        for (n, field) in seg.fields() {
            assert_eq!(field.raw(), seg.field(n).raw(), "fields() and field(n) disagree");
            for (r, rep) in field.repetitions().enumerate() {
                for (c, comp) in rep.components().enumerate() {
                    for (s, sub) in comp.subcomponents().enumerate() {
                        walked.push((n, r + 1, c + 1, s + 1, sub));
                    }
                }
            }
        }
        let mut visited = Vec::new();
        seg.for_each_value(|p, v| visited.push((p.field, p.repetition, p.component, p.subcomponent, v)));
        assert_eq!(visited, walked, "for_each_value and the iterators disagree");
        for f in 0..=seg.field_count() + 1 {
            let field = seg.field(f);
            assert!(inside(field.raw()));
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        assert!(inside(sub));
                        let text = msg.text(sub);
                        let _ = unescape(sub, &d);
                        round_trip(&text, &d);
                    }
                }
            }
        }
        let name = seg.name_str();
        if !name.is_empty() {
            for path in [
                format!("{name}-1"),
                format!("{name}-3[2].1"),
                format!("{name}-5.2.1"),
                format!("{name}[2]-2"),
            ] {
                if let Ok(v) = msg.get(&path) {
                    assert!(inside(v));
                }
            }
        }
    }
    let parts = split_messages(data);
    for p in &parts {
        assert!(inside(p));
        let _ = Message::parse(p).problems().len();
    }
}

fn round_trip(text: &str, d: &Delimiters) {
    let escaped = escape(text, d);
    let back = unescape(escaped.as_bytes(), d);
    // formatting escapes are kept as written, so only check text that contains none, and only
    // when the message declares an escape character at all
    if d.escape.is_some() && !text.contains('\\') && !text.contains('\n') {
        assert_eq!(String::from_utf8_lossy(&back), text, "escape then unescape changed the text");
    }
}
