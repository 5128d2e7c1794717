//! Benchmark-only crate; see benches/parse.rs.
