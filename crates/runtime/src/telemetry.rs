//! Logs, metrics and health.
//!
//! Every metric of the runtime is defined here, with help text; label values come only from
//! small fixed sets (service names, outcome kinds, bounded reason codes), never from message
//! content. Services add their own metrics to [`registry`].

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The registry behind `/metrics`.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let r = Registry::new();
        let build = IntGaugeVec::new(Opts::new("sluice_build_info", "build information, always 1"), &["version"]);
        if let Ok(b) = build {
            b.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
            let _ = r.register(Box::new(b));
        }
        r
    })
}

/// Registers a collector with the shared registry (duplicates, e.g. when several services share
/// one process, are fine: the first registration wins and is returned by the caller's static).
pub fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = registry().register(Box::new(c.clone()));
    c
}

pub fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    #[allow(clippy::unwrap_used)] // names and labels are literals: an error is a programming bug caught by tests
    register(IntCounterVec::new(Opts::new(name, help), labels).unwrap())
}

pub fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    #[allow(clippy::unwrap_used)]
    register(IntGaugeVec::new(Opts::new(name, help), labels).unwrap())
}

pub fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    #[allow(clippy::unwrap_used)]
    register(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).unwrap())
}

/// Metrics of the transactional runtime.
pub struct RuntimeMetrics {
    pub consumed: IntCounterVec,
    pub outcomes: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub produced: IntCounterVec,
    pub transactions: IntCounterVec,
    pub transaction_seconds: HistogramVec,
    pub process_seconds: HistogramVec,
    pub infrastructure_errors: IntCounterVec,
    pub ready: IntGaugeVec,
    pub assigned_partitions: IntGaugeVec,
    pub stage_restarts: IntCounterVec,
}

pub fn runtime_metrics() -> &'static RuntimeMetrics {
    static M: OnceLock<RuntimeMetrics> = OnceLock::new();
    M.get_or_init(|| RuntimeMetrics {
        consumed: counter(
            "sluice_runtime_records_consumed_total",
            "records consumed from input topics",
            &["service"],
        ),
        outcomes: counter(
            "sluice_runtime_outcomes_total",
            "processing outcomes by kind (emit, skip, reject, retry)",
            &["service", "outcome"],
        ),
        dead_letters: counter(
            "sluice_runtime_dead_letters_total",
            "records sent to a dead-letter topic, by bounded reason code",
            &["service", "reason"],
        ),
        produced: counter(
            "sluice_runtime_records_produced_total",
            "records produced inside committed transactions",
            &["service"],
        ),
        transactions: counter(
            "sluice_runtime_transactions_total",
            "transactions by result (committed, aborted)",
            &["service", "result"],
        ),
        transaction_seconds: histogram(
            "sluice_runtime_transaction_duration_seconds",
            "time from the first record of a batch to its commit",
            &["service"],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        ),
        process_seconds: histogram(
            "sluice_runtime_process_duration_seconds",
            "time the processor took for one record",
            &["service"],
            vec![0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05],
        ),
        infrastructure_errors: counter(
            "sluice_runtime_infrastructure_errors_total",
            "broker or registry failures that were retried, by bounded kind",
            &["service", "kind"],
        ),
        ready: gauge("sluice_runtime_ready", "1 when the service is ready", &["service"]),
        assigned_partitions: gauge(
            "sluice_runtime_assigned_partitions",
            "input partitions the consumer group gave this instance",
            &["service"],
        ),
        stage_restarts: counter(
            "sluice_runtime_stage_restarts_total",
            "stage runs ended by a fatal kafka error and started again with new clients, by operation",
            &["service", "op"],
        ),
    })
}

/// Readiness of the services in this process; `/readyz` is 200 only when all are ready.
#[derive(Clone, Default)]
pub struct Health {
    services: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// A readiness flag for one service, initially not ready.
    pub fn service(&self, name: &str) -> Readiness {
        let flag = Arc::new(AtomicBool::new(false));
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), flag.clone());
        Readiness {
            flag,
            service: name.to_owned(),
        }
    }

    pub fn is_ready(&self) -> bool {
        let s = self.services.lock().unwrap_or_else(|e| e.into_inner());
        !s.is_empty() && s.values().all(|f| f.load(Ordering::SeqCst))
    }

    pub fn report(&self) -> String {
        let s = self.services.lock().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .map(|(k, v)| format!("{k} {}\n", if v.load(Ordering::SeqCst) { "ready" } else { "not ready" }))
            .collect()
    }

    pub fn router(&self) -> Router {
        let h = self.clone();
        Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let h = h.clone();
                    async move {
                        let code = if h.is_ready() {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (code, h.report())
                    }
                }),
            )
    }
}

#[derive(Clone)]
pub struct Readiness {
    flag: Arc<AtomicBool>,
    service: String,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        if self.flag.swap(ready, Ordering::SeqCst) != ready {
            runtime_metrics()
                .ready
                .with_label_values(&[self.service.as_str()])
                .set(i64::from(ready));
            if ready {
                tracing::info!(service = %self.service, "ready");
            } else {
                tracing::warn!(service = %self.service, "not ready");
            }
        }
    }
}

async fn metrics_text() -> impl IntoResponse {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry().gather(), &mut buf);
    ([("content-type", "text/plain; version=0.0.4")], buf)
}

/// Serves `/metrics`, `/healthz`, `/readyz` (plus any extra routes) until shutdown.
pub async fn serve_http(addr: &str, router: Router, shutdown: crate::shutdown::Shutdown) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
    });
    Ok(local)
}

/// Logs to stderr as JSON or text. Filter with `RUST_LOG` (default info).
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
