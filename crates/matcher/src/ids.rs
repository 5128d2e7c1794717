//! Enterprise ids: UUID-shaped (version 8) ids made the same way as
//! `sluice_model::ids::uuid_from(["epi", anchor])`, kept as 16 bytes in memory.

/// The enterprise id whose anchor is `anchor` (`nhs|<number>`, or a record's key).
pub fn epi(anchor: &str) -> [u8; 16] {
    sluice_model::ids::uuid_bytes(&[b"epi", anchor.as_bytes()])
}

pub fn format(b: &[u8; 16]) -> String {
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

pub fn parse(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let v = hex::decode(hex).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_ids_as_the_model_makes() {
        let b = super::epi("nhs|9434765919");
        assert_eq!(super::format(&b), sluice_model::ids::uuid_from(&[b"epi", b"nhs|9434765919"]));
        assert_eq!(super::parse(&super::format(&b)), Some(b));
    }
}
