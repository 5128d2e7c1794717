//! Every entrance encrypted and authenticated, as a sender, an operator and an attacker meet it:
//! the services as processes with certificates made here (a development CA from
//! `sluice::devcert`), an OIDC provider's JWKS served from this test, and real clients: rustls,
//! Python's `ssl` (the project venv), `openssl s_client` and reqwest.
//!
//! - MLLP over TLS (server certificate only) answers AA to a client with no certificate of its
//!   own; a client that does not trust the server and a plaintext client are refused, counted;
//! - MLLP over mutual TLS answers AA to each real client; an untrusted, missing or expired client
//!   certificate and a plaintext client are refused in the handshake, each counted by reason and
//!   logged; a certificate rotated on disk is served to the next connection, the process unchanged;
//! - HTTPS on the FHIR endpoint, the dead-letter API and the review API (plaintext refused and
//!   counted), one request per role on every route (static tokens and JWTs, valid, expired, from
//!   another issuer, forged): each gets what it should and nothing more; lists for viewers carry
//!   no payload and no patient data;
//! - payload and review-item views, replays, discards and identity decisions are on
//!   `audit.events.v1` with the token's actor and the reason given; a body naming another actor
//!   is refused and leaves no record; refused requests leave no audit record; when the audit
//!   record cannot be written the payload is not shown;
//! - metrics and health answer without a token and hold no patient data or token;
//! - on by default: a service whose entrance has no certificate or no way to check tokens does
//!   not start, and `sluice up` with no security options serves TLS and wants a token per role.
//!
//! Quick tier (Tansu): nothing here depends on aborted transactions being hidden.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::{OPERATOR_TOKEN, Pipeline, REVIEWER_TOKEN, SENDER_TOKEN, VIEWER_TOKEN};
use serde_json::{Value, json};
use sluice::client::{ClientTls, http_client, mllp_connect};
use sluice::devcert::{DevCa, Issued};
use sluice_ingest::mllp::{ack_code, send_one};
use sluice_model::topology::names;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://idp.test/realms/nhs";
const AUDIENCE: &str = "sluice";

/// The certificates of the test: the services' CA and the certificates it issued, and another
/// CA nobody trusts (with a client certificate of its own).
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    client: (PathBuf, PathBuf),
    untrusted: (PathBuf, PathBuf),
    expired: (PathBuf, PathBuf),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("Sluice test CA").unwrap();
        let other = DevCa::new("Not the Sluice test CA").unwrap();
        let p = dir.path();
        ca.server(&["localhost", "127.0.0.1"]).unwrap().write(p, "server").unwrap();
        ca.server(&["localhost", "127.0.0.1"]).unwrap().write(p, "mllp").unwrap();
        let other_ca = p.join("other-ca.pem");
        std::fs::write(&other_ca, &other.cert_pem).unwrap();
        Pki {
            ca: ca.write(p).unwrap(),
            other_ca,
            client: ca.client("lab-system").unwrap().write(p, "client").unwrap(),
            untrusted: other.client("lab-system").unwrap().write(p, "untrusted").unwrap(),
            expired: ca.expired_client("lab-system").unwrap().write(p, "expired").unwrap(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn trusting(&self, ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> ClientTls {
        ClientTls {
            ca_file: ca.to_owned(),
            cert_file: client.map(|c| c.0.clone()),
            key_file: client.map(|c| c.1.clone()),
        }
    }

    /// The client certificate and key, for the command-line clients.
    fn client_files(&self) -> (String, String) {
        (self.path("client.pem"), self.path("client.key"))
    }
}

/// The provider's signing key (ES256) and its JWKS, served on a free port.
struct Provider {
    url: String,
    kid: String,
    key: jsonwebtoken::EncodingKey,
}

async fn provider() -> Provider {
    let kp = rcgen::KeyPair::generate().unwrap();
    let raw = kp.public_key_raw().to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test-1", "use": "sig", "alg": "ES256",
                                "x": b64(&raw[1..33]), "y": b64(&raw[33..])}]});
    let app = axum::Router::new().route("/certs", axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Provider {
        url,
        kid: "test-1".into(),
        key: jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der()),
    }
}

impl Provider {
    fn token(&self, sub: &str, roles: &[&str], change: impl Fn(&mut Value)) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600, "roles": roles});
        change(&mut claims);
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

/// Every service with an entrance on TLS (MLLP mutual, with its own files so it can be rotated
/// alone) and accepting the provider's JWTs besides the harness's static tokens.
fn secured_env(pki: &Pki, jwks: &str) -> Vec<(&'static str, String, String)> {
    let mut env = Vec::new();
    let mut set = |svc: &'static str, k: &str, v: String| env.push((svc, k.to_owned(), v));
    for (svc, prefix) in [
        ("ingest", "SLUICE_FHIR_TLS"),
        ("dead-letter", "SLUICE_API_TLS"),
        ("identifier-match", "SLUICE_REVIEW_API__TLS"),
    ] {
        set(svc, &format!("{prefix}__PLAINTEXT"), "false".into());
        set(svc, &format!("{prefix}__CERT_FILE"), pki.path("server.pem"));
        set(svc, &format!("{prefix}__KEY_FILE"), pki.path("server.key"));
        set(svc, "SLUICE_AUTH__OIDC__ISSUER", ISSUER.into());
        set(svc, "SLUICE_AUTH__OIDC__AUDIENCE", AUDIENCE.into());
        set(svc, "SLUICE_AUTH__OIDC__JWKS_URL", jwks.into());
    }
    set("ingest", "SLUICE_MLLP_TLS__PLAINTEXT", "false".into());
    set("ingest", "SLUICE_MLLP_TLS__CERT_FILE", pki.path("mllp.pem"));
    set("ingest", "SLUICE_MLLP_TLS__KEY_FILE", pki.path("mllp.key"));
    set("ingest", "SLUICE_MLLP_TLS__CLIENT_CA_FILE", pki.path("ca.pem"));
    set("ingest", "SLUICE_MLLP_TLS__RELOAD_CHECK_MS", "100".into());
    set("ingest", "SLUICE_MLLP_TLS__HANDSHAKE_TIMEOUT_MS", "2000".into());
    env
}

fn adt(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|RTH|EPR|RTH|20260301120000||ADT^A01^ADT_A01|{control_id}|P|2.5\rPID|1||TLS1001^^^RTH^MR||Testpatient^Tls||19800101|F\rPV1|1|I\r"
    )
    .into_bytes()
}

/// One message over a fresh MLLP connection: the ACK code, or why there was none.
async fn mllp_once(port: u16, tls: Option<&ClientTls>, msg: &[u8]) -> Result<String, String> {
    let mut s = mllp_connect(&format!("127.0.0.1:{port}"), tls).await.map_err(|e| e.to_string())?;
    send_one(&mut s, msg, Duration::from_secs(10))
        .await
        .map(|ack| ack_code(&ack))
        .map_err(|e| e.to_string())
}

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
msg = sys.stdin.buffer.read()
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"\x0b" + msg + b"\x1c\r")
        buf = b""
        while b"\x1c\r" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        print(s.version(), buf.decode(errors="replace"))
"#;

/// Python's `ssl` (the project venv's interpreter) sends one message, presenting `client`
/// (certificate, key) when given: what it printed (the TLS version and the ACK) or its error.
fn python_ssl_client(port: u16, ca: &str, client: Option<&(String, String)>, msg: &[u8]) -> String {
    use std::io::Write;
    let (cert, key) = client.cloned().unwrap_or_default();
    let mut child = std::process::Command::new(common::tool("venv/bin/python"))
        .args(["-c", PYTHON_CLIENT, &port.to_string(), ca, &cert, &key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `openssl s_client` (presenting `client` when given): what it printed until the ACK came (or
/// 15 s).
fn openssl_s_client(port: u16, ca: &str, client: Option<&(String, String)>, msg: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "localhost",
        "-quiet",
        "-verify_return_error",
        "-CAfile",
        ca,
    ]);
    if let Some((cert, key)) = client {
        cmd.args(["-cert", cert, "-key", key]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut frame = vec![0x0b];
    frame.extend_from_slice(msg);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&frame).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(2).any(|w| w == [0x1c, 0x0d]) {
                break;
            }
        }
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&got).into_owned()
}

async fn metric(p: &Pipeline, service: &str, series: &str) -> f64 {
    p.metric(service, series).await
}

/// A refusal counter after the client saw the refusal: the server counts it just after it
/// answered, so this waits (up to 5 s) for `at_least` and returns what the counter then says.
async fn counted(p: &Pipeline, service: &str, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(p, service, series).await;
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refusals(listener: &str, reason: &str) -> String {
    format!("sluice_ingest_refusals_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

/// A plaintext MLLP client against the TLS port: what came back (nothing readable).
async fn plaintext_mllp(port: u16, msg: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut frame = vec![0x0b];
    frame.extend_from_slice(msg);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    let _ = s.write_all(&frame).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    got
}

/// TLS without client certificates (the listener's `client_ca_file` empty): a second ingest
/// process with the server certificate only.
async fn mllp_over_tls_serves_clients_without_a_certificate_and_refuses_the_rest(p: &mut Pipeline, pki: &Pki) {
    const KEY: &str = "ingest-server-tls";
    let port = common::free_port();
    p.start_instance(
        KEY,
        "ingest",
        &[
            ("SLUICE_LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
            ("SLUICE_MLLP_TLS__CERT_FILE".into(), pki.path("server.pem")),
            ("SLUICE_MLLP_TLS__KEY_FILE".into(), pki.path("server.key")),
            ("SLUICE_MLLP_TLS__CLIENT_CA_FILE".into(), String::new()),
        ],
    );
    p.wait_ready(KEY).await;
    let ca = pki.path("ca.pem");
    assert_eq!(
        mllp_once(port, Some(&pki.trusting(&pki.ca, None)), &adt("TLS1-RUSTLS")).await,
        Ok("AA".into()),
        "rustls client without a certificate"
    );
    let py = python_ssl_client(port, &ca, None, &adt("TLS1-PYTHON"));
    assert!(
        py.contains("TLSv1.3") && py.contains("MSA|AA|TLS1-PYTHON"),
        "python ssl client: {py}"
    );
    let s_client = openssl_s_client(port, &ca, None, &adt("TLS1-OPENSSL"));
    assert!(s_client.contains("MSA|AA|TLS1-OPENSSL"), "openssl s_client: {s_client:?}");

    // a client that does not trust the server gives up in the handshake; a plaintext client
    // gets no ACK; both counted
    let aborted = refusals("mllp", "tls_client_aborted");
    let before = metric(p, KEY, &aborted).await;
    let r = mllp_once(port, Some(&pki.trusting(&pki.other_ca, None)), &adt("TLS1-DOUBTS")).await;
    assert!(r.is_err(), "a client trusting another CA: {r:?}");
    assert_eq!(counted(p, KEY, &aborted, before + 1.0).await, before + 1.0);
    let not_tls = refusals("mllp", "tls_not_tls");
    let before = metric(p, KEY, &not_tls).await;
    let answer = plaintext_mllp(port, &adt("TLS1-PLAIN")).await;
    assert!(!String::from_utf8_lossy(&answer).contains("MSA"), "a plaintext client gets no ACK");
    assert_eq!(counted(p, KEY, &not_tls, before + 1.0).await, before + 1.0);
    assert_eq!(p.terminate(KEY, Duration::from_secs(20)), Some(0), "{KEY} stops cleanly");
}

async fn mllp_over_mutual_tls_refuses_what_it_must_and_serves_a_rotated_certificate(p: &Pipeline, pki: &Pki) {
    let port = p.mllp_port;
    let (ca, client) = (pki.path("ca.pem"), pki.client_files());
    let good = pki.trusting(&pki.ca, Some(&pki.client));
    assert_eq!(
        mllp_once(port, Some(&good), &adt("TLS-RUSTLS")).await,
        Ok("AA".into()),
        "rustls client"
    );
    let py = python_ssl_client(port, &ca, Some(&client), &adt("TLS-PYTHON"));
    assert!(
        py.contains("TLSv1.3") && py.contains("MSA|AA|TLS-PYTHON"),
        "python ssl client: {py}"
    );
    let s_client = openssl_s_client(port, &ca, Some(&client), &adt("TLS-OPENSSL"));
    assert!(s_client.contains("MSA|AA|TLS-OPENSSL"), "openssl s_client: {s_client:?}");
    // the command-line clients without their certificate: no ACK
    let py = python_ssl_client(port, &ca, None, &adt("TLS-PYTHON-NOCERT"));
    assert!(!py.contains("MSA|AA"), "python ssl client without a certificate: {py}");
    let s_client = openssl_s_client(port, &ca, None, &adt("TLS-OPENSSL-NOCERT"));
    assert!(!s_client.contains("MSA"), "openssl s_client without a certificate: {s_client:?}");

    // refused in the handshake: nothing is read, nothing acknowledged; each counted and logged
    for (name, tls, reason) in [
        (
            "untrusted",
            pki.trusting(&pki.ca, Some(&pki.untrusted)),
            "tls_untrusted_client_certificate",
        ),
        ("no certificate", pki.trusting(&pki.ca, None), "tls_no_client_certificate"),
        (
            "expired",
            pki.trusting(&pki.ca, Some(&pki.expired)),
            "tls_client_certificate_expired",
        ),
    ] {
        let series = refusals("mllp", reason);
        let before = metric(p, "ingest", &series).await;
        let r = mllp_once(port, Some(&tls), &adt("TLS-REFUSED")).await;
        assert!(r.is_err(), "{name}: {r:?}");
        assert_eq!(counted(p, "ingest", &series, before + 1.0).await, before + 1.0, "{name}");
    }
    let not_tls = refusals("mllp", "tls_not_tls");
    let before = metric(p, "ingest", &not_tls).await;
    let answer = plaintext_mllp(port, &adt("TLS-PLAIN")).await;
    assert!(!String::from_utf8_lossy(&answer).contains("MSA"), "a plaintext client gets no ACK");
    assert_eq!(counted(p, "ingest", &not_tls, before + 1.0).await, before + 1.0);
    let log = p.log_of("ingest");
    for reason in [
        "tls_untrusted_client_certificate",
        "tls_no_client_certificate",
        "tls_client_certificate_expired",
        "tls_not_tls",
    ] {
        assert!(
            log.lines().any(|l| l.contains("tls handshake refused") && l.contains(reason)),
            "refusal {reason} not logged"
        );
    }

    // rotation: a certificate from a new CA written over the files is served to the next
    // connection by the same process; a connection opened before keeps working
    let pid = p.services["ingest"].child.id();
    let mut before_rotation = mllp_connect(&format!("127.0.0.1:{port}"), Some(&good)).await.unwrap();
    let new_ca = DevCa::new("Sluice test CA 2").unwrap();
    let new_ca_file = pki.dir.path().join("ca2.pem");
    std::fs::write(&new_ca_file, &new_ca.cert_pem).unwrap();
    let rotated: Issued = new_ca.server(&["localhost", "127.0.0.1"]).unwrap();
    rotated.write(pki.dir.path(), "mllp").unwrap();
    let trusts_new = pki.trusting(&new_ca_file, Some(&pki.client));
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = Instant::now();
    while mllp_once(port, Some(&trusts_new), &adt("TLS-ROTATED")).await != Ok("AA".into()) {
        assert!(Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("rotated mllp certificate served after {:?}", t.elapsed());
    assert!(
        mllp_once(port, Some(&good), &adt("TLS-OLD-CA")).await.is_err(),
        "the old certificate is no longer served"
    );
    let ack = send_one(&mut before_rotation, &adt("TLS-KEPT"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "AA");
    assert!(
        metric(
            p,
            "ingest",
            "sluice_tls_certificate_reloads_total{listener=\"mllp\",result=\"loaded\"}"
        )
        .await
            >= 1.0
    );
    // the expiry of the certificate in service is a metric (rcgen's default notAfter, 4096-01-01)
    let expiry = "sluice_tls_certificate_expiry_timestamp_seconds{listener=\"mllp\"}";
    assert_eq!(metric(p, "ingest", expiry).await, 67_090_118_400.0);
    // a rotation that cannot load keeps the certificate in service and says so until fixed
    let failing = "sluice_tls_certificate_reload_failing{listener=\"mllp\"}";
    assert_eq!(metric(p, "ingest", failing).await, 0.0);
    std::fs::write(pki.dir.path().join("mllp.pem"), "not a certificate\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(p, "ingest", failing).await != 1.0 {
        assert!(Instant::now() < deadline, "a broken rotation was never reported");
        let _ = mllp_once(port, Some(&trusts_new), &adt("TLS-BROKEN")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        mllp_once(port, Some(&trusts_new), &adt("TLS-STILL")).await,
        Ok("AA".into()),
        "the certificate in service is kept"
    );
    rotated.write(pki.dir.path(), "mllp").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(p, "ingest", failing).await != 0.0 {
        assert!(Instant::now() < deadline, "a fixed rotation was never reported");
        let _ = mllp_once(port, Some(&trusts_new), &adt("TLS-FIXED")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(p.services["ingest"].child.id(), pid, "ingest was not restarted");
}

/// Who calls, for the role table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    UnknownToken,
    Sender,
    Viewer,
    Operator,
    Reviewer,
    JwtOperator,
    JwtViewer,
    JwtExpired,
    JwtOtherIssuer,
    JwtForged,
}

const EVERYONE: [Who; 11] = [
    Who::Nobody,
    Who::UnknownToken,
    Who::Sender,
    Who::Viewer,
    Who::Operator,
    Who::Reviewer,
    Who::JwtOperator,
    Who::JwtViewer,
    Who::JwtExpired,
    Who::JwtOtherIssuer,
    Who::JwtForged,
];

struct Tokens {
    jwt_operator: String,
    jwt_viewer: String,
    jwt_expired: String,
    jwt_other_issuer: String,
    jwt_forged: String,
}

impl Tokens {
    fn of(&self, who: Who) -> Option<&str> {
        Some(match who {
            Who::Nobody => return None,
            Who::UnknownToken => "not-a-token-anyone-was-given-000",
            Who::Sender => SENDER_TOKEN,
            Who::Viewer => VIEWER_TOKEN,
            Who::Operator => OPERATOR_TOKEN,
            Who::Reviewer => REVIEWER_TOKEN,
            Who::JwtOperator => &self.jwt_operator,
            Who::JwtViewer => &self.jwt_viewer,
            Who::JwtExpired => &self.jwt_expired,
            Who::JwtOtherIssuer => &self.jwt_other_issuer,
            Who::JwtForged => &self.jwt_forged,
        })
    }

    /// JWTs from the provider: valid ones for an operator and a viewer, and the bad ones.
    fn new(provider: &Provider) -> Tokens {
        Tokens {
            jwt_operator: provider.token("oidc-operator", &["operator"], |_| {}),
            jwt_viewer: provider.token("oidc-viewer", &["viewer"], |_| {}),
            jwt_expired: provider.token("oidc-operator", &["operator"], |c| c["exp"] = json!(1_700_000_000)),
            jwt_other_issuer: provider.token("oidc-operator", &["operator"], |c| c["iss"] = json!("https://evil.test")),
            // a viewer's token with the role changed after signing
            jwt_forged: {
                let t = provider.token("oidc-viewer", &["viewer"], |_| {});
                let parts: Vec<&str> = t.split('.').collect();
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
                claims["roles"] = json!(["operator"]);
                format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2])
            },
        }
    }
}

/// What a caller without a valid token always gets.
fn unauthenticated(who: Who) -> Option<u16> {
    matches!(
        who,
        Who::Nobody | Who::UnknownToken | Who::JwtExpired | Who::JwtOtherIssuer | Who::JwtForged
    )
    .then_some(401)
}

/// Patient data the entrances were given: the dead letters' payloads (malformed messages), the
/// review item's patient and the MLLP test patient. Only an operator's payload view and a
/// reviewer's item view may show any of it.
const PAYLOAD_MARK: &str = "SECRETMRN";
const REVIEW_PATIENT: [&str; 4] = ["Reviewcase", "REVIEWCASE", "RVA3003", "RVC4004"];
const MLLP_PATIENT: [&str; 2] = ["Testpatient", "TLS1001"];

fn review_adt(site: &str, control_id: &str, pid: &str) -> Vec<u8> {
    format!("MSH|^~\\&|PAS|{site}|SLUICE|SLUICE|20260301120000||ADT^A04^ADT_A01|{control_id}|P|2.5\rEVN||20260301120000\r{pid}\rPV1|1|O\r")
        .into_bytes()
}

/// What the routes act on: dead letters of ingest (no input topic), one of normalise (can be
/// replayed) and an identity review item.
struct Work {
    ingest_rejects: Vec<String>,
    replayable: String,
    item: String,
}

async fn something_to_look_at_and_act_on(p: &Pipeline, pki: &Pki, viewer: &reqwest::Client) -> Work {
    let good = pki.trusting(&pki.ca, Some(&pki.client));
    // malformed messages over MLLP: dead letters of ingest
    for i in 0..3 {
        let bad = format!("MSH|^~\\&|LAB|RTH|EPR|RTH|20260101||||P|2.4\rPID|1||{PAYLOAD_MARK}{i}\r");
        assert_eq!(mllp_once(p.mllp_port, Some(&good), bad.as_bytes()).await, Ok("AR".into()));
    }
    // a record normalise cannot read: a dead letter of normalise, with hl7v2.raw.v1 to go back to
    p.poison(names::RAW);
    // two sites, the same name and birth date and nothing else: held for review
    for m in [
        review_adt(
            "RA1",
            "REV00001",
            "PID|1||RVA3003^^^RA1^MR~9990000018^^^NHS^NH||Reviewcase^Beatrice||19750917|F|||4 Park Road^^Leeds^^LS6 2AA^GBR^H",
        ),
        review_adt("RC3", "REV00002", "PID|1||RVC4004^^^RC3^MR||Reviewcase^Beatrice||19750917"),
    ] {
        assert_eq!(mllp_once(p.mllp_port, Some(&good), &m).await, Ok("AA".into()));
    }

    let dl = format!("https://localhost:{}/api/dead-letters", p.api_port);
    let review = format!("https://localhost:{}/api/review/items", p.review_port);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let letters: Value = viewer.get(&dl).send().await.unwrap().json().await.unwrap();
        let items: Value = viewer.get(&review).send().await.unwrap().json().await.unwrap();
        let of = |stage: &str| -> Vec<String> {
            letters["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["stage"] == stage)
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (ingest, normalise) = (of("ingest"), of("normalise"));
        let held = items["items"].as_array().map(Vec::len).unwrap_or_default();
        if ingest.len() >= 3 && !normalise.is_empty() && held >= 1 {
            return Work {
                ingest_rejects: ingest,
                replayable: normalise[0].clone(),
                item: items["items"][0]["item_id"].as_str().unwrap().to_owned(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "not there in time: {} ingest and {} normalise dead letters, {held} review items",
            ingest.len(),
            normalise.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The FHIR endpoint, the dead-letter API and the review API speak only TLS: a plaintext
/// request and a client that does not trust the CA get nothing, and each is counted.
async fn every_http_entrance_is_https_only(p: &Pipeline) {
    let apis = [
        ("ingest", "fhir", p.fhir_port, "/fhir/metadata"),
        ("dead-letter", "dead-letter", p.api_port, "/api/dead-letters"),
        ("identifier-match", "review", p.review_port, "/api/review/items"),
    ];
    for (svc, api, port, path) in apis {
        let series = |reason: &str| match svc {
            "ingest" => refusals(api, reason),
            _ => format!("sluice_auth_refusals_total{{api=\"{api}\",reason=\"{reason}\"}}"),
        };
        let before = metric(p, svc, &series("tls_not_tls")).await;
        let plain = common::http_with(VIEWER_TOKEN)
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await;
        assert!(plain.is_err(), "{svc}: plaintext answered: {plain:?}");
        assert!(
            counted(p, svc, &series("tls_not_tls"), before + 1.0).await > before,
            "{svc}: plaintext not counted"
        );
        let before = metric(p, svc, &series("tls_client_aborted")).await;
        let doubting = http_client(None, Some(VIEWER_TOKEN))
            .unwrap()
            .get(format!("https://localhost:{port}{path}"))
            .send()
            .await;
        assert!(doubting.is_err(), "{svc}: a client that does not trust the CA got an answer");
        assert!(
            counted(p, svc, &series("tls_client_aborted"), before + 1.0).await > before,
            "{svc}: aborted handshake not counted"
        );
    }
}

/// One request per caller on every route of the three APIs: the status each must get, and
/// patient data only where the role is allowed it.
async fn every_route_answers_each_role_what_it_should_and_nothing_more(p: &Pipeline, clients: &[(Who, reqwest::Client)], work: &Work) {
    let dl = format!("https://localhost:{}/api/dead-letters", p.api_port);
    let fhir = format!("https://localhost:{}/fhir", p.fhir_port);
    let review = format!("https://localhost:{}/api/review", p.review_port);
    let bundle = sluice::generate::fhir_bundles(1, 77).remove(0);
    let reason = REASON.replace(' ', "+");
    let (ids, item) = (&work.ingest_rejects, &work.item);
    const DL_READERS: &[(Who, u16)] = &[
        (Who::Viewer, 200),
        (Who::Operator, 200),
        (Who::JwtOperator, 200),
        (Who::JwtViewer, 200),
    ];

    /// A request, who may make it (the status each of them gets; everyone else: 403, or 401
    /// without a valid token) and the patient data its 200 may show.
    struct Route {
        method: &'static str,
        url: String,
        body: Option<Value>,
        allowed: &'static [(Who, u16)],
        shows: &'static [&'static str],
    }
    let route =
        |method: &'static str, url: String, body: Option<Value>, allowed: &'static [(Who, u16)], shows: &'static [&'static str]| Route {
            method,
            url,
            body,
            allowed,
            shows,
        };
    let routes: Vec<Route> = vec![
        // the CapabilityStatement is public: it describes the endpoint, nothing else
        route("GET", format!("{fhir}/metadata"), None, &[], &[]),
        route("POST", fhir.clone(), Some(Value::Null), &[(Who::Sender, 202)], &[]),
        route("POST", format!("{fhir}/"), Some(Value::Null), &[(Who::Sender, 202)], &[]),
        route("POST", format!("{fhir}/Bundle"), Some(Value::Null), &[(Who::Sender, 202)], &[]),
        route("GET", dl.clone(), None, DL_READERS, &[]),
        route("GET", format!("{dl}/{}", ids[0]), None, DL_READERS, &[]),
        route(
            "GET",
            format!("{dl}/{}/payload?reason={reason}", ids[0]),
            None,
            &[(Who::Operator, 200), (Who::JwtOperator, 200)],
            &[PAYLOAD_MARK],
        ),
        // an ingest reject has no input topic: the operator passes, and is told so
        route(
            "POST",
            format!("{dl}/{}/replay", ids[0]),
            Some(json!({"reason": REASON})),
            &[(Who::Operator, 409), (Who::JwtOperator, 409)],
            &[],
        ),
        // the second operator finds it replayed already
        route(
            "POST",
            format!("{dl}/{}/replay", work.replayable),
            Some(json!({"reason": REASON})),
            &[(Who::Operator, 200), (Who::JwtOperator, 409)],
            &[],
        ),
        route(
            "POST",
            format!("{dl}/{}/discard", ids[1]),
            Some(json!({"reason": REASON})),
            &[(Who::Operator, 200), (Who::JwtOperator, 409)],
            &[],
        ),
        route(
            "GET",
            format!("{review}/items"),
            None,
            &[(Who::Viewer, 200), (Who::Reviewer, 200), (Who::JwtViewer, 200)],
            &[],
        ),
        // a record key is a patient identifier: filtering by one is for reviewers
        route(
            "GET",
            format!("{review}/items?record=mrn%7CRC3%7C"),
            None,
            &[(Who::Reviewer, 200)],
            &[],
        ),
        route(
            "GET",
            format!("{review}/items/{item}?reason=working+the+review+queue"),
            None,
            &[(Who::Reviewer, 200)],
            &REVIEW_PATIENT,
        ),
        route(
            "POST",
            format!("{review}/items/{item}/decision"),
            Some(json!({"action": "new_patient", "reason": "a different person, checked with the ward"})),
            &[(Who::Reviewer, 202)],
            &[],
        ),
        route(
            "POST",
            format!("{review}/records/not-same"),
            Some(json!({"record_key": "mrn|RTH|TLS1001", "target_enterprise_id": "e-0000", "reason": "twins, checked with the ward"})),
            &[(Who::Reviewer, 202)],
            &[],
        ),
    ];
    let private: Vec<&str> = [PAYLOAD_MARK].iter().chain(&REVIEW_PATIENT).chain(&MLLP_PATIENT).copied().collect();
    let mut requests = 0;
    for r in &routes {
        for (who, client) in clients {
            let mut req = match r.method {
                "GET" => client.get(&r.url),
                _ => client.post(&r.url),
            };
            req = match &r.body {
                Some(Value::Null) => req.header("content-type", "application/fhir+json").body(bundle.clone()),
                Some(b) => req.json(b),
                None => req,
            };
            let answer = req.send().await.unwrap();
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap();
            let want = if r.allowed.is_empty() {
                200
            } else {
                unauthenticated(*who)
                    .or_else(|| r.allowed.iter().find(|(w, _)| w == who).map(|(_, s)| *s))
                    .unwrap_or(403)
            };
            let (method, url) = (r.method, &r.url);
            assert_eq!(status, want, "{method} {url} as {who:?}: {text}");
            for mark in &private {
                let may = status == 200 && r.shows.contains(mark);
                assert!(may || !text.contains(mark), "{method} {url} as {who:?} showed {mark}: {text}");
            }
            if status == 200 && !r.shows.is_empty() {
                assert!(
                    r.shows.iter().any(|m| text.contains(m)),
                    "{method} {url} as {who:?} showed nothing: {text}"
                );
            }
            requests += 1;
        }
    }
    println!("role table: {requests} requests on {} routes, all as expected", routes.len());
    assert!(
        metric(
            p,
            "dead-letter",
            "sluice_auth_refusals_total{api=\"dead-letter\",reason=\"forbidden\"}"
        )
        .await
            >= 1.0
    );
    assert!(metric(p, "ingest", "sluice_auth_refusals_total{api=\"fhir\",reason=\"expired\"}").await >= 1.0);
    assert!(
        metric(
            p,
            "identifier-match",
            "sluice_auth_refusals_total{api=\"review\",reason=\"bad_signature\"}"
        )
        .await
            >= 1.0
    );
    // and logged at WARN (at most once per api and reason every 10 s), without the token
    for (svc, reason) in [
        ("dead-letter", "forbidden"),
        ("ingest", "expired"),
        ("identifier-match", "bad_signature"),
    ] {
        let log = p.log_of(svc);
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("api request refused") && l.contains(reason)),
            "{svc} did not log a refusal for {reason}"
        );
    }
}

/// The reason the operator gives throughout.
const REASON: &str = "checking the sender's framing, ticket 4711";

/// Who saw or did what: the views, actions and decisions, by the token's actor, with the
/// reasons given; the refused requests left nothing.
async fn views_and_actions_are_audited_with_the_tokens_actor(p: &Pipeline, work: &Work) {
    let audit: Vec<sluice_model::AuditEvent> = p.decoded(names::AUDIT).await;
    let mut seen: Vec<(&str, &str, &str, &str, &str)> = audit
        .iter()
        .map(|a| {
            (
                a.action.as_str(),
                a.subject_id.as_str(),
                a.actor.as_str(),
                a.authentication.as_str(),
                a.reason.as_str(),
            )
        })
        .collect();
    seen.sort_unstable();
    let (viewed, discarded) = (work.ingest_rejects[0].as_str(), work.ingest_rejects[1].as_str());
    let mut want = vec![
        ("discard", discarded, "Olu Operator", "static", REASON),
        (
            "identity_decision",
            "mrn|RTH|TLS1001",
            "Dr Reviewer",
            "static",
            "twins, checked with the ward",
        ),
        (
            "identity_decision",
            work.item.as_str(),
            "Dr Reviewer",
            "static",
            "a different person, checked with the ward",
        ),
        ("replay", work.replayable.as_str(), "Olu Operator", "static", REASON),
        ("view_payload", viewed, "Olu Operator", "static", REASON),
        ("view_payload", viewed, "oidc-operator", "oidc", REASON),
        (
            "view_review_item",
            work.item.as_str(),
            "Dr Reviewer",
            "static",
            "working the review queue",
        ),
    ];
    want.sort_unstable();
    assert_eq!(seen, want);
    let replay = audit.iter().find(|a| a.action == "replay").unwrap();
    assert_eq!(replay.target_topic.as_deref(), Some(names::RAW));
    assert_eq!(replay.roles, ["operator"]);
    assert!(audit.iter().all(|a| a.peer.is_some()), "every record names the caller's address");
}

/// A body that names an actor is refused, whoever it names: the actor is the token's.
async fn a_stated_actor_is_refused(p: &Pipeline, pki: &Pki, work: &Work) {
    let trust = pki.trusting(&pki.ca, None);
    let before = p.read_all(names::AUDIT).len();
    let operator = http_client(Some(&trust), Some(OPERATOR_TOKEN)).unwrap();
    let letter = format!("https://localhost:{}/api/dead-letters/{}", p.api_port, work.ingest_rejects[2]);
    let r = operator
        .post(format!("{letter}/discard"))
        .json(&json!({"reason": REASON, "actor": "Someone Else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "{}", r.text().await.unwrap());
    let v: Value = operator.get(&letter).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "quarantined", "nothing was done: {v}");
    let reviewer = http_client(Some(&trust), Some(REVIEWER_TOKEN)).unwrap();
    let r = reviewer
        .post(format!("https://localhost:{}/api/review/records/not-same", p.review_port))
        .json(&json!({"record_key": "mrn|RTH|TLS1001", "target_enterprise_id": "e-0001", "reason": "twins", "actor": "Someone Else"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "a decision naming its actor: {}", r.status());
    let audit: Vec<sluice_model::AuditEvent> = p.decoded(names::AUDIT).await;
    assert_eq!(audit.len(), before, "a refused request left an audit record");
    assert!(audit.iter().all(|a| a.actor != "Someone Else"));
}

/// `/metrics`, `/healthz` and `/readyz` answer without a token and hold nothing of a patient or
/// a token; neither do the logs.
async fn metrics_health_and_logs_hold_no_patient_data(p: &Pipeline, tokens: &Tokens) {
    let secrets: Vec<&str> = [PAYLOAD_MARK]
        .iter()
        .chain(&REVIEW_PATIENT)
        .chain(&MLLP_PATIENT)
        .copied()
        .chain([SENDER_TOKEN, VIEWER_TOKEN, OPERATOR_TOKEN, REVIEWER_TOKEN])
        .chain([tokens.jwt_operator.as_str(), tokens.jwt_viewer.as_str()])
        .collect();
    for svc in common::SERVICES {
        let port = p.http_port(svc);
        for path in ["/metrics", "/healthz", "/readyz"] {
            let r = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{svc}{path} without a token");
            let text = r.text().await.unwrap();
            for s in &secrets {
                assert!(!text.contains(s), "{svc}{path} holds {s}");
            }
        }
    }
    let logs = p.logs();
    for s in &secrets {
        assert!(!logs.contains(s), "the logs hold {s}");
    }
}

/// No audit record, no payload: with the broker paused the view is refused (after the audit
/// write's 10 s; the broker comes back before the abort gives up).
async fn an_unaudited_payload_view_is_refused(p: &Pipeline, operator: &reqwest::Client, work: &Work) {
    let url = format!(
        "https://localhost:{}/api/dead-letters/{}/payload?reason=during+an+outage",
        p.api_port, work.ingest_rejects[2]
    );
    p.broker.pause();
    let t = Instant::now();
    let view = tokio::spawn(operator.get(url).send());
    tokio::time::sleep(Duration::from_secs(12)).await;
    p.broker.resume();
    let r = view.await.unwrap().unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(!text.contains(PAYLOAD_MARK), "a payload whose view was not audited was shown");
    println!("unaudited payload view refused after {:?}", t.elapsed());
}

/// A token issued and then revoked in the tokens file is served, then refused, by the running
/// services (no restart), and a broken edit of the file is reported while the tokens in force
/// stay.
async fn a_token_issued_and_revoked_in_the_file_takes_effect_without_a_restart(p: &Pipeline, pki: &Pki) {
    let file = p.tokens_file();
    let before = std::fs::read_to_string(&file).unwrap();
    let replace = |text: &str| {
        let next = file.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &file).unwrap();
    };
    let token = "issued-while-running-7c1e4b2f9a";
    let trust = pki.trusting(&pki.ca, None);
    let new_viewer = http_client(Some(&trust), Some(token)).unwrap();
    let dl = format!("https://localhost:{}/api/dead-letters", p.api_port);
    let pid = p.services["dead-letter"].child.id();
    let status_within = |want: u16, what: &'static str| {
        let (client, dl) = (new_viewer.clone(), dl.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = client.get(&dl).send().await.unwrap().status().as_u16();
                if got == want {
                    break;
                }
                assert!(Instant::now() < deadline, "{what}: still {got}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    status_within(401, "a token not in the file").await;
    replace(&format!(
        "{before}- {{actor: \"Vera Viewer (new)\", role: viewer, token: \"{token}\"}}\n"
    ));
    status_within(200, "a token issued in the file was never accepted").await;
    // an edit that breaks the file: the tokens in force stay, and it shows
    replace(&format!("{before}- {{actor: \"Bad\", role: viewer, token: short}}\n"));
    let failing = "sluice_auth_tokens_reload_failing";
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    status_within(200, "a broken edit dropped the tokens in force").await;
    assert_eq!(
        counted(p, "dead-letter", failing, 1.0).await,
        1.0,
        "a broken tokens file not reported"
    );
    replace(&before);
    status_within(401, "a token revoked in the file was still accepted").await;
    assert_eq!(metric(p, "dead-letter", failing).await, 0.0);
    assert!(metric(p, "dead-letter", "sluice_auth_tokens_reloads_total{result=\"loaded\"}").await >= 2.0);
    assert_eq!(p.services["dead-letter"].child.id(), pid, "dead-letter was not restarted");
    assert!(!p.logs().contains(token), "a token in a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_entrance_is_encrypted_and_authenticated() {
    let pki = Pki::new();
    let provider = provider().await;
    let env = secured_env(&pki, &provider.url);
    let refs: Vec<(&'static str, &str, &str)> = env.iter().map(|(s, k, v)| (*s, k.as_str(), v.as_str())).collect();
    let mut p = Pipeline::start_with_env(&refs).await;
    let tokens = Tokens::new(&provider);
    let trust = pki.trusting(&pki.ca, None);
    let clients: Vec<(Who, reqwest::Client)> = EVERYONE
        .iter()
        .map(|w| (*w, http_client(Some(&trust), tokens.of(*w)).unwrap()))
        .collect();
    let client = |who: Who| clients.iter().find(|(w, _)| *w == who).unwrap().1.clone();

    every_http_entrance_is_https_only(&p).await;
    let work = something_to_look_at_and_act_on(&p, &pki, &client(Who::Viewer)).await;
    every_route_answers_each_role_what_it_should_and_nothing_more(&p, &clients, &work).await;
    a_token_issued_and_revoked_in_the_file_takes_effect_without_a_restart(&p, &pki).await;
    views_and_actions_are_audited_with_the_tokens_actor(&p, &work).await;
    a_stated_actor_is_refused(&p, &pki, &work).await;
    mllp_over_tls_serves_clients_without_a_certificate_and_refuses_the_rest(&mut p, &pki).await;
    mllp_over_mutual_tls_refuses_what_it_must_and_serves_a_rotated_certificate(&p, &pki).await;
    metrics_health_and_logs_hold_no_patient_data(&p, &tokens).await;
    an_unaudited_payload_view_is_refused(&p, &client(Who::Operator), &work).await;
}

/// A service whose entrance has no certificate, or no way to check a token, does not start:
/// it exits at once, naming the setting (plaintext and "no authentication" are never defaults).
#[test]
fn a_service_without_certificates_or_tokens_does_not_start() {
    let addr = || format!("127.0.0.1:{}", common::free_port());
    let (mllp, fhir, review) = (addr(), addr(), addr());
    let ingest = [("SLUICE_LISTEN_ADDR", mllp.as_str()), ("SLUICE_FHIR_LISTEN_ADDR", fhir.as_str())];
    let plain_mllp = ("SLUICE_MLLP_TLS__PLAINTEXT", "true");
    let review_api = ("SLUICE_REVIEW_API__ADDR", review.as_str());
    let cases = [
        ("ingest", ingest.to_vec(), "mllp_tls.cert_file"),
        ("ingest", [&ingest[..], &[plain_mllp]].concat(), "fhir_tls.cert_file"),
        (
            "ingest",
            [&ingest[..], &[plain_mllp, ("SLUICE_FHIR_TLS__PLAINTEXT", "true")]].concat(),
            "auth.tokens",
        ),
        ("dead-letter", vec![], "api_tls.cert_file"),
        ("dead-letter", vec![("SLUICE_API_TLS__PLAINTEXT", "true")], "auth.tokens"),
        ("identifier-match", vec![review_api], "review_api.tls.cert_file"),
        (
            "identifier-match",
            vec![review_api, ("SLUICE_REVIEW_API__TLS__PLAINTEXT", "true")],
            "auth.tokens",
        ),
    ];
    for (service, env, field) in cases {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", service])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SLUICE_RUNTIME__HTTP_ADDR", format!("127.0.0.1:{}", common::free_port()))
            // nothing listens there: a service that got past its entrances would wait for it
            .env(
                "SLUICE_RUNTIME__KAFKA__BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", common::free_port()),
            )
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{service} {env:?} started without a way to secure its entrances");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{service} {env:?}");
        assert!(err.contains(field), "{service} {env:?} should name {field}: {err}");
    }
}

/// `sluice up` with no security options: every HTTP entrance over TLS (a development CA made at
/// start-up), MLLP over TLS, a token per role made at start-up and printed with how to use it,
/// and nothing served without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_up_serves_tls_and_wants_a_token_by_default() {
    use std::io::BufRead;
    let bport = common::free_port();
    let _broker = common::Proc {
        child: sluice::broker::command(bport).unwrap().spawn().unwrap(),
    };
    common::wait_port(bport, "broker");
    let tls_dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let [mllp, fhir, http, dl, review] = std::array::from_fn(|_| format!("127.0.0.1:{}", common::free_port()));
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    up.arg("up")
        .args(["--bootstrap-servers", &format!("127.0.0.1:{bport}")])
        .args(["--registry-addr", "127.0.0.1:0"])
        .args(["--mllp-addr", &mllp, "--fhir-addr", &fhir, "--http-addr", &http])
        .args(["--dead-letter-addr", &dl, "--review-addr", &review])
        .arg("--tls-dir")
        .arg(tls_dir.path());
    for role in ["SENDER", "VIEWER", "OPERATOR", "REVIEWER"] {
        up.env_remove(format!("SLUICE_{role}_TOKEN"));
    }
    let mut up = common::Proc {
        child: up
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    };

    // what it prints: the entrances, then a token per role, then examples
    let mut printed = Vec::new();
    let mut lines = std::io::BufReader::new(up.child.stdout.take().unwrap()).lines();
    while !printed.iter().any(|l: &String| l.contains("sluice send --addr")) {
        match lines.next() {
            Some(l) => printed.push(l.unwrap()),
            None => panic!("sluice up stopped: {printed:?}\n{}", std::fs::read_to_string(log.path()).unwrap()),
        }
    }
    let printed = printed.join("\n");
    assert!(printed.contains("entrances (tls)"), "{printed}");
    assert!(printed.contains(&format!("https://{dl}/api/dead-letters")), "{printed}");
    let token = |role: &str| -> String {
        let prefix = format!("export SLUICE_{role}_TOKEN=");
        let t = printed.lines().find_map(|l| l.trim().strip_prefix(&prefix)).unwrap().to_owned();
        assert_eq!(t.len(), 64, "32 random bytes, hex: {t}");
        t
    };
    let (sender, viewer, operator) = (token("SENDER"), token("VIEWER"), token("OPERATOR"));
    assert_ne!(viewer, operator);
    let ca = tls_dir.path().join("ca.pem");
    assert!(printed.contains(&format!("--cacert {}", ca.display())), "{printed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reqwest::get(format!("http://{http}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "sluice up not ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let trust = ClientTls {
        ca_file: ca,
        ..Default::default()
    };
    let https = |addr: &str, path: &str| format!("https://{}{path}", addr.replace("127.0.0.1", "localhost"));
    let as_ = |token: Option<&str>| http_client(Some(&trust), token).unwrap();
    let letters = https(&dl, "/api/dead-letters");
    assert_eq!(as_(None).get(&letters).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(as_(Some(&sender)).get(&letters).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(as_(Some(&viewer)).get(&letters).send().await.unwrap().status().as_u16(), 200);
    let payload = https(&dl, "/api/dead-letters/no-such-letter/payload?reason=looking+around");
    assert_eq!(as_(Some(&viewer)).get(&payload).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(as_(Some(&operator)).get(&payload).send().await.unwrap().status().as_u16(), 404);
    let items = https(&review, "/api/review/items");
    assert_eq!(as_(None).get(&items).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        as_(Some(&token("REVIEWER"))).get(&items).send().await.unwrap().status().as_u16(),
        200
    );
    let bundle = sluice::generate::fhir_bundles(1, 5).remove(0);
    let post = |token: Option<&str>| {
        as_(token)
            .post(https(&fhir, "/fhir"))
            .header("content-type", "application/fhir+json")
            .body(bundle.clone())
            .send()
    };
    assert_eq!(post(None).await.unwrap().status().as_u16(), 401);
    assert_eq!(post(Some(&viewer)).await.unwrap().status().as_u16(), 403);
    assert_eq!(post(Some(&sender)).await.unwrap().status().as_u16(), 202);
    assert!(
        reqwest::get(format!("http://{dl}/api/dead-letters")).await.is_err(),
        "the dead-letter api answered plaintext"
    );
    assert!(
        reqwest::get(format!("http://{fhir}/fhir/metadata")).await.is_err(),
        "the fhir endpoint answered plaintext"
    );
    // MLLP: TLS, no client certificate asked for by default; plaintext gets no ACK
    let mllp_port: u16 = mllp.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(mllp_once(mllp_port, Some(&trust), &adt("UP-TLS")).await, Ok("AA".into()));
    assert!(!String::from_utf8_lossy(&plaintext_mllp(mllp_port, &adt("UP-PLAIN")).await).contains("MSA"));

    up.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "sluice up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(log.path()).unwrap();
    for secret in [&sender, &viewer, &operator] {
        assert!(!log.contains(secret.as_str()), "a token in the log");
    }
}
