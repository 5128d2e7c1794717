//! No quadratic path from input size to work: for each pathological shape (`sluice::
//! pathological`), ten times the input must cost about ten times the work, not a hundred. Timed
//! as a ratio of two sizes in the same run (best of several), so a slow machine does not matter;
//! a quadratic path gives a ratio near 100, a linear one near 10. `cargo bench --bench
//! pathological` prints the time per byte at 10 KB, 100 KB and 1 MB.

use sluice::pathological::SHAPES;

#[test]
fn ten_times_the_input_costs_about_ten_times_the_work() {
    for shape in SHAPES {
        // warm up allocators and caches, then compare 40 KB with 400 KB
        shape.time(40_000, 1);
        let (small, small_len) = shape.time(40_000, 5);
        let (large, large_len) = shape.time(400_000, 3);
        let per_byte = |d: std::time::Duration, n: usize| d.as_secs_f64() / n as f64;
        let ratio = per_byte(large, large_len) / per_byte(small, small_len).max(1e-12);
        println!(
            "{:<20} 40 KB {:>9.1?}  400 KB {:>9.1?}  time per byte x{ratio:.2}",
            shape.name(),
            small,
            large
        );
        assert!(
            ratio < 3.0,
            "{}: time per byte grew {ratio:.1} times from 40 KB to 400 KB (quadratic?)",
            shape.name()
        );
    }
}
