//! The alerting rules an SRE deploys are valid and fire when they should: `promtool check
//! rules` and promtool's rule unit tests, on the chart's own rule file.

#![allow(clippy::unwrap_used)]

mod common;

use common::repo;
use std::process::Command;

fn promtool(args: &[&str]) {
    let bin = repo().join(".tools/bin/promtool");
    if !bin.exists() {
        let st = Command::new("bash").arg(repo().join("scripts/setup-tools.sh")).status().unwrap();
        assert!(st.success(), "tools setup failed");
    }
    let out = Command::new(bin).args(args).current_dir(repo()).output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules", "helm/sluice/files/prometheus-rules.yml"]);
}

#[test]
fn alert_rules_fire_on_outages_and_dead_letters_and_stay_quiet_otherwise() {
    promtool(&["test", "rules", "helm/sluice/files/prometheus-rules.test.yml"]);
}
