//! Enterprise ids: UUID-shaped (version 8) ids made the same way as
//! `sluice_model::ids::uuid_from(["epi", anchor])`, kept as 16 bytes in memory.

use sha2::{Digest, Sha256};

/// The enterprise id whose anchor is `anchor` (`nhs|<number>`, or a record's key).
pub fn epi(anchor: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in [b"epi".as_slice(), anchor.as_bytes()] {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
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
