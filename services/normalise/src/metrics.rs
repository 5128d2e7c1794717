//! normalise's own metrics. Labels come from fixed sets only (`source`: `hl7v2` or `fhir`).

use prometheus::IntCounterVec;
use sluice_runtime::telemetry::counter;
use std::sync::OnceLock;

pub struct Metrics {
    pub resends: IntCounterVec,
    pub control_id_reused: IntCounterVec,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        resends: counter(
            "sluice_normalise_resends_skipped_total",
            "inputs skipped because the same message (same identity and content) was already normalised, counted when committed",
            &["source"],
        ),
        control_id_reused: counter(
            "sluice_normalise_control_id_reused_total",
            "events whose message identity (sender, control id, type) was seen before with different content: kept and flagged, counted when committed",
            &["source"],
        ),
    })
}
