//! `sluice topology acls`: the least-privilege Kafka ACLs of every service, derived from the
//! producers and consumers of `topology/topics.yaml` (`Topology::acls`), printed as a table, as
//! Kafka `kafka-acls` commands, or as Strimzi `KafkaUser` resources, and applied through the Admin
//! API by Kafka's own ACL tool (`org.apache.kafka.tools.AclCommand`: the Rust Kafka client offers
//! no ACL calls, and this project writes no unsafe code to reach librdkafka's).

use sluice_model::topology::{Acl, AclPattern, AclResource, SERVICES, Topology};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services to print (default: all five)
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// Principal of a service: this prefix and the service name (Strimzi users are `User:<name>`)
    #[arg(long, default_value = "User:")]
    pub principal_prefix: String,
    /// table, kafka-acls or strimzi
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Strimzi cluster name (the `strimzi.io/cluster` label of the KafkaUsers)
    #[arg(long, default_value = "sluice")]
    pub strimzi_cluster: String,
    /// Apply the ACLs to a cluster (needs --bootstrap-server and an admin --command-config)
    #[arg(long)]
    pub apply: bool,
    #[arg(long)]
    pub bootstrap_server: Option<String>,
    /// Kafka client properties of an admin (security settings), as for Kafka's own tools
    #[arg(long)]
    pub command_config: Option<PathBuf>,
    /// Folder of the Kafka jars (default: `$KAFKA_HOME/libs`, else the project's `.tools/kafka/lib`)
    #[arg(long)]
    pub kafka_libs: Option<PathBuf>,
}

/// Every service's ACLs with the principal `<prefix><service>`.
pub fn all(services: &[String], prefix: &str) -> anyhow::Result<Vec<(String, Vec<Acl>)>> {
    let topology = Topology::load()?;
    let wanted: Vec<String> = if services.is_empty() {
        SERVICES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        services.to_vec()
    };
    wanted
        .into_iter()
        .map(|s| {
            if !SERVICES.contains(&s.as_str()) {
                anyhow::bail!("{s} is not a service of the pipeline ({})", SERVICES.join(", "));
            }
            let acls = topology.acls(&s, &format!("{prefix}{s}"));
            Ok((s, acls))
        })
        .collect()
}

fn resource_flag(r: AclResource) -> &'static str {
    match r {
        AclResource::Topic => "--topic",
        AclResource::Group => "--group",
        AclResource::TransactionalId => "--transactional-id",
    }
}

/// The ACLs as `AclCommand` invocations: one per principal, resource kind, pattern and set of
/// operations (each naming every resource that shares them).
pub fn commands(acls: &[Acl]) -> Vec<Vec<String>> {
    let mut by_name: BTreeMap<(String, AclResource, AclPattern, String), Vec<&'static str>> = BTreeMap::new();
    for a in acls {
        by_name
            .entry((a.principal.clone(), a.resource, a.pattern, a.name.clone()))
            .or_default()
            .push(a.operation);
    }
    let mut grouped: BTreeMap<(String, AclResource, AclPattern, Vec<&'static str>), Vec<String>> = BTreeMap::new();
    for ((principal, resource, pattern, name), mut ops) in by_name {
        ops.sort_unstable();
        grouped.entry((principal, resource, pattern, ops)).or_default().push(name);
    }
    grouped
        .into_iter()
        .map(|((principal, resource, pattern, ops), names)| {
            let mut c = vec!["--add".to_owned(), "--allow-principal".to_owned(), principal];
            for op in ops {
                c.extend(["--operation".to_owned(), op.to_owned()]);
            }
            for n in names {
                c.extend([resource_flag(resource).to_owned(), n]);
            }
            c.extend(["--resource-pattern-type".to_owned(), pattern.as_str().replace("prefix", "prefixed")]);
            c
        })
        .collect()
}

/// A Strimzi `KafkaUser` (simple authorisation) per service.
pub fn strimzi(services: &[(String, Vec<Acl>)], cluster: &str, tls: bool) -> String {
    let mut out = String::new();
    for (service, acls) in services {
        out.push_str(&format!(
            "---\napiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaUser\nmetadata:\n  name: {service}\n  labels:\n    strimzi.io/cluster: {cluster}\nspec:\n  authentication:\n    type: {}\n  authorization:\n    type: simple\n    acls:\n",
            if tls { "tls" } else { "scram-sha-512" }
        ));
        for a in acls {
            out.push_str(&format!(
                "      - resource:\n          type: {}\n          name: {}\n          patternType: {}\n        operations: [{}]\n",
                a.resource.as_str(),
                a.name,
                if a.pattern == AclPattern::Prefixed { "prefix" } else { "literal" },
                a.operation
            ));
        }
    }
    out
}

fn kafka_libs(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = given
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("KAFKA_HOME").map(|h| PathBuf::from(h).join("libs")))
        .chain([PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/kafka/lib")])
        .collect();
    candidates
        .into_iter()
        .find(|p| {
            p.join(".").is_dir()
                && std::fs::read_dir(p)
                    .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("kafka-tools"))))
        })
        .ok_or_else(|| anyhow::anyhow!("no Kafka tools jars found: give --kafka-libs, set KAFKA_HOME, or run scripts/setup-kafka.sh"))
}

/// Applies the ACLs with Kafka's AclCommand (the Admin API); fails on the first refusal.
pub fn apply(acls: &[Acl], bootstrap: &str, command_config: &Path, libs: Option<&Path>) -> anyhow::Result<usize> {
    let libs = kafka_libs(libs)?;
    let java = std::env::var_os("SLUICE_JAVA").unwrap_or_else(|| "java".into());
    let mut n = 0;
    for c in commands(acls) {
        let out = std::process::Command::new(&java)
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            .arg("org.apache.kafka.tools.AclCommand")
            .args(["--bootstrap-server", bootstrap, "--command-config"])
            .arg(command_config)
            .args(&c)
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "kafka's AclCommand failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
        n += c.iter().filter(|a| a.as_str() == "--operation").count();
    }
    Ok(n)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let services = all(&a.services, &a.principal_prefix)?;
    if a.apply {
        let (Some(b), Some(cfg)) = (a.bootstrap_server.as_deref(), a.command_config.as_deref()) else {
            anyhow::bail!("--apply needs --bootstrap-server and --command-config");
        };
        let acls: Vec<Acl> = services.iter().flat_map(|(_, a)| a.iter().cloned()).collect();
        let n = apply(&acls, b, cfg, a.kafka_libs.as_deref())?;
        println!(
            "{n} operations granted on {} ACL bindings for {} services",
            acls.len(),
            services.len()
        );
        return Ok(());
    }
    match a.format.as_str() {
        "table" => {
            for (_, acls) in &services {
                for x in acls {
                    println!(
                        "{:<24} {:<8} {:<16} {:<34} {}",
                        x.principal,
                        x.operation,
                        x.resource.as_str(),
                        x.name,
                        x.pattern.as_str()
                    );
                }
            }
        }
        "kafka-acls" => {
            for (_, acls) in &services {
                for c in commands(acls) {
                    println!(
                        "kafka-acls.sh --bootstrap-server BOOTSTRAP --command-config admin.properties {}",
                        c.join(" ")
                    );
                }
            }
        }
        "strimzi" | "strimzi-tls" => print!("{}", strimzi(&services, &a.strimzi_cluster, a.format == "strimzi-tls")),
        other => anyhow::bail!("unknown format {other}: table, kafka-acls, strimzi or strimzi-tls"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_group_resources_that_share_operations() {
        let services = all(&["route".into()], "User:").expect("acls");
        let cmds = commands(&services[0].1);
        let joined: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert!(
            joined
                .iter()
                .any(|c| c.contains("--operation Describe --operation Write") && c.contains("--topic routed.adt.v1"))
        );
        assert!(
            joined
                .iter()
                .any(|c| c.contains("--transactional-id sluice-route- --resource-pattern-type prefixed"))
        );
        assert!(!joined.iter().any(|c| c.contains("identity.links.v1")));
        let yaml = strimzi(&services, "c1", false);
        assert!(yaml.contains("kind: KafkaUser") && yaml.contains("name: routed.results.v1") && yaml.contains("type: scram-sha-512"));
    }
}
