//! HL7 v2 DTM/TS values: `YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]`. Precision and offset are
//! kept as sent; the UTC instant is only computed when an offset was sent, because a value
//! without one is local time of an unknown zone and must never silently be given one.

use crate::Timestamp;

fn invalid(v: &str) -> Timestamp {
    Timestamp {
        value: v.to_owned(),
        precision: "invalid".into(),
        offset_minutes: None,
        utc_micros: None,
    }
}

/// Whether the digits of a time (YYYY[MM[DD[HH[MM[SS]]]]]) name a real calendar time: year
/// 0001 or later, month 01-12, a day that exists in that month (29 February only in a leap
/// year), hour 00-23, minute 00-59, second 00-60 (a leap second).
pub fn calendar_valid(digits: &str) -> bool {
    let n = |a: usize, b: usize| digits.get(a..b).and_then(|x| x.parse::<u32>().ok());
    let within = |a, b, lo, hi| n(a, b).is_none_or(|x| (lo..=hi).contains(&x));
    let days = match (n(0, 4), n(4, 6)) {
        (Some(y), Some(2)) if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        (_, Some(2)) => 28,
        (_, Some(4 | 6 | 9 | 11)) => 30,
        _ => 31,
    };
    n(0, 4).is_some_and(|y| y >= 1)
        && within(4, 6, 1, 12)
        && within(6, 8, 1, days)
        && within(8, 10, 0, 23)
        && within(10, 12, 0, 59)
        && within(12, 14, 0, 60)
}

/// Reads an HL7 v2 time. A value that is not a time, or names no real calendar time (month 13,
/// 29 February 2017, hour 24), keeps its text with precision `invalid` and no instant.
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
        _ => return Some(invalid(v)),
    };
    if !valid_digits(main) || !calendar_valid(main) {
        return Some(invalid(v));
    }
    let offset_minutes = offset.and_then(|o| {
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let d = &o[1..];
        if d.len() != 4 || !valid_digits(d) {
            return None;
        }
        let h: i32 = d[..2].parse().ok()?;
        let m: i32 = d[2..].parse().ok()?;
        (h <= 14 && m <= 59).then_some(sign * (h * 60 + m))
    });
    if offset.is_some() && offset_minutes.is_none() {
        // an offset was sent but cannot be read: keep the value, claim no precision
        return Some(invalid(v));
    }
    let num = |a: usize, b: usize, default: i64| main.get(a..b).and_then(|s| s.parse::<i64>().ok()).unwrap_or(default);
    let utc_micros = offset_minutes.map(|off| {
        let (y, mo, d, h, mi, s) = (
            num(0, 4, 0),
            num(4, 6, 1),
            num(6, 8, 1),
            num(8, 10, 0),
            num(10, 12, 0),
            num(12, 14, 0),
        );
        let frac_micros = frac.map(|f| {
            let mut digits: String = f.chars().take(6).collect();
            while digits.len() < 6 {
                digits.push('0');
            }
            digits.parse::<i64>().unwrap_or(0)
        });
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + s - i64::from(off) * 60;
        secs * 1_000_000 + frac_micros.unwrap_or(0)
    });
    Some(Timestamp {
        value: v.to_owned(),
        precision: precision.into(),
        offset_minutes,
        utc_micros,
    })
}

/// Reads a FHIR `date`, `dateTime` or `instant` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`,
/// `YYYY-MM-DDThh:mm:ss[.f...](Z|+hh:mm|-hh:mm)`) into the same canonical form as an HL7 v2
/// time: the text as sent, its precision, its offset and the UTC instant when the zone is known.
/// Anything else keeps its text with precision `invalid`.
pub fn parse_fhir(value: &str) -> Option<Timestamp> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let (date, time) = match v.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (v, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let shape_ok = matches!(parts.as_slice(), [y] if y.len() == 4)
        || matches!(parts.as_slice(), [y, m] if y.len() == 4 && m.len() == 2)
        || matches!(parts.as_slice(), [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2);
    if !shape_ok || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return Some(invalid(v));
    }
    let mut hl7 = parts.concat();
    let Some(time) = time else {
        let t = parse_hl7(&hl7)?;
        return Some(Timestamp { value: v.to_owned(), ..t });
    };
    if parts.len() != 3 {
        return Some(invalid(v));
    }
    let (clock, zone) = match time.find(['Z', '+', '-']) {
        Some(p) => (&time[..p], &time[p..]),
        None => return Some(invalid(v)), // FHIR requires a zone once a time is given
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    let hms: Vec<&str> = hms.split(':').collect();
    if hms.len() != 3 || hms.iter().any(|p| p.len() != 2) {
        return Some(invalid(v));
    }
    hl7.push_str(&hms.concat());
    if let Some(f) = frac {
        hl7.push('.');
        hl7.push_str(f);
    }
    match zone {
        "Z" => hl7.push_str("+0000"),
        z if z.len() == 6 && z.as_bytes()[3] == b':' => {
            hl7.push_str(&z[..3]);
            hl7.push_str(&z[4..]);
        }
        _ => return Some(invalid(v)),
    }
    let t = parse_hl7(&hl7)?;
    Some(Timestamp { value: v.to_owned(), ..t })
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

    #[test]
    fn impossible_calendar_times_are_kept_as_sent_but_invalid() {
        for bad in [
            "20170229",
            "20241301",
            "20240431",
            "20240101240000",
            "20240101126000",
            "20240101120000+2500",
            "00000101",
        ] {
            let t = parse_hl7(bad).expect("kept");
            assert_eq!(
                (t.value.as_str(), t.precision.as_str(), t.utc_micros),
                (bad, "invalid", None),
                "{bad}"
            );
        }
        assert_eq!(parse_hl7("20240229").expect("leap day").precision, "day");
        assert_eq!(parse_hl7("20001231235960+0000").expect("leap second").precision, "second");
    }

    #[test]
    fn fhir_times_keep_text_precision_and_zone() {
        let t = parse_fhir("2024-06-30T12:30:00+01:00").expect("ts");
        assert_eq!(t.value, "2024-06-30T12:30:00+01:00");
        assert_eq!((t.precision.as_str(), t.offset_minutes), ("second", Some(60)));
        assert_eq!(t.utc_micros, parse_hl7("20240630123000+0100").and_then(|h| h.utc_micros));
        let z = parse_fhir("2024-06-30T11:30:00.125Z").expect("ts");
        assert_eq!((z.precision.as_str(), z.offset_minutes), ("subsecond", Some(0)));
        assert_eq!(z.utc_micros, Some(1_719_747_000_125_000));
        assert_eq!(parse_fhir("1980-02").expect("month").precision, "month");
        assert_eq!(parse_fhir("1980-02-03").expect("day").precision, "day");
        assert_eq!(parse_fhir("1980").expect("year").precision, "year");
        for bad in [
            "2024-06-30T12:30:00",
            "2017-02-29",
            "30/06/2024",
            "2024-6-3",
            "2024-06-30T12:30+01:00",
        ] {
            assert_eq!(parse_fhir(bad).expect("kept").precision, "invalid", "{bad}");
        }
    }
}
