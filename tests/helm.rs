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

/// Strimzi objects and one Kafka user per service, with SCRAM over TLS.
const STRIMZI_SCRAM: [&str; 6] = [
    "strimzi.enabled=true",
    "kafka.perServiceUsers=true",
    "kafka.securityProtocol=sasl_ssl",
    "kafka.saslMechanism=SCRAM-SHA-512",
    "kafka.tls.secret=kafka-cluster-ca-cert",
    "kafka.bootstrapServers=kafka-kafka-bootstrap:9093",
];

/// The same with mutual TLS: each service's certificate from its KafkaUser's Secret.
const STRIMZI_TLS: [&str; 6] = [
    "strimzi.enabled=true",
    "strimzi.authentication=tls",
    "kafka.perServiceUsers=true",
    "kafka.securityProtocol=ssl",
    "kafka.tls.secret=kafka-cluster-ca-cert",
    "kafka.tls.clientCertificate=true",
];

fn docs(manifest: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(manifest)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn chart_data_is_what_the_topology_says() {
    let made: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new(env!("CARGO_BIN_EXE_sluice")).args(["topology", "chart-data"]))).unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("helm/sluice/files/topology.json")).unwrap()).unwrap();
    assert_eq!(
        made, file,
        "helm/sluice/files/topology.json is stale: run `sluice topology chart-data > helm/sluice/files/topology.json`"
    );
}

#[test]
fn strimzi_topics_and_users_carry_the_topology_and_each_services_least_privilege() {
    use sluice_model::topology::{AclPattern, SERVICES, Topology};
    let topology = Topology::load().unwrap();
    for sets in [&STRIMZI_SCRAM[..], &STRIMZI_TLS[..]] {
        let manifest = render(sets);
        let all = docs(&manifest);
        let topics: Vec<&serde_yaml::Value> = all.iter().filter(|d| d["kind"] == "KafkaTopic").collect();
        assert_eq!(topics.len(), topology.topics.len());
        for t in &topology.topics {
            let k = topics.iter().find(|k| k["spec"]["topicName"].as_str() == Some(&t.name)).unwrap();
            assert_eq!(k["spec"]["partitions"].as_i64(), Some(i64::from(t.partitions)));
            assert_eq!(k["spec"]["replicas"].as_i64(), Some(3));
            assert_eq!(k["spec"]["config"]["min.insync.replicas"].as_i64(), Some(2));
            assert_eq!(k["spec"]["config"]["cleanup.policy"].as_str(), Some(t.cleanup_policy.as_str()));
            assert_eq!(
                k["spec"]["config"]["retention.ms"].as_str(),
                Some(t.retention_ms.to_string().as_str())
            );
        }
        for service in SERVICES {
            let user = format!("sluice-{service}");
            let u = all
                .iter()
                .find(|d| d["kind"] == "KafkaUser" && d["metadata"]["name"].as_str() == Some(&user))
                .unwrap_or_else(|| panic!("no KafkaUser {user}"));
            let mut rendered: Vec<(String, String, String, String)> = Vec::new();
            for a in u["spec"]["authorization"]["acls"].as_sequence().unwrap() {
                for op in a["operations"].as_sequence().unwrap() {
                    rendered.push((
                        a["resource"]["type"].as_str().unwrap().to_owned(),
                        a["resource"]["name"].as_str().unwrap().to_owned(),
                        a["resource"]["patternType"].as_str().unwrap().to_owned(),
                        op.as_str().unwrap().to_owned(),
                    ));
                }
            }
            let mut want: Vec<(String, String, String, String)> = topology
                .acls(service, "")
                .into_iter()
                .map(|a| {
                    let pattern = if a.pattern == AclPattern::Prefixed { "prefix" } else { "literal" };
                    (a.resource.as_str().to_owned(), a.name, pattern.to_owned(), a.operation.to_owned())
                })
                .collect();
            rendered.sort();
            want.sort();
            assert_eq!(rendered, want, "{user}'s ACLs");
            // the service's pod connects as that user, with that user's Secret
            let pod = all
                .iter()
                .find(|d| d["spec"]["template"]["spec"]["containers"][0]["args"][1].as_str() == Some(service))
                .unwrap();
            let spec = &pod["spec"]["template"]["spec"];
            let env = spec["containers"][0]["env"].as_sequence().unwrap();
            let var = |name: &str| env.iter().find(|e| e["name"].as_str() == Some(name)).cloned();
            if sets.contains(&"kafka.securityProtocol=sasl_ssl") {
                assert_eq!(
                    var("SLUICE_RUNTIME__KAFKA__SASL_USERNAME").unwrap()["value"].as_str(),
                    Some(user.as_str())
                );
                let pw = var("SLUICE_RUNTIME__KAFKA__SASL_PASSWORD").unwrap();
                assert_eq!(pw["valueFrom"]["secretKeyRef"]["name"].as_str(), Some(user.as_str()));
            } else {
                assert_eq!(
                    var("SLUICE_RUNTIME__KAFKA__SSL_CERTIFICATE_LOCATION").unwrap()["value"].as_str(),
                    Some("/etc/sluice/kafka-user/user.crt")
                );
                let vol = spec["volumes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "kafka-user")
                    .unwrap();
                assert_eq!(vol["secret"]["secretName"].as_str(), Some(user.as_str()));
            }
        }
        check_environments(&manifest);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &manifest).unwrap();
        let out = run_ok(Command::new(tool("venv/bin/kubernetes-validate")).arg("--strict").arg(&file));
        assert!(!out.contains("FAIL") && !out.contains("ERROR"), "{out}");
    }
}
