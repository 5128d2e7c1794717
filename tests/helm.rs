//! The Helm chart as a platform team uses it: `helm lint`, `helm template` with the defaults and
//! with every option on, every rendered object validated against the Kubernetes schemas
//! (kubernetes-validate, strict), the PrometheusRule carrying exactly the rule file the e2e
//! Prometheus runs, and every container's environment accepted by `sluice run <service>
//! --check-config` (an unknown or misspelt setting would stop the pod at start-up).
//!
//! Locked down: a ServiceAccount with no API token, RuntimeDefault seccomp, a startup probe, a
//! NetworkPolicy and a PodDisruptionBudget for every component; every certificate, key, token
//! and OIDC setting from a Secret (mounted or referenced, never inline); no entrance without TLS
//! and tokens unless the values say so.

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

const ALL_ON: [&str; 15] = [
    "prometheusRule.enabled=true",
    "kafka.compression=zstd",
    "serviceMonitor.enabled=true",
    "grafanaDashboards.enabled=true",
    "tracing.otlpEndpoint=http://otel-collector.monitoring:4317",
    "tracing.otlpProtocol=grpc",
    "tracing.sampleRatio=0.25",
    "ingest.expectedQuietSecs.PAS^RGT01=900",
    "ingest.expectedQuietSecs.LAB^RGT01=60",
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

/// Mutual TLS on MLLP, and OIDC besides the static tokens, its settings and CA from a Secret.
const SECURED: [&str; 5] = [
    "tls.mllpClientCaSecret=sluice-mllp-clients",
    "auth.oidc.secret=sluice-oidc",
    "auth.oidc.caCertificate=true",
    "auth.oidc.roleValues.sluice-operators=operator",
    "auth.oidc.roleValues.nhs\\.viewers=viewer",
];

/// TLS terminated by a mesh or proxy in front: the listeners serve plaintext (tokens still needed).
const PLAINTEXT_BEHIND_A_PROXY: [&str; 1] = ["tls.plaintext=true"];

/// Every variant the chart is rendered in.
const VARIANTS: [&[&str]; 5] = [&[], &ALL_ON, &MUTUAL_TLS, &SECURED, &PLAINTEXT_BEHIND_A_PROXY];

#[test]
fn chart_lints_renders_and_validates_against_kubernetes_schemas() {
    run_ok(
        Command::new(tool("bin/helm"))
            .args(["lint", "--strict", "helm/sluice"])
            .current_dir(repo()),
    );
    for sets in VARIANTS {
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
fn dashboards_are_config_maps_for_the_grafana_sidecar_when_asked() {
    let maps = |manifest: &str| -> Vec<serde_yaml::Value> {
        serde_yaml::Deserializer::from_str(manifest)
            .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
            .filter(|v| v["kind"] == "ConfigMap" && v["metadata"]["labels"]["grafana_dashboard"] == "1")
            .collect()
    };
    assert!(maps(&render(&[])).is_empty(), "off by default");
    let rendered = maps(&render(&ALL_ON));
    let mut files: Vec<String> = std::fs::read_dir(repo().join("helm/sluice/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(rendered.len(), files.len(), "one ConfigMap per dashboard");
    for f in files {
        let shipped = std::fs::read_to_string(repo().join("helm/sluice/dashboards").join(&f)).unwrap();
        let found = rendered
            .iter()
            .find_map(|m| m["data"][f.as_str()].as_str())
            .unwrap_or_else(|| panic!("{f} is in no ConfigMap"));
        let parsed: serde_json::Value = serde_json::from_str(found).unwrap();
        assert_eq!(parsed, serde_json::from_str::<serde_json::Value>(&shipped).unwrap(), "{f}");
    }
}

#[test]
fn every_container_environment_is_a_valid_service_configuration() {
    for sets in VARIANTS {
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
                // values from a Secret or the downward API are filled in by Kubernetes (the
                // OIDC settings are not secret, but must look like what they are)
                let secret_key = e["valueFrom"]["secretKeyRef"]["key"].as_str();
                let value = match (e["value"].as_str(), secret_key) {
                    (Some(v), _) => v,
                    (None, Some("issuer")) => "https://idp.example/realms/nhs",
                    (None, Some("audience")) => "sluice",
                    (None, Some("jwksUrl")) => "https://idp.example/realms/nhs/certs",
                    (None, Some(_)) => "s3cret-from-secret",
                    (None, None) => "sluice-route-0",
                };
                cmd.env(name, value);
            }
            let out = run_ok(&mut cmd);
            assert!(!out.contains("s3cret-from-secret"), "a secret was printed: {out}");
            // the provider's group names reach the service as its role mapping
            if c["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "SLUICE_AUTH__OIDC__ROLE_VALUES")
            {
                assert!(
                    out.contains(r#""sluice-operators": Operator"#) && out.contains(r#""nhs.viewers": Viewer"#),
                    "{service}: role mapping not in force: {out}"
                );
            }
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

fn workloads(all: &[serde_yaml::Value]) -> Vec<&serde_yaml::Value> {
    all.iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .collect()
}

fn of_kind<'a>(all: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    all.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_pod_runs_locked_down_behind_a_network_policy_and_a_disruption_budget() {
    for sets in VARIANTS {
        let all = docs(&render(sets));
        let account = all.iter().find(|d| d["kind"] == "ServiceAccount").expect("a ServiceAccount");
        assert_eq!(account["automountServiceAccountToken"].as_bool(), Some(false));
        assert_eq!(workloads(&all).len(), 5);
        for w in workloads(&all) {
            let name = w["metadata"]["name"].as_str().unwrap();
            let spec = &w["spec"]["template"]["spec"];
            assert_eq!(spec["serviceAccountName"], account["metadata"]["name"], "{name}");
            assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false), "{name}");
            assert_eq!(
                spec["securityContext"]["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault"),
                "{name}"
            );
            assert_eq!(spec["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}");
            let c = &spec["containers"][0];
            assert_eq!(c["startupProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{name}");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false), "{name}");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");

            // ingress to exactly the ports the container serves, from the pods it selects
            let selector = &w["spec"]["selector"]["matchLabels"];
            let policy = of_kind(&all, "NetworkPolicy", name);
            assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], selector, "{name}");
            assert_eq!(
                policy["spec"]["policyTypes"].as_sequence().unwrap(),
                &[serde_yaml::Value::from("Ingress")]
            );
            let mut open: Vec<i64> = policy["spec"]["ingress"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|rule| rule["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_i64().unwrap()))
                .collect();
            let mut served: Vec<i64> = c["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p["containerPort"].as_i64().unwrap())
                .collect();
            open.sort_unstable();
            served.sort_unstable();
            assert_eq!(open, served, "{name}: the policy opens exactly the served ports");
            let metrics_rule = policy["spec"]["ingress"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|r| r["ports"][0]["port"].as_i64() == Some(9464))
                .unwrap();
            assert!(
                metrics_rule["from"].is_sequence(),
                "{name}: metrics only from the monitoring namespace"
            );

            let budget = of_kind(&all, "PodDisruptionBudget", name);
            assert_eq!(&budget["spec"]["selector"]["matchLabels"], selector, "{name}");
            assert_eq!(budget["spec"]["maxUnavailable"].as_i64(), Some(1), "{name}");
        }
    }
}

/// A container's environment: name to the variable's YAML.
fn env_of(w: &serde_yaml::Value) -> std::collections::BTreeMap<String, serde_yaml::Value> {
    w["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

/// The Secret a file path is mounted from, in a workload.
fn secret_behind(w: &serde_yaml::Value, path: &str) -> Option<String> {
    let spec = &w["spec"]["template"]["spec"];
    let mount = spec["containers"][0]["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))?;
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "{path} mounted writable");
    let volume = spec["volumes"].as_sequence()?.iter().find(|v| v["name"] == mount["name"])?;
    volume["secret"]["secretName"].as_str().map(str::to_owned)
}

#[test]
fn certificates_tokens_and_oidc_settings_come_from_secrets() {
    // (service, the file settings its entrances must have) with the default values
    let entrances: [(&str, &[&str]); 3] = [
        (
            "ingest",
            &[
                "SLUICE_MLLP_TLS__CERT_FILE",
                "SLUICE_MLLP_TLS__KEY_FILE",
                "SLUICE_FHIR_TLS__CERT_FILE",
                "SLUICE_FHIR_TLS__KEY_FILE",
                "SLUICE_AUTH__TOKENS_FILE",
            ],
        ),
        (
            "dead-letter",
            &["SLUICE_API_TLS__CERT_FILE", "SLUICE_API_TLS__KEY_FILE", "SLUICE_AUTH__TOKENS_FILE"],
        ),
        (
            "identifier-match",
            &[
                "SLUICE_REVIEW_API__TLS__CERT_FILE",
                "SLUICE_REVIEW_API__TLS__KEY_FILE",
                "SLUICE_AUTH__TOKENS_FILE",
            ],
        ),
    ];
    for sets in [&[][..], &SECURED[..]] {
        let manifest = render(sets);
        assert!(!manifest.contains("-----BEGIN"), "a certificate or key inline in the manifest");
        let all = docs(&manifest);
        for w in workloads(&all) {
            let service = w["spec"]["template"]["spec"]["containers"][0]["args"][1].as_str().unwrap();
            let env = env_of(w);
            assert!(
                !env.keys().any(|k| k.ends_with("__PLAINTEXT")),
                "{service}: plaintext is never a default"
            );
            // every file setting points into a read-only mount of a Secret
            for (k, e) in env.iter().filter(|(k, _)| k.ends_with("_FILE")) {
                let path = e["value"].as_str().unwrap();
                assert!(secret_behind(w, path).is_some(), "{service}: {k}={path} is not from a Secret");
            }
            let want: &[&str] = entrances.iter().find(|(s, _)| *s == service).map_or(&[], |(_, w)| w);
            for k in want {
                assert!(env.contains_key(*k), "{service} lacks {k}");
            }
            let secret_of = |k: &str| env.get(k).and_then(|e| secret_behind(w, e["value"].as_str().unwrap()));
            if want.is_empty() {
                assert!(
                    !env.keys().any(|k| k.contains("_TLS__") || k.starts_with("SLUICE_AUTH__")),
                    "{service} serves no entrance"
                );
                continue;
            }
            assert_eq!(secret_of(want[0]).as_deref(), Some("sluice-tls"), "{service}");
            assert_eq!(secret_of("SLUICE_AUTH__TOKENS_FILE").as_deref(), Some("sluice-tokens"), "{service}");
            if sets.is_empty() {
                assert!(
                    !env.keys().any(|k| k.starts_with("SLUICE_AUTH__OIDC__")),
                    "{service}: oidc is off by default"
                );
                assert!(!env.contains_key("SLUICE_MLLP_TLS__CLIENT_CA_FILE"));
                continue;
            }
            for k in ["ISSUER", "AUDIENCE", "JWKS_URL"] {
                let e = &env[&format!("SLUICE_AUTH__OIDC__{k}")];
                assert_eq!(
                    e["valueFrom"]["secretKeyRef"]["name"].as_str(),
                    Some("sluice-oidc"),
                    "{service} {k}"
                );
            }
            assert_eq!(secret_of("SLUICE_AUTH__OIDC__JWKS_CA_FILE").as_deref(), Some("sluice-oidc"));
            if service == "ingest" {
                assert_eq!(
                    secret_of("SLUICE_MLLP_TLS__CLIENT_CA_FILE").as_deref(),
                    Some("sluice-mllp-clients"),
                    "mutual tls on mllp"
                );
            }
        }
    }
}

#[test]
fn the_chart_refuses_entrances_without_certificates_or_tokens_and_a_second_identity_index() {
    for (sets, why) in [
        (&["tls.secret="][..], "tls.secret is required"),
        (&["auth.tokensSecret="][..], "auth.tokensSecret or auth.oidc.secret is required"),
        // two identity indexes would link patients apart (each missing the other's records)
        (
            &["stages.identifier-match.replicas=2"][..],
            "identifier-match.replicas must be 0 or 1",
        ),
    ] {
        let mut c = Command::new(tool("bin/helm"));
        c.args(["template", "sluice", "helm/sluice"]).current_dir(repo());
        for s in sets {
            c.args(["--set", s]);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{sets:?} rendered");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // OIDC alone is enough
    let all = docs(&render(&["auth.tokensSecret=", "auth.oidc.secret=sluice-oidc"]));
    for w in workloads(&all) {
        assert!(!env_of(w).contains_key("SLUICE_AUTH__TOKENS_FILE"));
    }
}
