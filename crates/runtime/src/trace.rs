//! W3C trace context in Kafka headers: every record Sluice produces carries a `traceparent`
//! that continues the trace of the record it came from, so one message can be followed through
//! all services. Trace ids are random; they carry no message content.

use rand::Rng;

pub const HEADER: &str = "traceparent";

/// A new root trace context.
pub fn new_root() -> String {
    let mut r = rand::rng();
    format!("00-{:032x}-{:016x}-01", r.random::<u128>(), r.random::<u64>().max(1))
}

/// Validates a traceparent value; returns the trace id when it is well formed.
pub fn trace_id(tp: &str) -> Option<&str> {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2) && parts[1] != "0".repeat(32) {
        Some(parts[1])
    } else {
        None
    }
}

/// The context for a record produced from one carrying `parent` (a new span in the same trace),
/// or a new root when the parent is absent or malformed.
pub fn child_of(parent: Option<&str>) -> String {
    match parent.and_then(trace_id) {
        Some(t) => format!("00-{t}-{:016x}-01", rand::rng().random::<u64>().max(1)),
        None => new_root(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keeps_the_trace() {
        let root = new_root();
        let child = child_of(Some(&root));
        assert_eq!(trace_id(&root), trace_id(&child));
        assert_ne!(root, child);
        assert!(trace_id(&child_of(Some("garbage"))).is_some());
    }
}
