//! Arbitrary bytes, cut into arbitrary reads, into the MLLP decoder: no panic; a frame never holds
//! a start or end block; what the decoder holds stays bounded; and the same bytes read in one go
//! give the same frames.
#![no_main]

use sluice_ingest::mllp::{Decoded, Decoder};

const MAX: usize = 4096;

fn decode(data: &[u8], cuts: &[usize]) -> Vec<Decoded> {
    let mut d = Decoder::new(MAX);
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let end = c.clamp(at, data.len());
        d.push(&data[at..end]);
        at = end;
        while let Some(x) = d.next_frame() {
            out.push(x);
        }
        assert!(d.buffered() <= MAX + data.len().min(MAX * 2) + 64 * 1024 + 2, "decoder holds too much");
    }
    out.extend(d.finish());
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(8));
    let mut cuts: Vec<usize> = head.iter().map(|b| *b as usize * body.len() / 256).collect();
    cuts.sort_unstable();
    let pieces = decode(body, &cuts);
    for p in &pieces {
        if let Decoded::Frame(f) = p {
            assert!(!f.contains(&0x0B), "a start block inside a frame");
            assert!(f.len() <= MAX);
            assert!(!f.windows(2).any(|w| w == [0x1C, 0x0D]), "an end block inside a frame");
        }
    }
    assert_eq!(pieces, decode(body, &[]), "how the bytes were cut changed the frames");
});
