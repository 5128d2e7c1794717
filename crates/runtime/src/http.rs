//! Serving an API router over TLS (or explicitly configured plaintext), for the dead-letter
//! and review APIs. Each connection's handshake runs in its own task (a slow client cannot hold
//! up the others), a refused handshake is counted in `sluice_auth_refusals_total{api,reason}`
//! and logged (rate-limited), and the client's address reaches handlers as
//! `ConnectInfo<SocketAddr>`. On shutdown idle connections close and requests in flight finish
//! within the drain grace.

use crate::shutdown::Shutdown;
use crate::tls::Acceptor;
use axum::Router;
use axum::extract::ConnectInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves `router` on `listener` until shutdown. `api` names it in metrics and logs.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<Acceptor>>,
    api: &'static str,
    shutdown: Shutdown,
    drain_grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    tracing::warn!(api, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let svc = tower::ServiceExt::map_request(router.clone(), move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let io: Box<dyn Io> = match &tls {
                None => Box::new(stream),
                Some(acceptor) => match acceptor.handshake(stream).await {
                    Ok(s) => Box::new(s),
                    Err(refusal) => {
                        crate::auth::refusals().with_label_values(&[api, refusal.as_str()]).inc();
                        crate::tls::log_refusal(api, refusal, &peer.ip().to_string());
                        return;
                    }
                },
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(io), hyper_util::service::TowerToHyperService::new(svc));
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(api, "drain grace over with api requests still open; closing them");
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The client's address, when the server knows it ([`serve`] puts it on every request).
#[derive(Debug, Clone, Default)]
pub struct Peer(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string())))
    }
}
