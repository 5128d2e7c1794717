//! Normalising what people type: names, dates, postcodes, address lines, and the string
//! comparisons the levels are made of. Everything here is deterministic and allocation-light:
//! it runs for every candidate of every message.

/// A name folded to the letters A-Z: accents dropped (É to E), case folded, spaces, hyphens,
/// apostrophes and anything else removed (`O'Brien-Smith` to `OBRIENSMITH`). Empty when
/// nothing usable is left, and for the HL7 explicit null `""`.
pub fn name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = fold(c);
        if c.is_ascii_alphabetic() {
            out.push(c.to_ascii_uppercase());
        }
    }
    out
}

/// The first word of a given-name field (`ANNE MARIE` to `ANNE`), normalised by [`name`].
pub fn first_given(s: &str) -> String {
    s.split([' ', '-']).find(|w| !name(w).is_empty()).map(name).unwrap_or_default()
}

fn fold(c: char) -> char {
    match c {
        'À'..='Å' | 'à'..='å' => 'A',
        'Ç' | 'ç' => 'C',
        'È'..='Ë' | 'è'..='ë' => 'E',
        'Ì'..='Ï' | 'ì'..='ï' => 'I',
        'Ñ' | 'ñ' => 'N',
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' => 'O',
        'Ù'..='Ü' | 'ù'..='ü' => 'U',
        'Ý' | 'ý' | 'ÿ' => 'Y',
        _ => c,
    }
}

/// American Soundex of a normalised name, packed in 16 bits (first letter, three digits);
/// 0 for an empty name. Two names with the same code sound alike.
pub fn soundex(s: &str) -> u16 {
    let b = s.as_bytes();
    let Some(&first) = b.first() else { return 0 };
    let code = |c: u8| -> u8 {
        match c {
            b'B' | b'F' | b'P' | b'V' => 1,
            b'C' | b'G' | b'J' | b'K' | b'Q' | b'S' | b'X' | b'Z' => 2,
            b'D' | b'T' => 3,
            b'L' => 4,
            b'M' | b'N' => 5,
            b'R' => 6,
            // H and W do not separate equal codes; vowels do
            b'H' | b'W' => 8,
            _ => 0,
        }
    };
    let mut digits = [0u8; 3];
    let mut n = 0;
    let mut last = code(first);
    for &c in &b[1..] {
        let d = code(c);
        match d {
            8 => continue,
            0 => last = 0,
            d if d != last => {
                if n < 3 {
                    digits[n] = d;
                    n += 1;
                }
                last = d;
            }
            _ => {}
        }
    }
    (u16::from(first.saturating_sub(b'A') + 1) << 9) | (u16::from(digits[0]) << 6) | (u16::from(digits[1]) << 3) | u16::from(digits[2])
}

/// Jaro-Winkler similarity of two normalised names, in [0, 1].
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    strsim::jaro_winkler(a, b)
}

/// A birth date as `yyyymmdd` from an HL7 (`19800101...`) or FHIR (`1980-01-01`) value; None
/// without a full, plausible day.
pub fn date(s: &str) -> Option<u32> {
    let digits: String = s.chars().filter(char::is_ascii_digit).take(8).collect();
    if digits.len() < 8 {
        return None;
    }
    let v: u32 = digits.parse().ok()?;
    let (y, m, d) = (v / 10_000, v / 100 % 100, v % 100);
    ((1800..=2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)).then_some(v)
}

/// How close two dates are, beyond equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateAgreement {
    Exact,
    /// Day and month swapped (`19800302` against `19800203`).
    Transposed,
    /// One part off by a little: the day or month by one digit, or the year by one.
    Near,
    Different,
}

pub fn compare_dates(a: u32, b: u32) -> DateAgreement {
    if a == b {
        return DateAgreement::Exact;
    }
    let (ya, ma, da) = (a / 10_000, a / 100 % 100, a % 100);
    let (yb, mb, db) = (b / 10_000, b / 100 % 100, b % 100);
    if ya == yb && ma == db && da == mb {
        return DateAgreement::Transposed;
    }
    let one_digit = |x: u32, y: u32| {
        let (x, y) = (format!("{x:08}"), format!("{y:08}"));
        x.bytes().zip(y.bytes()).filter(|(p, q)| p != q).count() == 1
    };
    let parts_equal = [ya == yb, ma == mb, da == db].iter().filter(|e| **e).count();
    if parts_equal == 2 && (one_digit(a, b) || ya.abs_diff(yb) == 1 || da.abs_diff(db) == 1) {
        return DateAgreement::Near;
    }
    DateAgreement::Different
}

/// A UK-style postcode packed into 64 bits (upper-case letters and digits, at most 10 kept,
/// 6 bits each); 0 when empty. The last three characters are the inward code, the rest the
/// outward code (the district).
pub fn postcode(s: &str) -> u64 {
    let mut v = 0u64;
    let mut n = 0;
    for c in s.chars().filter(char::is_ascii_alphanumeric) {
        if n == 10 {
            break;
        }
        let c = c.to_ascii_uppercase() as u8;
        let six = if c.is_ascii_digit() { c - b'0' + 1 } else { c - b'A' + 11 };
        v = (v << 6) | u64::from(six);
        n += 1;
    }
    if n == 0 { 0 } else { (v << 4) | n as u64 }
}

/// The outward code (district) of a packed postcode: all but its last three characters.
pub fn outward(p: u64) -> u64 {
    let n = p & 0xf;
    if n <= 3 { p } else { ((p >> 4) >> 18 << 4) | (n - 3) }
}

/// The text of a packed postcode (for showing a reviewer).
pub fn postcode_text(p: u64) -> String {
    let n = (p & 0xf) as usize;
    let mut v = p >> 4;
    let mut out = vec![b' '; n];
    for i in (0..n).rev() {
        let six = (v & 0x3f) as u8;
        out[i] = if six <= 10 { b'0' + six - 1 } else { b'A' + six - 11 };
        v >>= 6;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// An address line folded for comparison: upper case, letters and digits, single spaces.
pub fn address_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split(|c: char| !c.is_alphanumeric()) {
        let w: String = w.chars().map(fold).filter(char::is_ascii_alphanumeric).collect();
        if !w.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&w.to_ascii_uppercase());
        }
    }
    out
}

/// House number and the sound of the street's first word (`12A HIGH STREET` to `12A`, the
/// Soundex of `HIGH`): two lines with the same are one address typed differently.
pub fn house_and_street(line: &str) -> (Option<&str>, u16) {
    let mut words = line.split(' ');
    let first = words.next().unwrap_or("");
    if first.bytes().next().is_some_and(|c| c.is_ascii_digit()) {
        (Some(first), words.next().map(soundex).unwrap_or(0))
    } else {
        (None, soundex(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_letters() {
        assert_eq!(name("O'Brien-Smith"), "OBRIENSMITH");
        assert_eq!(name("Zoë"), "ZOE");
        assert_eq!(name("\"\""), "");
        assert_eq!(first_given("anne marie"), "ANNE");
    }

    #[test]
    fn soundex_groups_names_that_sound_alike() {
        assert_eq!(soundex("ROBERT"), soundex("RUPERT"));
        assert_eq!(soundex("ASHCRAFT"), soundex("ASHCROFT"));
        assert_eq!(soundex("TYMCZAK"), soundex("TIMCZAK"));
        assert_ne!(soundex("SMITH"), soundex("JONES"));
        assert_eq!(soundex(""), 0);
    }

    #[test]
    fn dates_parse_and_compare() {
        assert_eq!(date("19800302"), Some(19800302));
        assert_eq!(date("1980-03-02"), Some(19800302));
        assert_eq!(date("1980"), None);
        assert_eq!(date("19801302"), None);
        assert_eq!(compare_dates(19800302, 19800203), DateAgreement::Transposed);
        assert_eq!(compare_dates(19800302, 19800303), DateAgreement::Near);
        assert_eq!(compare_dates(19800302, 19810302), DateAgreement::Near);
        assert_eq!(compare_dates(19800302, 19920711), DateAgreement::Different);
    }

    #[test]
    fn postcodes_pack_and_unpack() {
        let p = postcode("ls1 4ab");
        assert_eq!(postcode_text(p), "LS14AB");
        assert_eq!(outward(p), outward(postcode("LS1 9ZZ")));
        assert_ne!(outward(p), outward(postcode("LS2 4AB")));
        assert_eq!(postcode(""), 0);
    }

    #[test]
    fn address_lines_fold() {
        assert_eq!(address_line("12a,  High St."), "12A HIGH ST");
        assert_eq!(house_and_street("12A HIGH ST"), (Some("12A"), soundex("HIGH")));
    }
}
