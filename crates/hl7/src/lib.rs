//! Zero-copy HL7 v2 ER7 ("pipe and hat") parser.
//!
//! A [`Message`] borrows the bytes it was parsed from and records only where each segment
//! starts and ends; fields, repetitions, components and subcomponents are sliced out on demand,
//! and values are unescaped and decoded to UTF-8 only when asked for ([`Message::text`]).
//! The original bytes are never changed, so [`Message::encode`] gives back exactly what was
//! parsed (the raw message is what Sluice keeps as the source of truth).
//!
//! Guarantees:
//! - never panics on any input; everything wrong with a message is reported as a
//!   [`Problem`] with a bounded [`ProblemCode`] and a position, and [`Problem::is_fatal`]
//!   decides whether the message can be accepted at all (NAK) or only carries a warning;
//! - delimiters come from MSH-1 and MSH-2, whatever they are;
//! - segment terminators may be CR, LF or CRLF, mixed within one message;
//! - a leading UTF-8 byte-order mark, MLLP framing bytes and surrounding whitespace are skipped.

mod charset;
#[doc(hidden)]
pub mod corpus;
mod escape;
#[doc(hidden)]
pub mod fuzzing;
mod path;

pub use charset::{Charset, decode_bytes, detect as detect_charset};
pub use escape::{escape, unescape};
pub use path::{Path, PathError};

/// The five encoding characters of a message, from MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: Option<u8>,
    pub subcomponent: Option<u8>,
    /// MSH-2 beyond the standard four characters (v2.7+ truncation character, or an artefact).
    pub extra: usize,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: Some(b'\\'),
            subcomponent: Some(b'&'),
            extra: 0,
        }
    }
}

/// Bounded codes for everything the parser can find wrong. They are safe to use as metric
/// labels and reason codes because they never carry message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemCode {
    EmptyMessage,
    NoMshSegment,
    MshTooShort,
    BadEncodingCharacters,
    MissingMessageType,
    MissingControlId,
    MissingVersion,
    InvalidSegmentName,
    BadEscapeSequence,
    UndecodableText,
    UnknownCharset,
    NonStandardDelimiters,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::EmptyMessage => "empty_message",
            ProblemCode::NoMshSegment => "no_msh_segment",
            ProblemCode::MshTooShort => "msh_too_short",
            ProblemCode::BadEncodingCharacters => "bad_encoding_characters",
            ProblemCode::MissingMessageType => "missing_message_type",
            ProblemCode::MissingControlId => "missing_control_id",
            ProblemCode::MissingVersion => "missing_version",
            ProblemCode::InvalidSegmentName => "invalid_segment_name",
            ProblemCode::BadEscapeSequence => "bad_escape_sequence",
            ProblemCode::UndecodableText => "undecodable_text",
            ProblemCode::UnknownCharset => "unknown_charset",
            ProblemCode::NonStandardDelimiters => "non_standard_delimiters",
        }
    }

    /// A fatal problem means the message cannot be accepted (the sender gets AR/AE).
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ProblemCode::EmptyMessage
                | ProblemCode::NoMshSegment
                | ProblemCode::MshTooShort
                | ProblemCode::BadEncodingCharacters
                | ProblemCode::MissingMessageType
                | ProblemCode::MissingControlId
        )
    }

    /// HL7 table 0357 error condition code for the ERR segment.
    pub fn hl7_error_code(self) -> &'static str {
        match self {
            ProblemCode::MissingMessageType | ProblemCode::MissingControlId => "101",
            ProblemCode::MissingVersion => "203",
            ProblemCode::InvalidSegmentName => "100",
            _ => "102",
        }
    }
}

/// One thing wrong with a message, with where it is (1-based segment index and field number,
/// 0 when not applicable). Carries no message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub code: ProblemCode,
    pub segment: usize,
    pub field: usize,
}

impl Problem {
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at segment {} field {}", self.code.as_str(), self.segment, self.field)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// A parsed message borrowing its bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Everything that was handed to [`Message::parse`], for the byte-exact round trip.
    original: &'a [u8],
    delims: Delimiters,
    segments: Vec<Span>,
    problems: Vec<Problem>,
    charset: Charset,
}

/// Skips a UTF-8 BOM, MLLP framing bytes and whitespace at the start.
fn leading_noise(bytes: &[u8]) -> usize {
    let mut i = 0;
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        i = 3;
    }
    while i < bytes.len() && matches!(bytes[i], 0x0B | 0x1C | b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

impl<'a> Message<'a> {
    /// Parses a message. Never fails: problems are recorded and [`Message::is_acceptable`]
    /// tells whether the message can be accepted.
    pub fn parse(original: &'a [u8]) -> Message<'a> {
        let mut msg = Message {
            original,
            delims: Delimiters::default(),
            segments: Vec::with_capacity(16),
            problems: Vec::new(),
            charset: Charset::Unspecified,
        };
        let body_start = leading_noise(original);
        let body = &original[body_start..];
        if body.iter().all(|b| b.is_ascii_whitespace() || *b == 0x1C || *b == 0x0B) {
            msg.problem(ProblemCode::EmptyMessage, 0, 0);
            return msg;
        }
        // split into segments on any run of CR / LF
        let mut pos = body_start;
        let end = original.len();
        while pos < end {
            let rest = &original[pos..end];
            let seg_len = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            let seg_end = pos + seg_len;
            let mut trimmed_end = seg_end;
            // MLLP trailer bytes or trailing blanks at the very end are not a segment
            while trimmed_end > pos && matches!(original[trimmed_end - 1], 0x1C | 0x0B) {
                trimmed_end -= 1;
            }
            if trimmed_end > pos && !original[pos..trimmed_end].iter().all(|b| *b == b' ' || *b == b'\t') {
                msg.segments.push(Span {
                    start: pos,
                    end: trimmed_end,
                });
            }
            pos = seg_end;
            while pos < end && matches!(original[pos], b'\r' | b'\n') {
                pos += 1;
            }
        }
        msg.read_header();
        msg.check_segment_names();
        msg
    }

    fn problem(&mut self, code: ProblemCode, segment: usize, field: usize) {
        self.problems.push(Problem { code, segment, field });
    }

    fn read_header(&mut self) {
        let Some(first) = self.segments.first().copied() else {
            self.problem(ProblemCode::EmptyMessage, 0, 0);
            return;
        };
        let raw = &self.original[first.start..first.end];
        if !raw.starts_with(b"MSH") {
            self.problem(ProblemCode::NoMshSegment, 1, 0);
            return;
        }
        if raw.len() < 8 {
            self.problem(ProblemCode::MshTooShort, 1, 0);
            return;
        }
        let field = raw[3];
        let enc_end = raw[4..].iter().position(|b| *b == field).map(|p| p + 4).unwrap_or(raw.len());
        let enc = &raw[4..enc_end];
        // delimiters are printable ASCII punctuation: a byte outside that (for example the
        // UTF-8 of a replacement character where `~` was) means the header is corrupt, and
        // splitting on it would silently re-shape every field
        let valid = |b: u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric() && b != field;
        if !field.is_ascii_graphic() || field.is_ascii_alphanumeric() || enc.len() < 2 || !enc.iter().all(|b| valid(*b)) {
            self.problem(ProblemCode::BadEncodingCharacters, 1, 2);
            return;
        }
        let mut unique = enc[..enc.len().min(4)].to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != enc.len().min(4) {
            self.problem(ProblemCode::BadEncodingCharacters, 1, 2);
            return;
        }
        self.delims = Delimiters {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc.get(2).copied(),
            subcomponent: enc.get(3).copied(),
            extra: enc.len().saturating_sub(4),
        };
        if self.delims != Delimiters::default() {
            self.problem(ProblemCode::NonStandardDelimiters, 1, 2);
        }
        if self.delims.extra > 0 && enc.get(4) != Some(&b'#') {
            // `^~\\&` style artefacts: the extra characters are kept but treated as data
            self.problem(ProblemCode::BadEscapeSequence, 1, 2);
        }
        let msh = self.segment(0);
        // empty means empty: a value of separators, blanks or the explicit null `""` is missing
        if !self.has_value(msh.field(9).repetition(0).component(1).raw()) {
            self.problem(ProblemCode::MissingMessageType, 1, 9);
        }
        if !self.has_value(msh.field(10).raw()) {
            self.problem(ProblemCode::MissingControlId, 1, 10);
        }
        if msh.field(12).is_empty() {
            self.problem(ProblemCode::MissingVersion, 1, 12);
        }
        let declared = msh.field(18).repetition(0).raw();
        self.charset = Charset::from_msh18(declared);
        if self.charset == Charset::Unknown {
            self.problem(ProblemCode::UnknownCharset, 1, 18);
        }
    }

    /// Whether a raw value says something: not only delimiters, spaces and tabs, and not the
    /// explicit null `""`.
    fn has_value(&self, raw: &[u8]) -> bool {
        let d = &self.delims;
        let meaningful: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|b| {
                !matches!(b, b' ' | b'\t') && *b != d.component && *b != d.repetition && Some(*b) != d.subcomponent && *b != d.field
            })
            .collect();
        !meaningful.is_empty() && meaningful != b"\"\""
    }

    fn check_segment_names(&mut self) {
        let mut bad = Vec::new();
        for (i, s) in self.segments.iter().enumerate().skip(1) {
            let raw = &self.original[s.start..s.end];
            let name_len = raw.iter().position(|b| *b == self.delims.field).unwrap_or(raw.len());
            let name = &raw[..name_len];
            if name.len() != 3 || !name[0].is_ascii_uppercase() || !name.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
                bad.push(i + 1);
            }
        }
        for seg in bad {
            self.problem(ProblemCode::InvalidSegmentName, seg, 0);
        }
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// First fatal problem, if any: a message with one is rejected.
    pub fn fatal_problem(&self) -> Option<Problem> {
        self.problems.iter().copied().find(Problem::is_fatal)
    }

    pub fn is_acceptable(&self) -> bool {
        self.fatal_problem().is_none()
    }

    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The exact bytes that were parsed.
    pub fn encode(&self) -> &'a [u8] {
        self.original
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The segment at a 0-based position in the message. Out of range gives an empty segment.
    pub fn segment(&self, index: usize) -> Segment<'a> {
        let raw: &'a [u8] = match self.segments.get(index) {
            Some(s) => &self.original[s.start..s.end],
            None => &[],
        };
        Segment { raw, delims: self.delims }
    }

    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        (0..self.segments.len()).map(move |i| self.segment(i))
    }

    /// Segments with the given name, in order.
    pub fn segments_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Segment<'a>> + 's {
        self.segments().filter(move |s| s.name() == name.as_bytes())
    }

    /// The `occurrence`-th (0-based) segment with this name.
    pub fn find(&self, name: &str, occurrence: usize) -> Option<Segment<'a>> {
        self.segments_named(name).nth(occurrence)
    }

    /// Raw (still escaped) value at a path such as `PID-3[2].1` or `OBX[4]-5`.
    pub fn get(&self, path: &str) -> Result<&'a [u8], PathError> {
        let p = Path::parse(path)?;
        Ok(self.get_path(&p))
    }

    pub fn get_path(&self, p: &Path) -> &'a [u8] {
        let Some(seg) = self.find(&p.segment, p.occurrence.saturating_sub(1)) else {
            return &[];
        };
        let field = seg.field(p.field);
        let Some(rep) = p.repetition else {
            return match (p.component, p.subcomponent) {
                (None, _) => field.raw(),
                (Some(c), None) => field.repetition(0).component(c).raw(),
                (Some(c), Some(s)) => field.repetition(0).component(c).subcomponent(s),
            };
        };
        let rep = field.repetition(rep.saturating_sub(1));
        match (p.component, p.subcomponent) {
            (None, _) => rep.raw(),
            (Some(c), None) => rep.component(c).raw(),
            (Some(c), Some(s)) => rep.component(c).subcomponent(s),
        }
    }

    /// Visits every value of every segment in order (see [`Segment::for_each_value`]) with the
    /// segment's 0-based index.
    pub fn for_each_value(&self, mut visit: impl FnMut(usize, ValuePos, &'a [u8])) {
        let table = DelimiterTable::new(&self.delims);
        for (i, seg) in self.segments().enumerate() {
            seg.visit_values(&table, |pos, v| visit(i, pos, v));
        }
    }

    /// Unescapes and decodes a raw value from this message into UTF-8 text.
    pub fn text(&self, raw: &[u8]) -> String {
        let unescaped = unescape(raw, &self.delims);
        decode_bytes(&unescaped, self.charset).into_owned()
    }

    /// Decoded text at a path; empty when absent.
    pub fn text_at(&self, path: &str) -> String {
        match self.get(path) {
            Ok(raw) => self.text(raw),
            Err(_) => String::new(),
        }
    }
}

/// Where a value sits in its segment: HL7 field number and 1-based repetition, component and
/// subcomponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValuePos {
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
}

/// For each byte, which delimiter it is (0 none, 1 field, 2 repetition, 3 component,
/// 4 subcomponent), so a single pass can split every level at once.
struct DelimiterTable([u8; 256]);

impl DelimiterTable {
    fn new(d: &Delimiters) -> DelimiterTable {
        let mut t = [0u8; 256];
        if let Some(s) = d.subcomponent {
            t[s as usize] = 4;
        }
        t[d.component as usize] = 3;
        t[d.repetition as usize] = 2;
        t[d.field as usize] = 1;
        DelimiterTable(t)
    }
}

/// One segment's bytes, without its terminator.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    raw: &'a [u8],
    delims: Delimiters,
}

impl<'a> Segment<'a> {
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn name(&self) -> &'a [u8] {
        let n = self.raw.iter().position(|b| *b == self.delims.field).unwrap_or(self.raw.len());
        &self.raw[..n]
    }

    pub fn name_str(&self) -> &'a str {
        std::str::from_utf8(self.name()).unwrap_or("")
    }

    fn is_msh(&self) -> bool {
        matches!(self.name(), b"MSH" | b"FHS" | b"BHS")
    }

    /// Field `n` using HL7 numbering (MSH-1 is the field separator itself, MSH-2 the encoding
    /// characters). Field 0 is the segment name. Missing fields are empty.
    pub fn field(&self, n: usize) -> Field<'a> {
        let raw = if self.is_msh() {
            match n {
                0 => self.name(),
                1 => self.raw.get(3..4).unwrap_or(&[]),
                _ => nth_piece(self.raw, self.delims.field, n - 1),
            }
        } else {
            nth_piece(self.raw, self.delims.field, n)
        };
        Field {
            raw,
            delims: self.delims,
            literal: self.is_msh() && n <= 2,
        }
    }

    /// Every field in order with its HL7 number, from 1 to [`Segment::field_count`], in one
    /// pass over the segment (prefer this to calling [`Segment::field`] in a loop).
    pub fn fields(&self) -> impl Iterator<Item = (usize, Field<'a>)> + 'a {
        let delims = self.delims;
        let msh = self.is_msh();
        let raw = self.raw;
        // the piece after the name; for MSH the separator itself is field 1
        let body = match memchr::memchr(delims.field, raw) {
            Some(p) => &raw[p + 1..],
            None => &raw[raw.len()..],
        };
        let has_fields = memchr::memchr(delims.field, raw).is_some();
        let msh1 = (msh && has_fields).then(|| Field {
            raw: raw.get(3..4).unwrap_or(&[]),
            delims,
            literal: true,
        });
        let first = if msh { 2 } else { 1 };
        msh1.into_iter().map(|f| (1, f)).chain(
            split(body, Some(delims.field))
                .take(if has_fields { usize::MAX } else { 0 })
                .enumerate()
                .map(move |(i, raw)| {
                    let n = i + first;
                    (
                        n,
                        Field {
                            raw,
                            delims,
                            literal: msh && n <= 2,
                        },
                    )
                }),
        )
    }

    /// Visits every value of the segment (each subcomponent of each component of each
    /// repetition of each field, empty ones included) in order, in a single pass over its bytes.
    /// The same values as walking [`Segment::fields`] down through every level, at a fraction of
    /// the cost: use it to read or copy a whole message.
    pub fn for_each_value(&self, visit: impl FnMut(ValuePos, &'a [u8])) {
        self.visit_values(&DelimiterTable::new(&self.delims), visit);
    }

    fn visit_values(&self, table: &DelimiterTable, mut visit: impl FnMut(ValuePos, &'a [u8])) {
        let raw = self.raw;
        let Some(name_end) = memchr::memchr(self.delims.field, raw) else {
            return;
        };
        let mut pos = ValuePos {
            field: 1,
            repetition: 1,
            component: 1,
            subcomponent: 1,
        };
        let mut start = name_end + 1;
        if self.is_msh() {
            // MSH-1 is the field separator itself and MSH-2 the encoding characters, literally
            visit(pos, &raw[name_end..name_end + 1]);
            let enc_end = memchr::memchr(self.delims.field, &raw[start..]).map_or(raw.len(), |p| start + p);
            pos.field = 2;
            visit(pos, &raw[start..enc_end]);
            if enc_end == raw.len() {
                return;
            }
            start = enc_end + 1;
            pos.field = 3;
        }
        for (i, b) in raw.iter().enumerate().skip(start) {
            let kind = table.0[*b as usize];
            if kind == 0 {
                continue;
            }
            visit(pos, &raw[start..i]);
            start = i + 1;
            match kind {
                1 => {
                    pos = ValuePos {
                        field: pos.field + 1,
                        repetition: 1,
                        component: 1,
                        subcomponent: 1,
                    }
                }
                2 => {
                    pos.repetition += 1;
                    pos.component = 1;
                    pos.subcomponent = 1;
                }
                3 => {
                    pos.component += 1;
                    pos.subcomponent = 1;
                }
                _ => pos.subcomponent += 1,
            }
        }
        visit(pos, &raw[start..]);
    }

    /// Number of fields (not counting the name).
    pub fn field_count(&self) -> usize {
        let pieces = memchr::memchr_iter(self.delims.field, self.raw).count();
        if self.is_msh() && pieces > 0 { pieces + 1 } else { pieces }
    }
}

fn nth_piece(raw: &[u8], sep: u8, n: usize) -> &[u8] {
    let mut start = 0;
    let mut seen = 0;
    for pos in memchr::memchr_iter(sep, raw) {
        if seen == n {
            return &raw[start..pos];
        }
        seen += 1;
        start = pos + 1;
    }
    if seen == n { &raw[start..] } else { &[] }
}

fn split<'a>(raw: &'a [u8], sep: Option<u8>) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(raw);
    std::iter::from_fn(move || {
        let r = rest?;
        match sep.and_then(|s| memchr::memchr(s, r)) {
            Some(p) => {
                rest = Some(&r[p + 1..]);
                Some(&r[..p])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// A field with all its repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a [u8],
    delims: Delimiters,
    /// MSH-1 and MSH-2 are taken literally: they hold the delimiters themselves.
    literal: bool,
}

impl<'a> Field<'a> {
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The explicit null `""`: the sender says "delete this value".
    pub fn is_null(&self) -> bool {
        self.raw == b"\"\""
    }

    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        let delims = self.delims;
        let sep = if self.literal { None } else { Some(delims.repetition) };
        let literal = self.literal;
        split(self.raw, sep).map(move |raw| Repetition { raw, delims, literal })
    }

    pub fn repetition(&self, index: usize) -> Repetition<'a> {
        self.repetitions().nth(index).unwrap_or(Repetition {
            raw: &[],
            delims: self.delims,
            literal: self.literal,
        })
    }

    pub fn repetition_count(&self) -> usize {
        if self.raw.is_empty() { 0 } else { self.repetitions().count() }
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'a> {
    raw: &'a [u8],
    delims: Delimiters,
    literal: bool,
}

impl<'a> Repetition<'a> {
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + 'a {
        let delims = self.delims;
        let literal = self.literal;
        let sep = if literal { None } else { Some(delims.component) };
        split(self.raw, sep).map(move |raw| Component { raw, delims, literal })
    }

    /// Component by HL7 number (1-based); 0 or out of range gives an empty component.
    pub fn component(&self, n: usize) -> Component<'a> {
        let empty = Component {
            raw: &[],
            delims: self.delims,
            literal: self.literal,
        };
        if n == 0 {
            return empty;
        }
        self.components().nth(n - 1).unwrap_or(empty)
    }
}

/// One component of a repetition.
#[derive(Debug, Clone, Copy)]
pub struct Component<'a> {
    raw: &'a [u8],
    delims: Delimiters,
    literal: bool,
}

impl<'a> Component<'a> {
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn subcomponents(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        split(self.raw, if self.literal { None } else { self.delims.subcomponent })
    }

    /// Subcomponent by HL7 number (1-based).
    pub fn subcomponent(&self, n: usize) -> &'a [u8] {
        if n == 0 {
            return &[];
        }
        self.subcomponents().nth(n - 1).unwrap_or(&[])
    }
}

/// Splits a file or a batch (FHS/BHS/BTS/FTS envelopes, or simply several messages one after
/// another) into the byte ranges of its messages, each starting at `MSH`. Envelope segments are
/// not part of any message.
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut envelope_starts = Vec::new();
    let mut line_start = leading_noise(bytes);
    let mut pos = line_start;
    loop {
        let at_line = &bytes[line_start.min(bytes.len())..];
        if at_line.starts_with(b"MSH") {
            starts.push(line_start);
        } else if at_line.starts_with(b"FHS") || at_line.starts_with(b"BHS") || at_line.starts_with(b"BTS") || at_line.starts_with(b"FTS") {
            envelope_starts.push(line_start);
        }
        match memchr::memchr2(b'\r', b'\n', &bytes[pos.min(bytes.len())..]) {
            Some(p) => {
                pos += p;
                while pos < bytes.len() && matches!(bytes[pos], b'\r' | b'\n') {
                    pos += 1;
                }
                line_start = pos;
                if pos >= bytes.len() {
                    break;
                }
            }
            None => break,
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    // both lists are in order: walk them together (a search per message would be quadratic)
    let mut env = envelope_starts.iter().copied().peekable();
    for (i, s) in starts.iter().enumerate() {
        let next_msg = starts.get(i + 1).copied().unwrap_or(bytes.len());
        while env.next_if(|e| e <= s).is_some() {}
        let next_env = env.peek().copied().unwrap_or(bytes.len());
        out.push(&bytes[*s..next_msg.min(next_env)]);
    }
    out
}

#[cfg(test)]
mod tests;
