//! Time per byte of pathological inputs at 10 KB, 100 KB and 1 MB, for every shape in
//! `sluice::pathological` (HL7 fields, repetitions, components and segments through the
//! normaliser and FHIR out; an MLLP frame dribbled byte by byte; XML attributes; a JSON Bundle's
//! entries through FHIR in). Linear work keeps the column flat; the last column is the ratio of
//! 1 MB's time per byte to 10 KB's.
//!
//! Run: `cargo bench --bench pathological`. Figures, not assertions.

use sluice::pathological::SHAPES;

fn main() {
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>8}",
        "shape", "10 KB ns/B", "100 KB ns/B", "1 MB ns/B", "1MB/10KB"
    );
    for shape in SHAPES {
        shape.time(10_000, 1);
        let per_byte: Vec<f64> = [10_000usize, 100_000, 1_000_000]
            .iter()
            .map(|&n| {
                let (t, len) = shape.time(n, if n > 500_000 { 3 } else { 7 });
                t.as_nanos() as f64 / len as f64
            })
            .collect();
        println!(
            "{:<20} {:>12.1} {:>12.1} {:>12.1} {:>8.2}",
            shape.name(),
            per_byte[0],
            per_byte[1],
            per_byte[2],
            per_byte[2] / per_byte[0]
        );
    }
}
