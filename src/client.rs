//! The client side of Sluice's entrances, for `sluice send`, `sluice up`'s demo and the tests:
//! MLLP over TLS (rustls, optionally with a client certificate) and an HTTP client that trusts
//! a given CA and sends a bearer token.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to reach a TLS listener.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA(s) the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// A client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A connected MLLP stream, TLS or plain.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

fn certs(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: holds no certificate", file.display());
    Ok(certs)
}

/// A rustls client configuration trusting `tls.ca_file` (and presenting the client
/// certificate, when given).
pub fn rustls_config(tls: &ClientTls) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&tls.ca_file)? {
        roots.add(c)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => {
            let key = PrivateKeyDer::from_pem_file(k).map_err(|_| anyhow::anyhow!("{}: not a pem private key", k.display()))?;
            builder.with_client_auth_cert(certs(c)?, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("a client certificate needs both its certificate and its key"),
    };
    Ok(Arc::new(config))
}

/// Connects to an MLLP listener at `addr` (`host:port`), over TLS when `tls` is given (the
/// server's certificate must name `host`).
pub async fn mllp_connect(addr: &str, tls: Option<&ClientTls>) -> anyhow::Result<Box<dyn Stream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())?;
    let connector = tokio_rustls::TlsConnector::from(rustls_config(tls)?);
    let stream = tokio::time::timeout(Duration::from_secs(30), connector.connect(name, tcp))
        .await
        .map_err(|_| anyhow::anyhow!("tls handshake with {addr} timed out"))??;
    Ok(Box::new(stream))
}

/// An HTTP client for Sluice's APIs: trusting `tls.ca_file` (and with the client certificate,
/// when given) and sending `token` as the bearer token on every request.
pub fn http_client(tls: Option<&ClientTls>, token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(tls) = tls {
        for c in reqwest::Certificate::from_pem_bundle(&std::fs::read(&tls.ca_file)?)? {
            b = b.add_root_certificate(c);
        }
        if let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = std::fs::read(c)?;
            pem.extend(std::fs::read(k)?);
            b = b.identity(reqwest::Identity::from_pem(&pem)?);
        }
    }
    if let Some(t) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
        b = b.default_headers(headers);
    }
    Ok(b.build()?)
}
