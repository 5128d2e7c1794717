//! MSH-18 character sets. The raw bytes are never changed; text handed to the canonical model is
//! decoded to UTF-8 according to the declared set.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// MSH-18 empty: HL7 says ASCII; in practice feeds send UTF-8 or Latin-1, so decode UTF-8
    /// when the bytes are valid UTF-8 and Latin-1 otherwise.
    Unspecified,
    Ascii,
    Latin1,
    Utf8,
    /// A value we do not know: handled like [`Charset::Unspecified`] and reported as a warning.
    Unknown,
}

impl Charset {
    pub fn from_msh18(value: &[u8]) -> Charset {
        let v = value.trim_ascii();
        if v.is_empty() {
            return Charset::Unspecified;
        }
        let upper = v.to_ascii_uppercase();
        match upper.as_slice() {
            b"ASCII" => Charset::Ascii,
            b"8859/1" | b"ISO-8859-1" | b"ISO_IR 100" | b"8859/15" => Charset::Latin1,
            b"UNICODE UTF-8" | b"UTF-8" | b"UTF8" | b"ISO_IR 192" => Charset::Utf8,
            _ => Charset::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Charset::Unspecified => "unspecified",
            Charset::Ascii => "ascii",
            Charset::Latin1 => "iso-8859-1",
            Charset::Utf8 => "utf-8",
            Charset::Unknown => "unknown",
        }
    }
}

/// Decodes bytes to UTF-8 text under a declared charset. Invalid UTF-8 under a UTF-8
/// declaration becomes U+FFFD rather than being dropped, so the loss is visible.
pub fn decode_bytes(bytes: &[u8], charset: Charset) -> Cow<'_, str> {
    match charset {
        Charset::Latin1 => match std::str::from_utf8(bytes) {
            // pure ASCII is the same in both
            Ok(s) if s.is_ascii() => Cow::Borrowed(s),
            _ => Cow::Owned(bytes.iter().map(|b| *b as char).collect()),
        },
        Charset::Utf8 => String::from_utf8_lossy(bytes),
        Charset::Ascii | Charset::Unspecified | Charset::Unknown => match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(bytes.iter().map(|b| *b as char).collect()),
        },
    }
}

/// Which encoding the text of a message was actually decoded as, for the transport metadata.
pub fn detect(bytes: &[u8], declared: Charset) -> &'static str {
    match declared {
        Charset::Latin1 => "iso-8859-1",
        Charset::Utf8 => "utf-8",
        _ if bytes.is_ascii() => "ascii",
        _ if std::str::from_utf8(bytes).is_ok() => "utf-8",
        _ => "iso-8859-1",
    }
}
