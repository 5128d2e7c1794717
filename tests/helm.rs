//! The Helm chart as a platform team uses it: `helm lint`, `helm template` with the defaults and
//! with every option on, every rendered object validated against the Kubernetes schemas
//! (kubernetes-validate, strict), the PrometheusRule carrying exactly the rule file the e2e
//! Prometheus runs, and every container's environment accepted by `sluice run <service>
//! --check-config` (an unknown or misspelt setting would stop the pod at start-up).

#![allow(clippy::unwrap_used)]

mod common;

use common::{repo, run_ok, tool};
use std::process::Command;

fn render(sets: &[&str]) -> String {
    let mut c = Command::new(tool("bin/helm"));
    c.args(["template", "sluice", "helm/sluice"]).current_dir(repo());
    for s in sets {
        c.args(["--set", s]);
    }
    run_ok(&mut c)
}

const ALL_ON: [&str; 8] = [
    "prometheusRule.enabled=true",
    "serviceMonitor.enabled=true",
    "kafka.securityProtocol=sasl_ssl",
    "kafka.saslMechanism=SCRAM-SHA-512",
    "kafka.saslUsername=sluice",
    "kafka.saslPasswordSecret=kafka-credentials",
    "kafka.tls.secret=kafka-tls",
    "kafka.tls.clientCertificate=true",
];

/// Mutual TLS alone (no SASL): a client certificate per pod from the mounted secret.
const MUTUAL_TLS: [&str; 3] = [
    "kafka.securityProtocol=ssl",
    "kafka.tls.secret=kafka-tls",
    "kafka.tls.clientCertificate=true",
];

#[test]
fn chart_lints_renders_and_validates_against_kubernetes_schemas() {
    run_ok(
        Command::new(tool("bin/helm"))
            .args(["lint", "--strict", "helm/sluice"])
            .current_dir(repo()),
    );
    for sets in [&[][..], &ALL_ON[..], &MUTUAL_TLS[..]] {
        let manifest = render(sets);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &manifest).unwrap();
        let out = run_ok(Command::new(tool("venv/bin/kubernetes-validate")).arg("--strict").arg(&file));
        assert!(!out.contains("FAIL") && !out.contains("ERROR"), "{out}");
        let kinds: Vec<&str> = manifest.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "StatefulSet").count(), 4, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "Deployment").count(), 1, "{kinds:?}");
    }
}

#[test]
fn prometheus_rule_is_the_tested_rule_file() {
    let manifest = render(&ALL_ON);
    let rule = serde_yaml::Deserializer::from_str(&manifest)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|v| v["kind"] == "PrometheusRule")
        .expect("a PrometheusRule is rendered");
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("helm/sluice/files/prometheus-rules.yml")).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
}

#[test]
fn every_container_environment_is_a_valid_service_configuration() {
    for sets in [&[][..], &ALL_ON[..], &MUTUAL_TLS[..]] {
        check_environments(&render(sets));
    }
}

fn check_environments(manifest: &str) {
    let mut checked = 0;
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        let Some(containers) = v["spec"]["template"]["spec"]["containers"].as_sequence() else {
            continue;
        };
        for c in containers {
            let service = c["args"][1].as_str().unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
            cmd.args(["run", service, "--check-config"]).env_clear();
            for e in c["env"].as_sequence().unwrap() {
                let name = e["name"].as_str().unwrap();
                // values from a Secret or the downward API are filled in by Kubernetes
                let value = match e["value"].as_str() {
                    Some(v) => v,
                    None if e["valueFrom"]["secretKeyRef"].is_mapping() => "s3cret-from-secret",
                    None => "sluice-route-0",
                };
                cmd.env(name, value);
            }
            let out = run_ok(&mut cmd);
            assert!(!out.contains("s3cret-from-secret"), "a secret was printed: {out}");
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "one container per service");
}
