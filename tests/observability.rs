//! The alerting rules an SRE deploys are valid and fire when they should: `promtool check
//! rules` and promtool's rule unit tests, on the chart's own rule file.

#![allow(clippy::unwrap_used)]

mod common;

use common::{repo, run_ok, tool};
use std::process::Command;

fn promtool(args: &[&str]) {
    run_ok(Command::new(tool("bin/promtool")).args(args).current_dir(repo()));
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules", "helm/sluice/files/prometheus-rules.yml"]);
}

#[test]
fn alert_rules_fire_on_outages_and_dead_letters_and_stay_quiet_otherwise() {
    promtool(&["test", "rules", "helm/sluice/files/prometheus-rules.test.yml"]);
}
