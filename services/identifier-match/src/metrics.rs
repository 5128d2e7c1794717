//! identifier-match's own metrics. Labels come from fixed sets only.

use prometheus::IntCounterVec;
use sluice_runtime::telemetry::counter;
use std::sync::OnceLock;

pub struct Metrics {
    pub outcomes: IntCounterVec,
    pub changes: IntCounterVec,
    pub decisions: IntCounterVec,
    pub api_requests: IntCounterVec,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        outcomes: counter(
            "sluice_identity_outcomes_total",
            "events by identity outcome (new, matched, merged, review, not_applicable), counted when processed (a redone batch counts again)",
            &["outcome"],
        ),
        changes: counter(
            "sluice_identity_changes_total",
            "enterprise id changes published (merged, unmerged, linked, unlinked)",
            &["kind"],
        ),
        decisions: counter(
            "sluice_identity_decisions_total",
            "review decisions consumed, by action and outcome (applied or a bounded refusal code)",
            &["action", "outcome"],
        ),
        api_requests: counter(
            "sluice_identity_review_api_requests_total",
            "review api requests by route and status class",
            &["route", "status"],
        ),
    })
}

/// A label value from a fixed set.
pub fn bounded(v: &str) -> &'static str {
    match v {
        "new" => "new",
        "matched" => "matched",
        "merged" => "merged",
        "review" => "review",
        "not_applicable" => "not_applicable",
        "unmerged" => "unmerged",
        "linked" => "linked",
        "unlinked" => "unlinked",
        _ => "other",
    }
}
