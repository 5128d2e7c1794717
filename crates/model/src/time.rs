//! HL7 v2 DTM/TS values: `YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]`. Precision and offset are
//! kept as sent; the UTC instant is only computed when an offset was sent, because a value
//! without one is local time of an unknown zone and must never silently be given one.

use crate::Timestamp;

pub fn parse_hl7(value: &str) -> Option<Timestamp> {
    let v = value.trim();
    if v.is_empty() || v == "\"\"" {
        return None;
    }
    let (body, offset) = match v.find(['+', '-']) {
        Some(p) => (&v[..p], Some(&v[p..])),
        None => (v, None),
    };
    let (main, frac) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    let valid_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let precision = match (main.len(), frac) {
        (_, Some(f)) if !f.is_empty() && valid_digits(f) && main.len() == 14 => "subsecond",
        (4, None) => "year",
        (6, None) => "month",
        (8, None) => "day",
        (10, None) => "hour",
        (12, None) => "minute",
        (14, None) => "second",
        _ => {
            return Some(Timestamp {
                value: v.to_owned(),
                precision: "invalid".into(),
                offset_minutes: None,
                utc_micros: None,
            });
        }
    };
    if !valid_digits(main) {
        return Some(Timestamp {
            value: v.to_owned(),
            precision: "invalid".into(),
            offset_minutes: None,
            utc_micros: None,
        });
    }
    let offset_minutes = offset.and_then(|o| {
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let d = &o[1..];
        if d.len() != 4 || !valid_digits(d) {
            return None;
        }
        let h: i32 = d[..2].parse().ok()?;
        let m: i32 = d[2..].parse().ok()?;
        Some(sign * (h * 60 + m))
    });
    if offset.is_some() && offset_minutes.is_none() {
        // an offset was sent but cannot be read: keep the value, claim no precision
        return Some(Timestamp {
            value: v.to_owned(),
            precision: "invalid".into(),
            offset_minutes: None,
            utc_micros: None,
        });
    }
    let num = |a: usize, b: usize, default: i64| main.get(a..b).and_then(|s| s.parse::<i64>().ok()).unwrap_or(default);
    let utc_micros = offset_minutes.and_then(|off| {
        let (y, mo, d, h, mi, s) = (
            num(0, 4, 0),
            num(4, 6, 1),
            num(6, 8, 1),
            num(8, 10, 0),
            num(10, 12, 0),
            num(12, 14, 0),
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let frac_micros = frac.map(|f| {
            let mut digits: String = f.chars().take(6).collect();
            while digits.len() < 6 {
                digits.push('0');
            }
            digits.parse::<i64>().unwrap_or(0)
        });
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + s - i64::from(off) * 60;
        Some(secs * 1_000_000 + frac_micros.unwrap_or(0))
    });
    Some(Timestamp {
        value: v.to_owned(),
        precision: precision.into(),
        offset_minutes,
        utc_micros,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_and_offset_are_kept() {
        let t = parse_hl7("20240630123000+0100").expect("ts");
        assert_eq!(t.precision, "second");
        assert_eq!(t.offset_minutes, Some(60));
        assert_eq!(t.utc_micros, Some(1_719_747_000_000_000));
        let t = parse_hl7("20240630123000").expect("ts");
        assert_eq!(t.offset_minutes, None);
        assert_eq!(t.utc_micros, None, "no offset sent: no instant invented");
        assert_eq!(parse_hl7("198001").expect("ts").precision, "month");
        assert_eq!(parse_hl7("20240101120000.1234-0500").expect("ts").precision, "subsecond");
        assert_eq!(parse_hl7("2024-01-01").expect("ts").precision, "invalid");
        assert_eq!(parse_hl7(""), None);
    }
}
