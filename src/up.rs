//! `sluice up`: the whole pipeline in one process, and `sluice run`: one service.

use crate::client::ClientTls;
use crate::{broker, devcert, generate, topology};
use sluice_runtime::auth::{AuthConfig, Role, StaticToken};
use sluice_runtime::config::{RuntimeConfig, Secret, TracingConfig};
use sluice_runtime::shutdown::Shutdown;
use sluice_runtime::telemetry::{self, Health};
use sluice_runtime::tls::ListenerTls;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// An external Kafka cluster; without it the embedded broker (Tansu, in memory) is
    /// started, which keeps nothing and shows aborted transactions: for development only
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    #[arg(long, default_value = "plaintext")]
    pub security_protocol: String,
    #[arg(long)]
    pub sasl_mechanism: Option<String>,
    #[arg(long)]
    pub sasl_username: Option<String>,
    #[arg(long, env = "SLUICE_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,
    #[arg(long)]
    pub ssl_ca_location: Option<String>,
    /// Client certificate (PEM) for mutual TLS, with --ssl-key-location
    #[arg(long)]
    pub ssl_certificate_location: Option<String>,
    #[arg(long)]
    pub ssl_key_location: Option<String>,
    #[arg(long, env = "SLUICE_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub ssl_key_password: Option<String>,
    /// An external schema registry; without it the embedded one is served on --registry-addr
    #[arg(long)]
    pub schema_registry_url: Option<String>,
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub registry_addr: String,
    #[arg(long, default_value = "127.0.0.1:2575")]
    pub mllp_addr: String,
    /// The FHIR R4 endpoint (`POST /fhir`, `POST /fhir/{type}`); empty turns it off
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub fhir_addr: String,
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http_addr: String,
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub dead_letter_addr: String,
    /// The identity review API; empty turns it off
    #[arg(long, default_value = "127.0.0.1:8083")]
    pub review_addr: String,
    /// Serve MLLP and HTTP without TLS (bearer tokens are still required). Without this and
    /// without --tls-cert, a development CA and server certificate are made at start-up
    #[arg(long)]
    pub plaintext: bool,
    /// Serve this certificate (PEM chain) on every listener, with --tls-key
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Mutual TLS on MLLP: accept only senders with a certificate from this CA (PEM)
    #[arg(long)]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Where the development CA and certificate are written
    #[arg(long, default_value_os_t = std::env::temp_dir().join("sluice-up-tls"))]
    pub tls_dir: std::path::PathBuf,
    /// Bearer token of the sender role (POST FHIR); made at start-up when not given
    #[arg(long, env = "SLUICE_SENDER_TOKEN", hide_env_values = true)]
    pub sender_token: Option<String>,
    /// Bearer token of the viewer role (lists, no payloads); made at start-up when not given
    #[arg(long, env = "SLUICE_VIEWER_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<String>,
    /// Bearer token of the operator role (dead-letter payloads, replay, discard); made at start-up when not given
    #[arg(long, env = "SLUICE_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// Bearer token of the reviewer role (identity review items and decisions); made at start-up when not given
    #[arg(long, env = "SLUICE_REVIEWER_TOKEN", hide_env_values = true)]
    pub reviewer_token: Option<String>,
    /// Send this many synthetic messages (plus a few malformed ones) once running, and report
    #[arg(long)]
    pub demo: Option<usize>,
    /// Stop after the demo report instead of running until Ctrl-C
    #[arg(long)]
    pub exit_after_demo: bool,
    /// Export traces to this OTLP collector (its base URL, e.g. http://127.0.0.1:4318, or
    /// http://127.0.0.1:4317 with grpc); off without it
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// The OTLP transport: http/protobuf or grpc
    #[arg(long, default_value = sluice_runtime::config::OTLP_HTTP_PROTOBUF)]
    pub otlp_protocol: String,
    /// The fraction of messages whose trace is exported, 0.0 to 1.0
    #[arg(long, default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
}

impl Args {
    fn tracing(&self) -> TracingConfig {
        TracingConfig {
            otlp_endpoint: self.otlp_endpoint.clone().unwrap_or_default(),
            otlp_protocol: self.otlp_protocol.clone(),
            sample_ratio: self.trace_sample_ratio,
            ..Default::default()
        }
    }
}

/// How `sluice up` secures its entrances: TLS on every listener (unless --plaintext) and a
/// bearer token per role, always.
struct Entrances {
    mllp_tls: ListenerTls,
    http_tls: ListenerTls,
    /// What a client of these listeners trusts (None: plaintext).
    client: Option<ClientTls>,
    auth: AuthConfig,
    tokens: Vec<(Role, String)>,
}

impl Entrances {
    fn scheme(&self) -> &'static str {
        if self.client.is_some() { "https" } else { "http" }
    }

    fn token(&self, role: Role) -> &str {
        self.tokens.iter().find(|(r, _)| *r == role).map_or("", |(_, t)| t.as_str())
    }
}

/// A fresh random token: 32 bytes, hex.
fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn entrances(a: &Args) -> anyhow::Result<Entrances> {
    let given = [
        (Role::Sender, &a.sender_token),
        (Role::Viewer, &a.viewer_token),
        (Role::Operator, &a.operator_token),
        (Role::Reviewer, &a.reviewer_token),
    ];
    let tokens: Vec<(Role, String)> = given
        .iter()
        .map(|(r, t)| (*r, t.as_ref().map_or_else(new_token, Clone::clone)))
        .collect();
    let auth = AuthConfig {
        tokens: tokens
            .iter()
            .map(|(role, token)| StaticToken {
                actor: format!("sluice-up-{}", role.as_str()),
                role: *role,
                token: Secret::new(token.clone()),
            })
            .collect(),
        ..Default::default()
    };
    auth.validate("auth")?;
    auth.all_tokens("auth")?;
    if a.plaintext {
        anyhow::ensure!(
            a.tls_cert.is_none() && a.tls_client_ca.is_none(),
            "--plaintext and --tls-* exclude each other"
        );
        let plain = ListenerTls {
            plaintext: true,
            ..Default::default()
        };
        return Ok(Entrances {
            mllp_tls: plain.clone(),
            http_tls: plain,
            client: None,
            auth,
            tokens,
        });
    }
    let (cert, key, ca) = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), c.clone()),
        _ => {
            std::fs::create_dir_all(&a.tls_dir)?;
            let ca = devcert::DevCa::new("sluice up development CA")?;
            let (cert, key) = ca.server(&["localhost", "127.0.0.1", "::1"])?.write(&a.tls_dir, "server")?;
            (cert, key, ca.write(&a.tls_dir)?)
        }
    };
    let http_tls = ListenerTls {
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
        ..Default::default()
    };
    let mllp_tls = ListenerTls {
        client_ca_file: a.tls_client_ca.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        ..http_tls.clone()
    };
    Ok(Entrances {
        mllp_tls,
        http_tls,
        client: Some(ClientTls {
            ca_file: ca,
            ..Default::default()
        }),
        auth,
        tokens,
    })
}

/// How to use the entrances: tokens and curl examples. Printed at start-up; the tokens are the
/// operator's own (they were made or given for this run), never logged.
fn print_entrances(a: &Args, e: &Entrances) {
    let s = e.scheme();
    let cacert = e
        .client
        .as_ref()
        .map(|c| format!(" --cacert {}", c.ca_file.display()))
        .unwrap_or_default();
    println!("\nentrances ({}):", if e.client.is_some() { "tls" } else { "plaintext, as asked" });
    println!("  mllp   {} {}", a.mllp_addr, if e.mllp_tls.mutual() { "(mutual tls)" } else { "" });
    if !a.fhir_addr.is_empty() {
        println!("  fhir   {s}://{}/fhir", a.fhir_addr);
    }
    println!("  dead letters  {s}://{}/api/dead-letters", a.dead_letter_addr);
    if !a.review_addr.is_empty() {
        println!("  identity review  {s}://{}/api/review/items", a.review_addr);
    }
    println!("bearer tokens for this run (set SLUICE_<ROLE>_TOKEN to choose them):");
    for (role, token) in &e.tokens {
        println!("  export SLUICE_{}_TOKEN={token}", role.as_str().to_uppercase());
    }
    println!("for example:");
    if !a.fhir_addr.is_empty() {
        println!(
            "  curl{cacert} -H \"Authorization: Bearer $SLUICE_SENDER_TOKEN\" -H 'Content-Type: application/fhir+json' --data @bundle.json {s}://{}/fhir",
            a.fhir_addr
        );
    }
    println!(
        "  curl{cacert} -H \"Authorization: Bearer $SLUICE_VIEWER_TOKEN\" {s}://{}/api/dead-letters",
        a.dead_letter_addr
    );
    println!(
        "  curl{cacert} -H \"Authorization: Bearer $SLUICE_OPERATOR_TOKEN\" '{s}://{}/api/dead-letters/ID/payload?reason=ticket+123'",
        a.dead_letter_addr
    );
    let tls = e
        .client
        .as_ref()
        .map(|c| format!(" --tls-ca {}", c.ca_file.display()))
        .unwrap_or_default();
    println!("  sluice send --addr {}{tls} FILES", a.mllp_addr);
}

/// Runs every service in this process until shutdown or until one fails.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let tracing = a.tracing();
    let _telemetry = telemetry::init("text", &tracing, "sluice")?;
    let entrances = entrances(&a)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals()?;
    let mut broker_child = None;
    let bootstrap = match &a.bootstrap_servers {
        Some(b) => b.clone(),
        None => {
            broker_child = Some(broker::start(a.broker_port).await?);
            tracing::info!(port = a.broker_port, "embedded broker started (in-memory)");
            tracing::warn!("{}", broker::NOT_GUARANTEED);
            format!("127.0.0.1:{}", a.broker_port)
        }
    };
    let registry_url = match &a.schema_registry_url {
        Some(u) => u.clone(),
        None => {
            let listener = tokio::net::TcpListener::bind(&a.registry_addr).await?;
            let addr = listener.local_addr()?;
            let sd = shutdown.clone();
            tokio::spawn(sluice_registry::server::serve(listener, async move { sd.wait().await }));
            tracing::info!(%addr, "embedded schema registry listening");
            format!("http://{addr}")
        }
    };
    let rt = RuntimeConfig {
        kafka: sluice_runtime::config::KafkaConfig {
            bootstrap_servers: bootstrap.clone(),
            security_protocol: a.security_protocol.clone(),
            sasl_mechanism: a.sasl_mechanism.clone(),
            sasl_username: a.sasl_username.clone(),
            sasl_password: a.sasl_password.clone().map(Secret::new),
            ssl_ca_location: a.ssl_ca_location.clone(),
            ssl_certificate_location: a.ssl_certificate_location.clone(),
            ssl_key_location: a.ssl_key_location.clone(),
            ssl_key_password: a.ssl_key_password.clone().map(Secret::new),
            ..Default::default()
        },
        schema_registry_url: registry_url,
        http_addr: a.http_addr.clone(),
        tracing,
        ..Default::default()
    };
    rt.validate()?;
    let created = topology::apply(&rt.kafka, 1).await?;
    tracing::info!(created, "topology applied");
    let health = Health::new();
    let http = telemetry::serve_http(&a.http_addr, health.router(), shutdown.clone()).await?;
    tracing::info!(%http, "metrics on /metrics, health on /healthz and /readyz");

    let listeners = Listeners {
        mllp_addr: a.mllp_addr.clone(),
        fhir_addr: a.fhir_addr.clone(),
        dead_letter_addr: a.dead_letter_addr.clone(),
        review_addr: a.review_addr.clone(),
        mllp_tls: entrances.mllp_tls.clone(),
        http_tls: entrances.http_tls.clone(),
        auth: entrances.auth.clone(),
    };
    let mut services = spawn_services(&rt, &listeners, &shutdown, &health);

    print_entrances(&a, &entrances);
    if let Some(n) = a.demo {
        let (addr, dl, http_s, exit) = (a.mllp_addr.clone(), a.dead_letter_addr.clone(), http.to_string(), a.exit_after_demo);
        let scheme = entrances.scheme();
        let fhir = (!a.fhir_addr.is_empty()).then(|| format!("{scheme}://{}/fhir", a.fhir_addr));
        let (sd, h, kafka) = (shutdown.clone(), health.clone(), rt.kafka.clone());
        let client = entrances.client.clone();
        let (sender, viewer) = (entrances.token(Role::Sender).to_owned(), entrances.token(Role::Viewer).to_owned());
        tokio::spawn(async move {
            let clients = Demo {
                tls: client.as_ref(),
                sender: &sender,
                viewer: &viewer,
                dead_letters: format!("{scheme}://{dl}/api/dead-letters"),
            };
            if let Err(e) = demo(n, &addr, fhir.as_deref(), kafka, &h, &clients).await {
                tracing::error!(error = %e, "demo failed");
            }
            println!("\nmetrics: http://{http_s}/metrics   dead letters: {scheme}://{dl}/api/dead-letters (viewer token)");
            if exit {
                sd.trigger();
            } else {
                println!("pipeline keeps running; send more with `sluice send --addr {addr} FILES`, Ctrl-C stops it");
            }
        });
    }

    let mut failure = None;
    if let Some(Ok((name, result))) = services.join_next().await {
        if let Err(e) = result {
            tracing::error!(service = name, error = %e, "service failed, stopping");
            failure = Some(e);
        }
        shutdown.trigger();
    }
    while services.join_next().await.is_some() {}
    if let Some(mut child) = broker_child {
        let _ = child.kill().await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What each service's task returns: its name and how it ended.
pub type ServiceSet = tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>;

/// Where and how the services of one process listen.
pub struct Listeners {
    pub mllp_addr: String,
    /// empty: no FHIR endpoint
    pub fhir_addr: String,
    pub dead_letter_addr: String,
    /// empty: no review API
    pub review_addr: String,
    pub mllp_tls: ListenerTls,
    pub http_tls: ListenerTls,
    pub auth: AuthConfig,
}

/// Starts the five services as tasks of this process, all on one runtime configuration.
pub fn spawn_services(rt: &RuntimeConfig, l: &Listeners, shutdown: &Shutdown, health: &Health) -> ServiceSet {
    let mut services = tokio::task::JoinSet::new();
    let (sd, h) = (shutdown.clone(), health.clone());
    let ingest = sluice_ingest::Config {
        runtime: rt.clone(),
        listen_addr: l.mllp_addr.clone(),
        fhir_listen_addr: l.fhir_addr.clone(),
        mllp_tls: l.mllp_tls.clone(),
        fhir_tls: l.http_tls.clone(),
        auth: l.auth.clone(),
        ..Default::default()
    };
    services.spawn(async move { ("ingest", sluice_ingest::run(ingest, sd, h).await) });
    let (sd, h, c) = (shutdown.clone(), health.clone(), sluice_normalise::Config { runtime: rt.clone() });
    services.spawn(async move { ("normalise", sluice_normalise::run(c, sd, h).await) });
    let (sd, h, c) = (
        shutdown.clone(),
        health.clone(),
        sluice_identifier_match::Config {
            runtime: rt.clone(),
            review_api: sluice_identifier_match::api::ApiConfig {
                addr: l.review_addr.clone(),
                tls: l.http_tls.clone(),
            },
            auth: l.auth.clone(),
            ..Default::default()
        },
    );
    services.spawn(async move { ("identifier-match", sluice_identifier_match::run(c, sd, h).await) });
    let (sd, h, c) = (
        shutdown.clone(),
        health.clone(),
        sluice_route::Config {
            runtime: rt.clone(),
            rules_file: None,
        },
    );
    services.spawn(async move { ("route", sluice_route::run(c, sd, h).await) });
    let (sd, h, c) = (
        shutdown.clone(),
        health.clone(),
        sluice_dead_letter::Config {
            runtime: rt.clone(),
            api_addr: l.dead_letter_addr.clone(),
            api_tls: l.http_tls.clone(),
            auth: l.auth.clone(),
        },
    );
    services.spawn(async move { ("dead-letter", sluice_dead_letter::run(c, sd, h).await) });
    services
}

/// How the demo reaches the entrances.
struct Demo<'a> {
    tls: Option<&'a ClientTls>,
    sender: &'a str,
    viewer: &'a str,
    dead_letters: String,
}

async fn demo(
    n: usize,
    mllp_addr: &str,
    fhir_url: Option<&str>,
    kafka: sluice_runtime::config::KafkaConfig,
    health: &Health,
    clients: &Demo<'_>,
) -> anyhow::Result<()> {
    for _ in 0..600 {
        if health.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut msgs = generate::messages(n, 42);
    let bad = generate::malformed((n / 50).max(2));
    msgs.extend(bad);
    let mut stream = crate::client::mllp_connect(mllp_addr, clients.tls).await?;
    let mut counts = std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    for m in &msgs {
        let ack = sluice_ingest::mllp::send_one(&mut stream, m, Duration::from_secs(60)).await?;
        *counts.entry(sluice_ingest::mllp::ack_code(&ack)).or_insert(0usize) += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("\nsent {} messages over MLLP in {secs:.1}s: ACKs {counts:?}", msgs.len());
    if let Some(url) = fhir_url {
        // and a tenth as many FHIR R4 Bundles over HTTP, plus one body that is not FHIR
        let client = crate::client::http_client(clients.tls, Some(clients.sender))?;
        let mut bodies = generate::fhir_bundles((n / 10).max(1), 42);
        bodies.push(b"{\"resourceType\": ".to_vec());
        let mut answers = std::collections::BTreeMap::new();
        for b in bodies.iter().cloned() {
            let (status, _) = crate::send::post_fhir(&client, url, b).await?;
            *answers.entry(status).or_insert(0usize) += 1;
        }
        println!("posted {} FHIR bodies to {url}: HTTP {answers:?}", bodies.len());
    }
    // give the stages a moment, then show where the output is
    tokio::time::sleep(Duration::from_secs(5)).await;
    let viewer = crate::client::http_client(clients.tls, Some(clients.viewer))?;
    let listed: serde_json::Value = viewer.get(&clients.dead_letters).send().await?.error_for_status()?.json().await?;
    println!(
        "dead letters listed with the viewer token (no payloads): {}",
        listed["count"].as_u64().unwrap_or_default()
    );
    let topology = sluice_model::topology::Topology::load()?;
    println!("committed records per topic:");
    for t in &topology.topics {
        let cfg = kafka.clone();
        let name = t.name.clone();
        let n = tokio::task::spawn_blocking(move || sluice_runtime::state::read_topic(&cfg, &name, |_, _| {})).await??;
        println!("  {:<34} {n}", t.name);
    }
    Ok(())
}

/// Runs one service in this process, configured by file and `SLUICE_*` variables.
pub async fn run_one(service: &str, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    use sluice_runtime::serve_service;
    let name = format!("sluice-{service}");
    match service {
        "ingest" => serve_service(&name, config, sluice_ingest::run).await,
        "normalise" => serve_service(&name, config, sluice_normalise::run).await,
        "identifier-match" => serve_service(&name, config, sluice_identifier_match::run).await,
        "route" => serve_service(&name, config, sluice_route::run).await,
        "dead-letter" => serve_service(&name, config, sluice_dead_letter::run).await,
        other => anyhow::bail!("unknown service {other}: expected ingest, normalise, identifier-match, route or dead-letter"),
    }
}

/// Loads and validates one service's configuration without starting it, and prints it (secrets
/// masked). For checking a deployment's settings before rolling it out.
pub fn check_one(service: &str, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    fn check<C: sluice_runtime::ServiceConfig + std::fmt::Debug>(file: Option<&std::path::Path>) -> anyhow::Result<()> {
        let cfg: C = sluice_runtime::config::load(file)?;
        cfg.validate()?;
        println!("{cfg:#?}");
        Ok(())
    }
    match service {
        "ingest" => check::<sluice_ingest::Config>(config),
        "normalise" => check::<sluice_normalise::Config>(config),
        "identifier-match" => check::<sluice_identifier_match::Config>(config),
        "route" => check::<sluice_route::Config>(config),
        "dead-letter" => check::<sluice_dead_letter::Config>(config),
        other => anyhow::bail!("unknown service {other}: expected ingest, normalise, identifier-match, route or dead-letter"),
    }
}
