//! W3C trace context in Kafka headers: every record Sluice produces carries a `traceparent`
//! that continues the trace of the record it came from, so one message can be followed through
//! all services. Trace ids are random; they carry no message content.
//!
//! With OTLP export on ([`crate::config::TracingConfig`]), the header names the span that
//! produced the record: ingest's message span, then each stage's record span, whose parent is
//! the span named by its input's header ([`continue_from`], [`header_for`]). A collector then
//! shows one message as one trace, ingest → normalise → identifier-match → route. With export
//! off, spans are not even created and the header still carries the trace id, with a new span id
//! per hop.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const HEADER: &str = "traceparent";

/// The `tracing` target of Sluice's spans: the OTLP exporter records it, the log output leaves
/// it out (a span per record would only be noise there).
pub const SPAN_TARGET: &str = "sluice::span";

/// The span context a `traceparent` names, when it is well formed.
pub fn remote_context(tp: &str) -> Option<SpanContext> {
    trace_id(tp)?;
    let mut parts = tp.split('-').skip(1);
    let trace = TraceId::from_hex(parts.next()?).ok()?;
    let span = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let sc = SpanContext::new(trace, span, TraceFlags::new(flags), true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the span that produced a record (its `traceparent`). Call it before
/// anything reads the span's context; no effect with export off or without a usable header.
pub fn continue_from(span: &tracing::Span, parent: Option<&str>) {
    if let Some(sc) = parent.and_then(remote_context) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

/// Links `span` to `other` (a record span to the batch, the transaction, it was committed in).
pub fn link(span: &tracing::Span, other: &tracing::Span) {
    let cx = other.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// The `traceparent` for records produced inside `span`: the span itself when it is exported,
/// so the next stage's span becomes its child; otherwise a new span id in the trace of
/// `parent` (or a new trace).
pub fn header_for(span: &tracing::Span, parent: Option<&str>) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        format!("00-{:032x}-{:016x}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
    } else {
        child_of(parent)
    }
}

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

    #[test]
    fn a_header_names_a_remote_parent_and_without_export_a_span_changes_nothing() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let sc = remote_context(tp).expect("well formed");
        assert_eq!(format!("{:032x}", sc.trace_id()), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(format!("{:016x}", sc.span_id()), "b7ad6b7169203331");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(remote_context("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01").is_none());
        assert!(remote_context("garbage").is_none());
        // no subscriber with the OTLP layer: the header keeps the trace with a new span id
        let span = tracing::info_span!(target: SPAN_TARGET, "record");
        continue_from(&span, Some(tp));
        let child = header_for(&span, Some(tp));
        assert_eq!(trace_id(&child), trace_id(tp));
        assert_ne!(child, tp);
    }
}
