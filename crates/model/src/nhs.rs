//! NHS numbers: 10 digits whose last is a modulus 11 check digit. A number that fails the
//! check is never used to match patients.

/// Strips the spaces and dashes people write NHS numbers with; anything else stays, so it fails.
pub fn normalise(value: &str) -> String {
    value.chars().filter(|c| *c != ' ' && *c != '-').collect()
}

/// True when `value` (after [`normalise`]) is a valid NHS number.
pub fn is_valid(value: &str) -> bool {
    let v = normalise(value);
    let digits: Vec<u32> = v.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 10 || v.len() != 10 {
        return false;
    }
    check_digit(&digits[..9]) == Some(digits[9])
}

/// The check digit for nine digits, or None when the remainder makes the number invalid (10).
pub fn check_digit(nine: &[u32]) -> Option<u32> {
    let sum: u32 = nine.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        d => Some(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers() {
        assert!(is_valid("9434765919"));
        assert!(is_valid("943 476 5919"));
        assert!(is_valid("9999999999"));
        assert!(!is_valid("9434765918"));
        assert!(!is_valid("12312324212"));
        assert!(!is_valid("943476591"));
        assert!(!is_valid("943476591X"));
        assert!(!is_valid(""));
    }

    #[test]
    fn remainder_ten_is_never_valid() {
        // 9 digits whose check digit would be 10: no tenth digit makes them valid
        let nine = [0, 0, 0, 0, 0, 0, 0, 0, 6];
        assert_eq!(check_digit(&nine), None);
        for d in 0..10 {
            assert!(!is_valid(&format!("000000006{d}")));
        }
    }
}
