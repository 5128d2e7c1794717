//! HL7 escape sequences. Delimiter escapes (`\F\ \S\ \T\ \R\ \E\`) become the delimiter,
//! `\Xhh..\` becomes its bytes, `\.br\` becomes a line break, and every other formatting or
//! character-set escape (`\H\ \N\ \.sp\ \Cxxyy\ \Zxx\` ...) is kept exactly as written, so no
//! formatting intent is lost and nothing turns into garbage.

use crate::Delimiters;
use std::borrow::Cow;

pub fn unescape<'a>(raw: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    let Some(esc) = d.escape else {
        return Cow::Borrowed(raw);
    };
    if memchr::memchr(esc, raw).is_none() {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != esc {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(close) = raw[i + 1..].iter().position(|c| *c == esc) else {
            // a lone escape character is data
            out.extend_from_slice(&raw[i..]);
            break;
        };
        let body = &raw[i + 1..i + 1 + close];
        let whole = &raw[i..i + close + 2];
        match body {
            b"F" => out.push(d.field),
            b"S" => out.push(d.component),
            b"R" => out.push(d.repetition),
            b"E" => out.push(esc),
            b"T" => out.push(d.subcomponent.unwrap_or(b'&')),
            b".br" => out.push(b'\n'),
            _ if body.first() == Some(&b'X')
                && body.len() > 1
                && (body.len() - 1).is_multiple_of(2)
                && body[1..].iter().all(u8::is_ascii_hexdigit) =>
            {
                for pair in body[1..].chunks(2) {
                    let hi = (pair[0] as char).to_digit(16).unwrap_or(0);
                    let lo = (pair[1] as char).to_digit(16).unwrap_or(0);
                    out.push((hi * 16 + lo) as u8);
                }
            }
            _ => out.extend_from_slice(whole),
        }
        i += close + 2;
    }
    Cow::Owned(out)
}

/// Escapes text so it can be written into a field: the inverse of [`unescape`] for delimiters.
pub fn escape(text: &str, d: &Delimiters) -> String {
    let esc = d.escape.unwrap_or(b'\\') as char;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = match c {
            _ if c as u32 == d.field as u32 => Some('F'),
            _ if c as u32 == d.component as u32 => Some('S'),
            _ if c as u32 == d.repetition as u32 => Some('R'),
            _ if c == esc => Some('E'),
            _ if Some(c as u32) == d.subcomponent.map(u32::from) => Some('T'),
            _ => None,
        };
        match code {
            Some(code) => {
                out.push(esc);
                out.push(code);
                out.push(esc);
            }
            None if c == '\n' => {
                out.push(esc);
                out.push_str(".br");
                out.push(esc);
            }
            None => out.push(c),
        }
    }
    out
}
