//! TLS for every listener Sluice serves (MLLP, the FHIR endpoint, the dead-letter and review
//! APIs), with rustls.
//!
//! Guarantees:
//! - a listener serves plaintext only when its configuration says `plaintext: true`; otherwise
//!   it needs a certificate and key, and the service does not start without them;
//! - with `client_ca_file` (mutual TLS), a client without a certificate signed by one of those
//!   CAs is refused during the handshake, before it can send a byte of data; the refusal has a
//!   bounded reason code ([`Refusal`]) that the caller counts and logs;
//! - the files are read again when they change (looked at when a connection arrives, at most
//!   every `reload_check_ms`), so a rotated certificate is served to the next connection
//!   without a restart. A rotation that does not load (half-written files, a key that does not
//!   fit the certificate) keeps the previous certificate in service, logged and counted.
//!
//! Only the ring provider is used (the one reqwest's rustls already brings), chosen explicitly
//! so no process-wide default provider is needed.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

/// TLS settings of one listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerTls {
    /// PEM certificate chain the listener presents (leaf first).
    pub cert_file: String,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificate(s). Set: mutual TLS, every client must present a certificate signed
    /// by one of them. Empty: clients are not asked for a certificate.
    pub client_ca_file: String,
    /// Serve without TLS. Only ever when set explicitly: behind a proxy or mesh that terminates
    /// TLS, or on a development machine.
    pub plaintext: bool,
    /// How often, at most, the files are looked at for a rotation (on a new connection).
    pub reload_check_ms: u64,
    /// A client must finish the handshake within this long.
    pub handshake_timeout_ms: u64,
}

impl Default for ListenerTls {
    fn default() -> Self {
        ListenerTls {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            plaintext: false,
            reload_check_ms: 1_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configuration that does not fit together; `field` is the full setting name.
    #[error("configuration field {field} is invalid: {why}")]
    Invalid { field: String, why: &'static str },
    #[error("{field} {file}: {why}")]
    File { field: String, file: String, why: String },
    #[error("tls configuration of {prefix} rejected: {why}")]
    Rustls { prefix: String, why: String },
}

impl ListenerTls {
    /// The settings agree with each other; `prefix` is where they sit in the configuration
    /// (`mllp_tls`), so errors name the field. Files are not opened here (a configuration may be
    /// checked where they are not mounted): [`Acceptor::new`] names a missing or bad file.
    pub fn validate(&self, prefix: &str) -> Result<(), TlsError> {
        let invalid = |f: &str, why| {
            Err(TlsError::Invalid {
                field: format!("{prefix}.{f}"),
                why,
            })
        };
        let set = |s: &str| !s.trim().is_empty();
        if self.plaintext {
            if set(&self.cert_file) || set(&self.key_file) || set(&self.client_ca_file) {
                return invalid("plaintext", "must not be true when certificate files are given");
            }
            return Ok(());
        }
        if !set(&self.cert_file) {
            return invalid("cert_file", "is required (or set plaintext: true to serve without tls)");
        }
        if !set(&self.key_file) {
            return invalid("key_file", "is required with cert_file");
        }
        if self.handshake_timeout_ms == 0 {
            return invalid("handshake_timeout_ms", "must be at least 1");
        }
        Ok(())
    }

    pub fn mutual(&self) -> bool {
        !self.plaintext && !self.client_ca_file.trim().is_empty()
    }
}

/// Why a handshake was refused: a bounded code for metric labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Mutual TLS and the client presented no certificate.
    NoClientCertificate,
    /// The client's certificate is not signed by a configured CA (or is otherwise invalid).
    UntrustedClientCertificate,
    /// The client's certificate has expired or is not valid yet.
    ClientCertificateExpired,
    /// The bytes were not TLS (a plaintext client on a TLS port).
    NotTls,
    /// The client gave up: it did not trust our certificate, or had no protocol in common.
    ClientAborted,
    Timeout,
    Failed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoClientCertificate => "tls_no_client_certificate",
            Refusal::UntrustedClientCertificate => "tls_untrusted_client_certificate",
            Refusal::ClientCertificateExpired => "tls_client_certificate_expired",
            Refusal::NotTls => "tls_not_tls",
            Refusal::ClientAborted => "tls_client_aborted",
            Refusal::Timeout => "tls_handshake_timeout",
            Refusal::Failed => "tls_handshake_failed",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [Refusal; 7] = [
        Refusal::NoClientCertificate,
        Refusal::UntrustedClientCertificate,
        Refusal::ClientCertificateExpired,
        Refusal::NotTls,
        Refusal::ClientAborted,
        Refusal::Timeout,
        Refusal::Failed,
    ];

    /// Classifies the error of a failed handshake.
    pub fn of(e: &std::io::Error) -> Refusal {
        use rustls::{CertificateError, Error};
        match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(Error::NoCertificatesPresented) => Refusal::NoClientCertificate,
            Some(Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            )) => Refusal::ClientCertificateExpired,
            Some(Error::InvalidCertificate(_)) => Refusal::UntrustedClientCertificate,
            Some(Error::InvalidMessage(_)) => Refusal::NotTls,
            Some(Error::AlertReceived(_) | Error::PeerIncompatible(_)) => Refusal::ClientAborted,
            _ => Refusal::Failed,
        }
    }
}

/// Identity of the files last loaded: a changed one means a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

impl Stamp {
    pub(crate) fn of(files: &[&str]) -> Stamp {
        Stamp(
            files
                .iter()
                .map(|f| {
                    if f.is_empty() {
                        return None;
                    }
                    let m = std::fs::metadata(f).ok()?;
                    use std::os::unix::fs::MetadataExt;
                    Some((m.modified().ok()?, m.len(), m.ino()))
                })
                .collect(),
        )
    }
}

struct Current {
    acceptor: TlsAcceptor,
    /// The files' stamp of the configuration in use, or of the last rotation that failed
    /// (so a broken rotation is tried, and logged, once, not on every connection).
    stamp: Stamp,
    checked: Instant,
}

/// Counts certificate reloads by result (loaded, failed).
fn reloads() -> &'static prometheus::IntCounterVec {
    static M: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        crate::telemetry::counter(
            "sluice_tls_certificate_reloads_total",
            "listener certificates read again after their files changed, by listener and result (loaded, failed)",
            &["listener", "result"],
        )
    })
}

/// The certificate in service per listener: when it expires (unix seconds, from its notAfter),
/// and whether the last rotation of its files failed to load (1) or not (0). An alert on each
/// (`SluiceCertificateExpiring`, `SluiceCertificateReloadFailing`) warns before clients are
/// refused.
fn certificate_gauges() -> &'static (prometheus::IntGaugeVec, prometheus::IntGaugeVec) {
    static M: std::sync::OnceLock<(prometheus::IntGaugeVec, prometheus::IntGaugeVec)> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        (
            crate::telemetry::gauge(
                "sluice_tls_certificate_expiry_timestamp_seconds",
                "when the certificate a listener serves expires (its notAfter, unix seconds)",
                &["listener"],
            ),
            crate::telemetry::gauge(
                "sluice_tls_certificate_reload_failing",
                "1 while a listener's rotated certificate files could not be loaded (the previous certificate stays in service)",
                &["listener"],
            ),
        )
    })
}

fn in_service(listener: &str, not_after: Option<i64>) {
    let (expiry, failing) = certificate_gauges();
    if let Some(t) = not_after {
        expiry.with_label_values(&[listener]).set(t);
    }
    failing.with_label_values(&[listener]).set(0);
}

/// A TLS acceptor that picks up rotated files.
pub struct Acceptor {
    cfg: ListenerTls,
    listener: String,
    alpn: Vec<Vec<u8>>,
    current: Mutex<Current>,
}

impl Acceptor {
    /// Loads the files (failing with the field and file named) or `None` for an explicitly
    /// plaintext listener. `listener` names it in logs and metrics; `alpn` is e.g.
    /// `[b"http/1.1"]` for HTTP, empty for MLLP.
    pub fn new(cfg: &ListenerTls, prefix: &str, listener: &str, alpn: &[&[u8]]) -> Result<Option<Arc<Acceptor>>, TlsError> {
        cfg.validate(prefix)?;
        if cfg.plaintext {
            return Ok(None);
        }
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|a| a.to_vec()).collect();
        let stamp = Stamp::of(&[&cfg.cert_file, &cfg.key_file, &cfg.client_ca_file]);
        let (server, not_after) = load(cfg, prefix, &alpn)?;
        in_service(listener, not_after);
        Ok(Some(Arc::new(Acceptor {
            cfg: cfg.clone(),
            listener: listener.to_owned(),
            alpn,
            current: Mutex::new(Current {
                acceptor: TlsAcceptor::from(server),
                stamp,
                checked: Instant::now(),
            }),
        })))
    }

    /// The acceptor for a new connection: the files are looked at first (at most every
    /// `reload_check_ms`) and, when they changed, read again.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.checked.elapsed() >= Duration::from_millis(self.cfg.reload_check_ms) {
            cur.checked = Instant::now();
            let stamp = Stamp::of(&[&self.cfg.cert_file, &self.cfg.key_file, &self.cfg.client_ca_file]);
            if stamp != cur.stamp {
                cur.stamp = stamp;
                match load(&self.cfg, &self.listener, &self.alpn) {
                    Ok((server, not_after)) => {
                        cur.acceptor = TlsAcceptor::from(server);
                        in_service(&self.listener, not_after);
                        reloads().with_label_values(&[&self.listener, "loaded"]).inc();
                        tracing::info!(listener = %self.listener, "tls certificate reloaded");
                    }
                    Err(e) => {
                        reloads().with_label_values(&[&self.listener, "failed"]).inc();
                        certificate_gauges().1.with_label_values(&[&self.listener]).set(1);
                        tracing::error!(listener = %self.listener, error = %e, "rotated tls files could not be loaded; the previous certificate stays in service");
                    }
                }
            }
        }
        cur.acceptor.clone()
    }

    /// Runs the server side of a handshake within the handshake timeout.
    pub async fn handshake<S>(&self, stream: S) -> Result<tokio_rustls::server::TlsStream<S>, Refusal>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = self.acceptor();
        match tokio::time::timeout(Duration::from_millis(self.cfg.handshake_timeout_ms), acceptor.accept(stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Refusal::of(&e)),
            Err(_) => Err(Refusal::Timeout),
        }
    }

    pub fn mutual(&self) -> bool {
        self.cfg.mutual()
    }
}

/// The server configuration of these files, and when its certificate expires.
fn load(cfg: &ListenerTls, prefix: &str, alpn: &[Vec<u8>]) -> Result<(Arc<ServerConfig>, Option<i64>), TlsError> {
    let file_error = |field: &str, file: &str, why: String| TlsError::File {
        field: format!("{prefix}.{field}"),
        file: file.to_owned(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("cert_file", &cfg.cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("cert_file", &cfg.cert_file, "holds no certificate".into()));
    }
    let not_after = certs.first().and_then(|c| not_after(c.as_ref()));
    // the key's own error text could quote the file: name only the kind of failure
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| file_error("key_file", &cfg.key_file, key_error(&e).into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_error = |why: String| TlsError::Rustls {
        prefix: prefix.to_owned(),
        why,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| rustls_error(e.to_string()))?;
    let builder = if cfg.mutual() {
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&cfg.client_ca_file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| file_error("client_ca_file", &cfg.client_ca_file, e.to_string()))?;
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| file_error("client_ca_file", &cfg.client_ca_file, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(file_error("client_ca_file", &cfg.client_ca_file, "holds no certificate".into()));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| rustls_error(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| rustls_error(format!("certificate and key: {e}")))?;
    server.alpn_protocols = alpn.to_vec();
    Ok((Arc::new(server), not_after))
}

/// One DER element: its tag, its content and what follows it.
fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (usize::from(first), b)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x));
        (len, &b[n..])
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// A certificate's notAfter (unix seconds), read from its DER: Certificate { tbsCertificate {
/// [0] version?, serialNumber, signature, issuer, validity { notBefore, notAfter } ... } }.
fn not_after(der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = der_element(der)? else { return None };
    let (0x30, tbs, _) = der_element(cert)? else { return None };
    let (mut tag, _, mut rest) = der_element(tbs)?;
    if tag == 0xa0 {
        (tag, _, rest) = der_element(rest)?;
    }
    // serial number, then the signature algorithm and the issuer
    if tag != 0x02 {
        return None;
    }
    for _ in 0..2 {
        let (0x30, _, r) = der_element(rest)? else { return None };
        rest = r;
    }
    let (0x30, validity, _) = der_element(rest)? else { return None };
    let (_, _, after) = der_element(validity)?;
    let (tag, time, _) = der_element(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match (tag, digits.len()) {
        // UTCTime: YYMMDDHHMMSS, 50-99 meaning 19xx (RFC 5280)
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        // GeneralizedTime: YYYYMMDDHHMMSS
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn key_error(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "holds no private key",
        Error::Io(_) => "cannot be read",
        _ => "is not a valid PEM private key",
    }
}

/// Logs a refused handshake at WARN, at most once per listener and reason every ten seconds
/// (with how many were not logged in between), so a scan or a misconfigured sender cannot
/// flood the log. The peer address is logged: it is not patient data and an operator needs it
/// to find the sender.
pub fn log_refusal(listener: &str, refusal: Refusal, peer: &str) {
    use std::collections::HashMap;
    /// Per (listener, reason): when it was last logged, and how many since.
    type Last = HashMap<(String, &'static str), (Instant, u64)>;
    static LAST: std::sync::OnceLock<Mutex<Last>> = std::sync::OnceLock::new();
    let mut last = LAST.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let key = (listener.to_owned(), refusal.as_str());
    let entry = last.entry(key).or_insert((Instant::now() - Duration::from_secs(3600), 0));
    if entry.0.elapsed() >= Duration::from_secs(10) {
        tracing::warn!(
            listener,
            reason = refusal.as_str(),
            peer,
            not_logged_since_last = entry.1,
            "tls handshake refused"
        );
        *entry = (Instant::now(), 0);
    } else {
        entry.1 += 1;
        tracing::debug!(listener, reason = refusal.as_str(), peer, "tls handshake refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificates_expiry_is_read_from_its_der() {
        let key = rcgen::KeyPair::generate().expect("key");
        for ((y, m, d), want) in [
            // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280)
            ((2031, 5, 17), 1_936_742_400),
            ((2049, 12, 31), 2_524_521_600),
            ((2050, 1, 1), 2_524_608_000),
            ((1999, 3, 1), 920_246_400),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
            params.not_before = rcgen::date_time_ymd(1990, 1, 1);
            params.not_after = rcgen::date_time_ymd(y, m, d);
            let cert = params.self_signed(&key).expect("cert");
            assert_eq!(not_after(cert.der()), Some(want), "{y}-{m}-{d}");
        }
        // anything that is not a certificate: no answer, never a panic
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let der = params.self_signed(&key).expect("cert").der().to_vec();
        for cut in 0..der.len() {
            let _ = not_after(&der[..cut]);
        }
    }

    #[test]
    fn settings_are_checked_and_errors_name_the_field() {
        let e = ListenerTls::default().validate("mllp_tls").expect_err("no certificate");
        assert!(e.to_string().contains("mllp_tls.cert_file"), "{e}");
        let plain = ListenerTls {
            plaintext: true,
            ..Default::default()
        };
        plain.validate("mllp_tls").expect("explicit plaintext");
        let both = ListenerTls {
            cert_file: "/c.pem".into(),
            ..plain.clone()
        };
        assert!(both.validate("x").expect_err("both").to_string().contains("x.plaintext"));
        let no_key = ListenerTls {
            cert_file: "/c.pem".into(),
            ..Default::default()
        };
        assert!(no_key.validate("x").expect_err("key").to_string().contains("x.key_file"));
    }

    #[test]
    fn missing_files_are_named_and_a_bad_key_does_not_quote_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(&cert, ck.cert.pem()).expect("write");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let cfg = ListenerTls {
            cert_file: cert.display().to_string(),
            key_file: dir.path().join("missing.pem").display().to_string(),
            ..Default::default()
        };
        let e = Acceptor::new(&cfg, "fhir_tls", "fhir", &[]).err().expect("missing key");
        assert!(e.to_string().contains("fhir_tls.key_file"), "{e}");
        let cfg = ListenerTls {
            key_file: key.display().to_string(),
            ..cfg
        };
        let e = Acceptor::new(&cfg, "fhir_tls", "fhir", &[]).err().expect("bad key");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write");
        assert!(Acceptor::new(&cfg, "fhir_tls", "fhir", &[]).expect("loads").is_some());
    }

    #[test]
    fn every_refusal_code_is_distinct_and_prefixed() {
        let codes: std::collections::HashSet<&str> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Refusal::ALL.len());
        assert!(codes.iter().all(|c| c.starts_with("tls_")));
    }
}
