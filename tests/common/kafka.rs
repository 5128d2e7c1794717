//! A real Apache Kafka cluster for the tests: three combined broker+controller KRaft nodes on
//! loopback, prepared by `scripts/kafka/cluster.py` (jars from `scripts/setup-kafka.sh`,
//! installed on first use) in a temporary folder, each node a child process of the test so a
//! test can SIGKILL one and start it again on its data, or pause them all.
//!
//! Topics get replication factor 3 and `min.insync.replicas=2`; the cluster's own defaults are
//! the same. With `sasl_ssl` (SCRAM-SHA-512) or `mtls` each service connects as its own user
//! (`User:<service>`); until the ACL tooling exists, [`KafkaCluster::grant_all`] lets every
//! service user do everything. The admin user (a super user) creates topics and reads results.
//!
//! One cluster runs at a time in a test process (three JVMs are most of what 2 cores can give):
//! a cluster holds a process-wide slot until it is dropped, and dropping it SIGKILLs its nodes.

use super::{Proc, repo, tool};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How clients authenticate on the CLIENT listener (`cluster.py --security`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    Plaintext,
    /// SASL_SSL with SCRAM-SHA-512
    SaslSsl,
    /// SSL with client certificates (`ssl.client.auth=required`)
    Mtls,
}

impl Security {
    fn arg(self) -> &'static str {
        match self {
            Security::Plaintext => "plaintext",
            Security::SaslSsl => "sasl_ssl",
            Security::Mtls => "mtls",
        }
    }
}

/// librdkafka settings of one user, as `cluster.py` prints them.
pub type Settings = BTreeMap<String, String>;

pub struct Node {
    pub id: u64,
    pub port: u16,
    cmd: Vec<String>,
    console: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Node {
    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.console).unwrap();
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.proc = Some(Proc { child });
    }
}

pub struct KafkaCluster {
    pub bootstrap: String,
    pub security: Security,
    /// What `cluster.py prepare` printed.
    pub prepared: serde_json::Value,
    /// Seconds from spawning the nodes until every client listener accepted connections.
    pub started_in: Duration,
    // fields drop in order: the nodes stop before their folder goes and the slot is freed
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
    _slot: Slot,
}

/// The right to run a cluster in this process, given back on drop (a `MutexGuard` would do,
/// but a cluster is started on a blocking thread and handed to the test's).
struct Slot;

static BUSY: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();

fn slot() -> Slot {
    let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        busy = FREED.wait(busy).unwrap_or_else(|e| e.into_inner());
    }
    *busy = true;
    Slot
}

impl Drop for Slot {
    fn drop(&mut self) {
        *BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
        FREED.notify_one();
    }
}

/// Installs the pinned Kafka jars once per test process (a no-op taking 0.1 s when they are
/// there and verified).
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let st = Command::new("bash").arg(repo().join("scripts/setup-kafka.sh")).status().unwrap();
        assert!(st.success(), "scripts/setup-kafka.sh failed");
    });
}

impl KafkaCluster {
    /// Prepares and starts a three-node cluster and waits until every node listens.
    pub fn start(security: Security) -> KafkaCluster {
        KafkaCluster::start_advertising(security, &[])
    }

    /// A cluster whose client listeners sit behind `proxies` (one per node, in node order):
    /// the nodes advertise the proxies' ports and each proxy forwards to its node.
    pub fn start_behind(security: Security, proxies: &[super::proxy::Proxy]) -> KafkaCluster {
        let ports: Vec<u16> = proxies.iter().map(|p| p.port).collect();
        let cluster = KafkaCluster::start_advertising(security, &ports);
        let rt = tokio::runtime::Handle::current();
        for (proxy, node) in proxies.iter().zip(&cluster.nodes) {
            proxy.forward_to(node.port, &rt);
        }
        cluster
    }

    fn start_advertising(security: Security, advertised: &[u16]) -> KafkaCluster {
        let slot = slot();
        install();
        let dir = tempfile::Builder::new().prefix("sluice-kafka-").tempdir().unwrap();
        let advertised: Vec<String> = advertised.iter().map(u16::to_string).collect();
        let out = super::run_ok(
            Command::new("python3")
                .arg(repo().join("scripts/kafka/cluster.py"))
                .args(["prepare", "--brokers", "3", "--security", security.arg()])
                .args(["--client-advertised-ports", &advertised.join(",")])
                .arg("--dir")
                .arg(dir.path()),
        );
        let prepared: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut nodes: Vec<Node> = prepared["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| Node {
                id: n["id"].as_u64().unwrap(),
                port: n["port"].as_u64().unwrap() as u16,
                cmd: n["cmd"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect(),
                console: PathBuf::from(n["log"].as_str().unwrap()).with_file_name("console.log"),
                log: PathBuf::from(n["log"].as_str().unwrap()),
                proc: None,
            })
            .collect();
        let started = Instant::now();
        for n in &mut nodes {
            n.spawn();
        }
        let cluster = KafkaCluster {
            bootstrap: prepared["bootstrap"].as_str().unwrap().to_owned(),
            security,
            prepared,
            started_in: Duration::ZERO,
            nodes,
            dir,
            _slot: slot,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        for n in &cluster.nodes {
            while std::net::TcpStream::connect(("127.0.0.1", n.port)).is_err() {
                assert!(Instant::now() < deadline, "kafka node {} did not listen on {}", n.id, n.port);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        KafkaCluster {
            started_in: started.elapsed(),
            ..cluster
        }
    }

    /// SIGKILLs node `i` (an index into `nodes`) and waits for it to die.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.signal("KILL");
            let _ = p.child.wait();
        }
    }

    /// Starts node `i` again with the same command line, on its data.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].proc.is_none(), "node {i} is running");
        self.nodes[i].spawn();
    }

    /// Moves the leadership of every partition with more than one replica (the pipeline's
    /// topics and Kafka's own offsets and transaction-state topics) to another node: the
    /// replica lists are reordered (no data moves) and a preferred-leader election is run, with
    /// Kafka's own tools. Returns how many partitions changed leader.
    pub fn move_leaders(&self) -> usize {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let admin: BaseConsumer = self.client_config("admin").create().unwrap();
        let leaders = |c: &BaseConsumer| -> BTreeMap<(String, i32), (i32, Vec<i32>)> {
            let meta = c.fetch_metadata(None, Duration::from_secs(20)).unwrap();
            meta.topics()
                .iter()
                .flat_map(|t| {
                    t.partitions()
                        .iter()
                        .map(|p| ((t.name().to_owned(), p.id()), (p.leader(), p.replicas().to_vec())))
                })
                .collect()
        };
        let before = leaders(&admin);
        let moves: Vec<serde_json::Value> = before
            .iter()
            .filter(|(_, (_, r))| r.len() > 1)
            .map(|((topic, partition), (leader, replicas))| {
                let mut r = replicas.clone();
                while r[0] == *leader {
                    r.rotate_left(1);
                }
                serde_json::json!({"topic": topic, "partition": partition, "replicas": r})
            })
            .collect();
        let plan = self.dir.path().join("leader-moves.json");
        std::fs::write(&plan, serde_json::json!({"version": 1, "partitions": moves}).to_string()).unwrap();
        let tool = |class: &str, args: &[&str]| {
            super::run_ok(
                Command::new("java")
                    .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp"])
                    .arg(self.prepared["classpath"].as_str().unwrap())
                    .arg(class)
                    .args(["--bootstrap-server", &self.bootstrap, "--command-config"])
                    .arg(self.prepared["admin_properties"].as_str().unwrap())
                    .args(args),
            )
        };
        let plan = plan.to_str().unwrap();
        tool(
            "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
            &["--reassignment-json-file", plan, "--execute"],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !tool(
            "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
            &["--reassignment-json-file", plan, "--verify"],
        )
        .lines()
        .filter(|l| l.starts_with("Reassignment of partition"))
        .all(|l| l.contains("is completed"))
        {
            assert!(Instant::now() < deadline, "replica reordering did not complete");
            std::thread::sleep(Duration::from_millis(500));
        }
        tool(
            "org.apache.kafka.tools.LeaderElectionCommand",
            &["--election-type", "preferred", "--all-topic-partitions"],
        );
        let after = leaders(&admin);
        before
            .iter()
            .filter(|(k, (l, _))| after.get(*k).is_some_and(|(l2, _)| l2 != l))
            .count()
    }

    /// Sends a signal (STOP, CONT, ...) to every running node.
    pub fn signal_all(&self, sig: &str) {
        for p in self.nodes.iter().filter_map(|n| n.proc.as_ref()) {
            p.signal(sig);
        }
    }

    /// The librdkafka settings of `user` (`admin` or a service name).
    pub fn user(&self, user: &str) -> Settings {
        settings(&self.prepared["security"]["users"][user])
    }

    /// Deliberately wrong settings: `wrong_password` (sasl_ssl) or `untrusted_cert` (mtls).
    pub fn negative(&self, which: &str) -> Settings {
        let s = settings(&self.prepared["security"]["negative"][which]);
        assert!(
            !s.is_empty(),
            "cluster.py prepared no negative case {which} for {:?}",
            self.security
        );
        s
    }

    /// An rdkafka client configuration for `user`.
    pub fn client_config(&self, user: &str) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in self.user(user) {
            c.set(k, v);
        }
        c
    }

    /// The runtime's Kafka settings for `user`.
    pub fn kafka_config(&self, user: &str) -> sluice_runtime::config::KafkaConfig {
        let mut m: serde_json::Map<String, serde_json::Value> = self
            .user(user)
            .into_iter()
            .map(|(k, v)| (k.replace('.', "_"), serde_json::Value::String(v)))
            .collect();
        m.insert("bootstrap_servers".into(), self.bootstrap.clone().into());
        serde_json::from_value(serde_json::Value::Object(m)).unwrap()
    }

    /// Grants each service user exactly its least-privilege ACLs, derived from the topology and
    /// applied with `sluice topology acls --apply` (Kafka's AclCommand on the admin's
    /// credentials), and waits until every broker lists them. No-op without an authorizer.
    pub fn grant_least_privilege(&self) {
        if self.security == Security::Plaintext {
            return;
        }
        let out = super::run_ok(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args([
                    "topology",
                    "acls",
                    "--apply",
                    "--bootstrap-server",
                    &self.bootstrap,
                    "--command-config",
                ])
                .arg(self.prepared["admin_properties"].as_str().unwrap())
                .arg("--kafka-libs")
                .arg(tool("kafka/lib")),
        );
        let want: usize = sluice::acls::all(&[], "User:").unwrap().iter().map(|(_, a)| a.len()).sum();
        assert!(out.contains(&format!("{want} ACL bindings")), "{out}");
        super::run_ok(
            Command::new(tool("venv/bin/python"))
                .arg(repo().join("tests/python/kafka_wait_acls.py"))
                .arg(&self.bootstrap)
                .arg(serde_json::to_string(&self.user("admin")).unwrap())
                .arg(want.to_string()),
        );
    }

    /// Lets every service user do everything on every topic, group and transactional id (for a
    /// test that needs a permissive cluster). No-op without an authorizer.
    pub fn grant_all(&self) {
        if self.security == Security::Plaintext {
            return;
        }
        super::run_ok(
            Command::new(tool("venv/bin/python"))
                .arg(repo().join("tests/python/kafka_grant_all.py"))
                .arg(&self.bootstrap)
                .arg(serde_json::to_string(&self.user("admin")).unwrap())
                .args(super::SERVICES),
        );
    }

    /// The last ERROR lines each node logged (printed when a test fails).
    pub fn error_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
            for l in errors.iter().rev().take(5).rev() {
                out.push_str(&format!("node {}: {l}\n", n.id));
            }
        }
        out
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// How the data batches of `topic` that the brokers stored are compressed, read from the
    /// log segments on disk with Kafka's own `DumpLogSegments`: (codec, stored size in bytes) of
    /// every data batch (every replica's copy; transaction markers left out).
    pub fn stored_batches(&self, topic: &str) -> Vec<(String, usize)> {
        let mut segments = Vec::new();
        for n in self.prepared["nodes"].as_array().unwrap() {
            let data = PathBuf::from(n["data"].as_str().unwrap());
            for dir in std::fs::read_dir(&data).unwrap().flatten() {
                let name = dir.file_name().to_string_lossy().into_owned();
                if name.rsplit_once('-').is_some_and(|(t, p)| t == topic && p.parse::<u32>().is_ok()) {
                    for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
                        if f.path().extension().is_some_and(|e| e == "log") {
                            segments.push(f.path());
                        }
                    }
                }
            }
        }
        assert!(!segments.is_empty(), "no log segments of {topic}");
        let out = super::run_ok(
            Command::new("java")
                .arg("-cp")
                .arg(format!("{}/*", tool("kafka/lib").display()))
                .arg("org.apache.kafka.tools.DumpLogSegments")
                .arg("--files")
                .arg(segments.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")),
        );
        let field = |line: &str, name: &str| {
            line.split(&format!(" {name}: "))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        };
        out.lines()
            .filter(|l| l.contains("isControl: false"))
            .filter_map(|l| Some((field(l, "compresscodec")?, field(l, "size")?.parse().ok()?)))
            .collect()
    }
}

/// `SLUICE_RUNTIME__KAFKA__*` variables carrying librdkafka settings
/// (`sasl.password` -> `SLUICE_RUNTIME__KAFKA__SASL_PASSWORD`).
pub fn service_env(s: &Settings) -> Vec<(String, String)> {
    s.iter()
        .map(|(k, v)| (format!("SLUICE_RUNTIME__KAFKA__{}", k.replace('.', "_").to_uppercase()), v.clone()))
        .collect()
}

fn settings(v: &serde_json::Value) -> Settings {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect())
        .unwrap_or_default()
}
