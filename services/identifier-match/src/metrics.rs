//! identifier-match's own metrics. Labels come from fixed sets only.

use prometheus::{IntCounterVec, IntGaugeVec};
use sluice_runtime::telemetry::{counter, gauge};
use std::sync::OnceLock;

pub struct Metrics {
    pub outcomes: IntCounterVec,
    pub changes: IntCounterVec,
    pub decisions: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub review_open: IntGaugeVec,
    pub review_oldest: IntGaugeVec,
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
        review_open: gauge(
            "sluice_identity_review_open_items",
            "identity review items waiting for a person (committed), in this instance",
            &[],
        ),
        review_oldest: gauge(
            "sluice_identity_review_oldest_open_timestamp_seconds",
            "when the oldest open review item was opened (Unix seconds); absent when none is open",
            &[],
        ),
    })
}

/// Sets the review queue's gauges from the open items' opening times (microseconds).
pub fn review_queue(opened_at: impl Iterator<Item = i64>) {
    let m = metrics();
    let (mut open, mut oldest) = (0i64, None::<i64>);
    for t in opened_at {
        open += 1;
        oldest = Some(oldest.map_or(t, |o| o.min(t)));
    }
    m.review_open.with_label_values::<&str>(&[]).set(open);
    match oldest {
        Some(t) => m.review_oldest.with_label_values::<&str>(&[]).set(t / 1_000_000),
        None => {
            let _ = m.review_oldest.remove_label_values::<&str>(&[]);
        }
    }
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
