//! Test harness: a real broker, the schema registry and each service as separate `sluice`
//! processes on free ports, so tests can kill, pause and restart them.
//!
//! Two brokers, two tiers:
//! - **Apache Kafka** ([`kafka::KafkaCluster`]: three KRaft nodes, replication factor 3,
//!   `min.insync.replicas=2`) for every test that asserts exactly-once or durability. Only a
//!   real Kafka hides aborted and fenced transactions from `read_committed` readers and keeps
//!   data through a broker's death, so only there do those assertions mean anything. Start it
//!   with [`Pipeline::start_on`]`(`[`BrokerKind::exactly_once`]`(), ...)`, or pick a security
//!   mode with `BrokerKind::Kafka(Security::SaslSsl)`.
//! - **Tansu** (the embedded broker, one process, in memory, ready in a second) for the quick
//!   tier: behaviour that does not depend on aborts or durability ([`Pipeline::start`],
//!   [`Pipeline::start_with_env`]).
//!
//! `SLUICE_TEST_BROKER=kafka` or `=tansu` puts every test of both tiers on that broker (Tansu
//! for quick local iteration only: its exactly-once results are not evidence).

#![allow(dead_code, clippy::unwrap_used)]

pub mod abuse;
pub mod chaos;
pub mod kafka;
pub mod prometheus;
pub mod proxy;

pub use kafka::{KafkaCluster, Security};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_registry::{RegistryClient, SchemaStore};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on, for a child process to bind later. Asking the kernel for port 0 and
/// releasing it races: the kernel hands the same ephemeral range to outgoing connections and to the
/// next caller, and CI once lost a service to "Address already in use". So ports come from below the
/// ephemeral range (32768+ on Linux), each test process starting at its own offset and never handing
/// out the same port twice, and only ports that bind on every interface right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2_654_435_761)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every HL7 v2 message of the shared corpus (a file without MSH is kept whole, so it gets
/// its NAK); empty without the corpus (see `sluice_hl7::corpus`).
pub fn corpus_messages() -> Vec<Vec<u8>> {
    sluice_hl7::corpus::hl7v2_files()
        .unwrap_or_default()
        .iter()
        .flat_map(|f| sluice::send::messages_of(&std::fs::read(f).unwrap()))
        .collect()
}

/// Removes every inherited variable whose name starts with a prefix.
trait EnvsRemovePrefixed {
    fn envs_remove_prefixed(&mut self, prefix: &str) -> &mut Self;
}

impl EnvsRemovePrefixed for Command {
    fn envs_remove_prefixed(&mut self, prefix: &str) -> &mut Self {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with(prefix) {
                self.env_remove(k);
            }
        }
        self
    }
}

pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// Which broker a [`Pipeline`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Tansu,
    Kafka(Security),
    /// Apache Kafka (plaintext) with a [`proxy::Proxy`] in front of each node's client listener
    /// ([`Pipeline::proxies`]), so a test can cut every client connection.
    KafkaBehindProxies,
}

impl BrokerKind {
    fn forced() -> Option<BrokerKind> {
        match std::env::var("SLUICE_TEST_BROKER").as_deref() {
            Ok("kafka") => Some(BrokerKind::Kafka(Security::Plaintext)),
            Ok("tansu") => Some(BrokerKind::Tansu),
            Ok(other) => panic!("SLUICE_TEST_BROKER={other}: expected kafka or tansu"),
            Err(_) => None,
        }
    }

    /// The tier of exactly-once and durability assertions: Apache Kafka (plaintext), unless
    /// `SLUICE_TEST_BROKER=tansu`.
    pub fn exactly_once() -> BrokerKind {
        BrokerKind::forced().unwrap_or(BrokerKind::Kafka(Security::Plaintext))
    }

    /// The quick tier: Tansu, unless `SLUICE_TEST_BROKER=kafka`.
    pub fn quick() -> BrokerKind {
        BrokerKind::forced().unwrap_or(BrokerKind::Tansu)
    }
}

/// The broker process(es) of a pipeline.
pub enum Broker {
    Tansu(Proc),
    Kafka(KafkaCluster),
}

impl Broker {
    /// Freezes the broker (SIGSTOP to every process of it): connections stay open, nothing answers.
    pub fn pause(&self) {
        match self {
            Broker::Tansu(p) => p.signal("STOP"),
            Broker::Kafka(k) => k.signal_all("STOP"),
        }
    }

    pub fn resume(&self) {
        match self {
            Broker::Tansu(p) => p.signal("CONT"),
            Broker::Kafka(k) => k.signal_all("CONT"),
        }
    }

    pub fn kafka(&mut self) -> Option<&mut KafkaCluster> {
        match self {
            Broker::Kafka(k) => Some(k),
            Broker::Tansu(_) => None,
        }
    }
}

/// The bearer tokens every pipeline of the harness accepts, one per role (the services read them
/// from a tokens file, as from a mounted Secret).
pub const SENDER_TOKEN: &str = "e2e-sender-token-5f0c2a9d41b7";
pub const VIEWER_TOKEN: &str = "e2e-viewer-token-8e1d7c3b20a6";
pub const OPERATOR_TOKEN: &str = "e2e-operator-token-3a9f6e0c52d8";
pub const REVIEWER_TOKEN: &str = "e2e-reviewer-token-c47b19e8f603";
/// The actors those tokens name (what audit records and decisions carry).
pub const TOKENS: [(&str, &str, &str); 4] = [
    ("Sam Sender", "sender", SENDER_TOKEN),
    ("Vic Viewer", "viewer", VIEWER_TOKEN),
    ("Olu Operator", "operator", OPERATOR_TOKEN),
    ("Dr Reviewer", "reviewer", REVIEWER_TOKEN),
];

/// A plain HTTP client sending `token` (the harness serves its APIs without TLS, explicitly;
/// the TLS tests configure certificates).
pub fn http_with(token: &str) -> reqwest::Client {
    sluice::client::http_client(None, Some(token)).unwrap()
}

pub struct Pipeline {
    pub bootstrap: String,
    /// How the harness itself connects (topics, reading results): admin on a secured cluster.
    pub admin: sluice_runtime::config::KafkaConfig,
    pub registry_url: String,
    pub mllp_port: u16,
    pub fhir_port: u16,
    pub api_port: u16,
    /// The identity review API (identifier-match).
    pub review_port: u16,
    // fields drop in order: services stop before the registry and the broker they use
    pub services: HashMap<&'static str, Proc>,
    env: Vec<(&'static str, String, String)>,
    /// Each service's stderr (its log) goes to `<name>.log` here, so tests can read what the
    /// services logged; the tails are printed when a test fails.
    logs: tempfile::TempDir,
    pub registry: Proc,
    pub broker: Broker,
    /// With [`BrokerKind::KafkaBehindProxies`]: one per node.
    pub proxies: Vec<proxy::Proxy>,
    http_ports: HashMap<&'static str, u16>,
    /// Per service: the `SLUICE_RUNTIME__KAFKA__*` variables of its Kafka user.
    kafka_env: HashMap<&'static str, Vec<(String, String)>>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(k) = self.broker.kafka() {
                eprintln!("--- kafka errors ---\n{}", k.error_tail());
            }
            for s in self.http_ports.keys() {
                let log = std::fs::read_to_string(self.logs.path().join(format!("{s}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- last log lines of {s} ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

pub const SERVICES: [&str; 5] = ["ingest", "normalise", "identifier-match", "route", "dead-letter"];

/// A project-local tool (a path under `.tools/`), installed by `scripts/setup-tools.sh` first
/// when it is missing, so a test works on a fresh machine without a manual step.
pub fn tool(path: &str) -> PathBuf {
    let p = repo().join(".tools").join(path);
    if !p.exists() {
        let st = Command::new("bash").arg(repo().join("scripts/setup-tools.sh")).status().unwrap();
        assert!(st.success(), "tools setup failed");
        assert!(p.exists(), "setup did not install {path}");
    }
    p
}

/// Runs a command to completion; fails the test with everything it printed when it exits
/// non-zero, and returns its standard output otherwise.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pipeline {
    /// The quick tier (see the module documentation).
    pub async fn start() -> Pipeline {
        Pipeline::start_on(BrokerKind::quick(), &[]).await
    }

    /// The quick tier; `env` holds (service, variable, value) for one service's process
    /// (for example `("ingest", "SLUICE_ACK_TIMEOUT_MS", "4000")`).
    pub async fn start_with_env(env: &[(&'static str, &str, &str)]) -> Pipeline {
        Pipeline::start_on(BrokerKind::quick(), env).await
    }

    /// Starts the broker, the registry, the topics and every service, and waits until all are
    /// ready.
    pub async fn start_on(kind: BrokerKind, env: &[(&'static str, &str, &str)]) -> Pipeline {
        let mut proxies = Vec::new();
        let (broker, admin, replication, kafka_env) = match kind {
            BrokerKind::Tansu => {
                let bport = free_port();
                let broker = Proc {
                    child: sluice::broker::command(bport).unwrap().spawn().unwrap(),
                };
                wait_port(bport, "broker");
                let admin = sluice_runtime::config::KafkaConfig {
                    bootstrap_servers: format!("127.0.0.1:{bport}"),
                    ..Default::default()
                };
                (Broker::Tansu(broker), admin, 1, HashMap::new())
            }
            BrokerKind::Kafka(security) => {
                let cluster = tokio::task::spawn_blocking(move || KafkaCluster::start(security)).await.unwrap();
                let admin = cluster.kafka_config("admin");
                let envs = SERVICES.iter().map(|s| (*s, kafka::service_env(&cluster.user(s)))).collect();
                (Broker::Kafka(cluster), admin, 3, envs)
            }
            BrokerKind::KafkaBehindProxies => {
                let ps: Vec<proxy::Proxy> = (0..3).map(|_| proxy::Proxy::bind()).collect();
                let (cluster, ps) = tokio::task::spawn_blocking(move || {
                    let c = KafkaCluster::start_behind(Security::Plaintext, &ps);
                    (c, ps)
                })
                .await
                .unwrap();
                proxies = ps;
                let admin = cluster.kafka_config("admin");
                (Broker::Kafka(cluster), admin, 3, HashMap::new())
            }
        };
        let rport = free_port();
        let registry = Proc {
            child: Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["registry", "--addr", &format!("127.0.0.1:{rport}")])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        wait_port(rport, "registry");
        // a new cluster takes a few seconds before all its brokers are registered and
        // replication factor 3 can be placed
        let deadline = Instant::now() + Duration::from_secs(90);
        while let Err(e) = sluice::topology::apply(&admin, replication).await {
            assert!(Instant::now() < deadline, "topics could not be created: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Broker::Kafka(k) = &broker {
            k.grant_least_privilege();
        }
        let mut p = Pipeline {
            bootstrap: admin.bootstrap_servers.clone(),
            admin,
            registry_url: format!("http://127.0.0.1:{rport}"),
            mllp_port: free_port(),
            fhir_port: free_port(),
            api_port: free_port(),
            review_port: free_port(),
            services: HashMap::new(),
            env: env.iter().map(|(s, k, v)| (*s, (*k).to_owned(), (*v).to_owned())).collect(),
            logs: tempfile::tempdir().unwrap(),
            registry,
            broker,
            proxies,
            http_ports: HashMap::new(),
            kafka_env,
        };
        let tokens: String = TOKENS
            .iter()
            .map(|(actor, role, token)| format!("- {{actor: {actor}, role: {role}, token: {token}}}\n"))
            .collect();
        std::fs::write(p.tokens_file(), tokens).unwrap();
        for s in SERVICES {
            p.start_service(s);
        }
        for s in SERVICES {
            p.wait_ready(s).await;
        }
        p
    }

    /// The tokens file every service with an API reads (`auth.tokens_file`).
    pub fn tokens_file(&self) -> PathBuf {
        self.logs.path().join("tokens.yaml")
    }

    /// The dead-letter API's base URL (`/api/dead-letters`).
    pub fn dead_letter_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/dead-letters", self.api_port)
    }

    /// An rdkafka client configuration with the harness's own (admin) settings.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        sluice_runtime::kafka::base(&self.admin, "e2e")
    }

    /// A plain producer with the harness's settings (e.g. to put a poison record on a topic).
    pub fn producer(&self) -> BaseProducer {
        self.client_config().create().unwrap()
    }

    /// Puts a record that is not Avro on `topic`: poison for the stage that reads it, which
    /// dead-letters it (replayable to `topic`).
    pub fn poison(&self, topic: &str) {
        use rdkafka::producer::{BaseRecord, Producer};
        let producer = self.producer();
        producer
            .send(BaseRecord::to(topic).key("poison").payload("not an avro record"))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    pub fn start_service(&mut self, name: &'static str) {
        self.start_instance(name, name, &[]);
    }

    /// Starts one more process of `service` under the name `key` (its log is `<key>.log`, its
    /// HTTP port is [`Pipeline::http_port`]`(key)`), with `extra` variables last, so they win.
    /// An instance other than the service's first gets its own instance id and listen ports.
    pub fn start_instance(&mut self, key: &'static str, service: &'static str, extra: &[(String, String)]) {
        let http = *self.http_ports.entry(key).or_insert_with(free_port);
        let (instance, mllp, fhir, api, review) = if key == service {
            ("e2e", self.mllp_port, self.fhir_port, self.api_port, self.review_port)
        } else {
            (key, free_port(), free_port(), free_port(), free_port())
        };
        let tokens_file = self.tokens_file().display().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", service])
            // the harness's own SLUICE_TEST_* variables are not service settings
            .envs_remove_prefixed("SLUICE_TEST_")
            .env("SLUICE_RUNTIME__KAFKA__BOOTSTRAP_SERVERS", &self.bootstrap)
            .env("SLUICE_RUNTIME__SCHEMA_REGISTRY_URL", &self.registry_url)
            .env("SLUICE_RUNTIME__HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("SLUICE_RUNTIME__INSTANCE_ID", instance)
            // an error's message, not a backtrace, in the log tail printed on failure
            .env("RUST_LIB_BACKTRACE", "0")
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn,rdkafka=error".into()),
            )
            .envs(self.kafka_env.get(service).into_iter().flatten().map(|(k, v)| (k, v)))
            // every entrance needs a token; the harness serves them without tls, explicitly
            // (tests of tls set the certificate files and `..._TLS__PLAINTEXT=false`)
            .envs(match service {
                "ingest" => vec![
                    ("SLUICE_LISTEN_ADDR", format!("127.0.0.1:{mllp}")),
                    ("SLUICE_FHIR_LISTEN_ADDR", format!("127.0.0.1:{fhir}")),
                    ("SLUICE_MLLP_TLS__PLAINTEXT", "true".into()),
                    ("SLUICE_FHIR_TLS__PLAINTEXT", "true".into()),
                    ("SLUICE_AUTH__TOKENS_FILE", tokens_file.clone()),
                ],
                "dead-letter" => vec![
                    ("SLUICE_API_ADDR", format!("127.0.0.1:{api}")),
                    ("SLUICE_API_TLS__PLAINTEXT", "true".into()),
                    ("SLUICE_AUTH__TOKENS_FILE", tokens_file.clone()),
                ],
                "identifier-match" => vec![
                    ("SLUICE_REVIEW_API__ADDR", format!("127.0.0.1:{review}")),
                    ("SLUICE_REVIEW_API__TLS__PLAINTEXT", "true".into()),
                    ("SLUICE_AUTH__TOKENS_FILE", tokens_file.clone()),
                ],
                _ => vec![],
            })
            .envs(
                self.env
                    .iter()
                    .filter(|(s, _, _)| *s == service)
                    .map(|(_, k, v)| (k.as_str(), v.as_str())),
            )
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.logs.path().join(format!("{key}.log")))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.services.insert(key, Proc { child });
    }

    pub fn http_port(&self, key: &str) -> u16 {
        self.http_ports[key]
    }

    /// What one process (by its key) logged so far.
    pub fn log_of(&self, key: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("{key}.log"))).unwrap_or_default()
    }

    /// Copies every process's log into `to` (kept after the test, for a long run's analysis).
    pub fn copy_logs(&self, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(self.logs.path()).unwrap().flatten() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    /// Everything the services logged so far.
    pub fn logs(&self) -> String {
        self.http_ports
            .keys()
            .map(|s| std::fs::read_to_string(self.logs.path().join(format!("{s}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn wait_ready(&self, name: &str) {
        let port = self.http_ports[name];
        let url = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "{name} not ready in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn metrics_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/metrics", self.http_ports[name])
    }

    /// Sends SIGTERM and waits for the process to exit (up to `within`); returns its exit code.
    pub fn terminate(&mut self, name: &'static str, within: Duration) -> Option<i32> {
        let mut p = self.services.remove(name)?;
        p.signal("TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = p.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The processes that have exited on their own since they were started (key, exit code);
    /// they are forgotten, so a later call reports only new exits.
    pub fn exited(&mut self) -> Vec<(&'static str, Option<i32>)> {
        let gone: Vec<(&'static str, Option<i32>)> = self
            .services
            .iter_mut()
            .filter_map(|(k, p)| p.child.try_wait().ok().flatten().map(|st| (*k, st.code())))
            .collect();
        for (k, _) in &gone {
            self.services.remove(k);
        }
        gone
    }

    pub fn kill(&mut self, name: &'static str) {
        if let Some(mut p) = self.services.remove(name) {
            p.signal("KILL");
            let _ = p.child.wait();
        }
    }

    pub fn store(&self) -> std::sync::Arc<SchemaStore> {
        std::sync::Arc::new(SchemaStore::new(RegistryClient::new(&self.registry_url, None).unwrap()).unwrap())
    }

    /// Every committed record of a topic: (partition, offset, key, value).
    pub fn read_all(&self, topic: &str) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
        self.read_records(topic)
            .into_iter()
            .map(|r| (r.partition, r.offset, r.key, r.value))
            .collect()
    }

    /// Every committed record of a topic, with its headers.
    pub fn read_records(&self, topic: &str) -> Vec<ReadRecord> {
        use rdkafka::message::Headers;
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", "e2e-reader")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let parts: Vec<i32> = meta.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut eof = std::collections::HashSet::new();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while eof.len() < parts.len() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    eof.remove(&m.partition());
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(ReadRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().unwrap_or_default().to_vec(),
                        value: m.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    eof.insert(p);
                }
                _ => {}
            }
        }
        out
    }
}

/// One committed record, as [`Pipeline::read_records`] read it.
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Sends messages over one MLLP connection; returns (MSA-1, ACK latency) per message.
pub async fn send_all(port: u16, msgs: &[Vec<u8>]) -> Vec<(String, Duration)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        let t = Instant::now();
        let ack = sluice_ingest::mllp::send_one(&mut s, m, Duration::from_secs(60)).await.unwrap();
        out.push((sluice_ingest::mllp::ack_code(&ack), t.elapsed()));
    }
    out
}

/// Sends messages over `connections` parallel MLLP connections; ACKs come back in input order.
pub async fn send_phase(port: u16, msgs: &[Vec<u8>], connections: usize) -> Vec<(String, Duration)> {
    let chunk = msgs.len().div_ceil(connections).max(1);
    let mut tasks = Vec::new();
    for part in msgs.chunks(chunk) {
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move { send_all(port, &part).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

/// The topics an event can end in: every routed destination plus identity review.
pub const ROUTED: [&str; 5] = [
    "routed.adt.v1",
    "routed.results.v1",
    "routed.orders.v1",
    "routed.default.v1",
    sluice_model::topology::names::REVIEW,
];

/// Where each event id was found, plus what should never be there.
pub struct Routed {
    pub seen: HashMap<String, Vec<&'static str>>,
    pub per_topic_dupes: usize,
    pub unexpected: usize,
    /// Events held for review and released later (by a reviewer's decision, or by evidence a
    /// later message brought): their routed copy says so, and they are in the review topic too.
    pub released: std::collections::HashSet<String>,
    /// What the unexpected events were: (topic, message type, match rule), for the failure message.
    pub unexpected_kinds: Vec<(&'static str, String, String)>,
}

/// The match rules of an event released from review.
pub const RELEASE_RULES: [&str; 4] = ["reviewer_link", "reviewer_not_same", "reviewer_new_patient", "resolved_by_evidence"];

impl Routed {
    pub fn assert_exactly_once(&self, expected: &std::collections::HashSet<String>) {
        let missing = expected.iter().filter(|id| !self.seen.contains_key(*id)).count();
        // held then released: once in review, once routed
        let twice = self
            .seen
            .iter()
            .filter(|(id, t)| {
                let released = self.released.contains(*id) && t.len() == 2 && t.contains(&sluice_model::topology::names::REVIEW);
                t.len() > 1 && !released
            })
            .count();
        assert_eq!(
            missing,
            0,
            "{missing} of {} well-formed messages never reached a routed or review topic",
            expected.len()
        );
        assert_eq!(self.per_topic_dupes, 0, "duplicate events within a topic");
        assert_eq!(
            twice, 0,
            "events delivered to more than one destination (the default rules are exclusive)"
        );
        assert_eq!(
            self.unexpected, 0,
            "events that no sent message accounts for: {:?}",
            self.unexpected_kinds
        );
    }
}

impl Pipeline {
    /// Reads every routed and review topic until all `expected` event ids are there (or the
    /// timeout passes) and reports where each event was found.
    pub async fn wait_routed(&self, expected: &std::collections::HashSet<String>, timeout: Duration) -> Routed {
        let store = self.store();
        let deadline = Instant::now() + timeout;
        loop {
            let mut r = Routed {
                seen: HashMap::new(),
                per_topic_dupes: 0,
                unexpected: 0,
                released: std::collections::HashSet::new(),
                unexpected_kinds: Vec::new(),
            };
            for topic in ROUTED {
                let mut ids_here = std::collections::HashSet::new();
                for (_, _, _, v) in self.read_all(topic) {
                    store.prefetch(&v).await.unwrap();
                    let m: sluice_model::MatchedEvent = store.decode(&v).unwrap();
                    if !ids_here.insert(m.event.event_id.clone()) {
                        r.per_topic_dupes += 1;
                    }
                    if !expected.contains(&m.event.event_id) {
                        r.unexpected += 1;
                        r.unexpected_kinds.push((
                            topic,
                            format!("{}^{}", m.event.message_type, m.event.trigger_event),
                            m.match_result.rule.clone(),
                        ));
                    }
                    if topic != sluice_model::topology::names::REVIEW && RELEASE_RULES.contains(&m.match_result.rule.as_str()) {
                        r.released.insert(m.event.event_id.clone());
                    }
                    r.seen.entry(m.event.event_id).or_default().push(topic);
                }
            }
            if expected.iter().all(|id| r.seen.contains_key(id)) || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

impl Pipeline {
    /// Every committed record of a topic, decoded.
    pub async fn decoded<T: sluice_model::Record>(&self, topic: &str) -> Vec<T> {
        let store = self.store();
        let mut out = Vec::new();
        for (_, _, _, v) in self.read_all(topic) {
            store.prefetch(&v).await.unwrap();
            out.push(store.decode::<T>(&v).unwrap());
        }
        out
    }

    /// The value of one series on a service's `/metrics` (0 when absent), e.g.
    /// `sluice_normalise_resends_skipped_total{source="hl7v2"}`.
    pub async fn metric(&self, service: &str, series: &str) -> f64 {
        let text = reqwest::get(self.metrics_url(service)).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

/// The event ids `sluice_normalise` makes of one FHIR body.
pub fn fhir_event_ids(body: &[u8]) -> std::collections::HashSet<String> {
    let raw = sluice_model::RawMessage {
        payload: body.to_vec(),
        ..Default::default()
    };
    sluice_normalise::fhir_in::map_body(&raw, &Default::default())
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

impl Pipeline {
    /// The dead-letter API's list (`query`: e.g. `stage=normalise&status=replayed`), as a viewer.
    pub async fn dead_letters(&self, query: &str) -> serde_json::Value {
        http_with(VIEWER_TOKEN)
            .get(format!("{}?{query}", self.dead_letter_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The event ids `sluice_normalise` makes of HL7 v2 messages: one per patient (a message about
/// several patients, such as BAR^P02 or A17, makes one event for each).
pub fn hl7_event_ids(msgs: &[Vec<u8>]) -> std::collections::HashSet<String> {
    msgs.iter()
        .flat_map(|m| {
            let msg = sluice_hl7::Message::parse(m);
            let raw = sluice_model::RawMessage {
                payload: m.clone(),
                ..Default::default()
            };
            sluice_mapping::v2::map_message(&msg, &raw, &Default::default())
                .into_iter()
                .map(|e| e.event_id)
        })
        .collect()
}
