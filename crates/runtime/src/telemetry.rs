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
use std::time::{Duration, Instant};

use crate::config::TracingConfig;

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
    pub replayed: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
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
        replayed: counter(
            "sluice_runtime_replayed_records_total",
            "replayed records (re-produced by the dead-letter service) consumed, by outcome (emit, skip, reject, retry)",
            &["service", "outcome"],
        ),
        consumer_lag: gauge(
            "sluice_runtime_consumer_lag_records",
            "records on an assigned input partition not yet committed by this stage (last stable offset minus committed offset), from the consumer's statistics",
            &["service", "topic", "partition"],
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

/// Logs to stderr as JSON or text. Filter with `RUST_LOG` (default info). No trace export (see
/// [`init`]).
pub fn init_logging(format: &str) {
    let _ = init(format, &TracingConfig::default(), "sluice");
}

/// Keeps trace export running; dropping it flushes the spans not yet exported (bounded by
/// `runtime.tracing.export_timeout_ms`).
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not flush at shutdown");
        }
    }
}

/// Logs to stderr (JSON or text, filtered by `RUST_LOG`, default info) and, when
/// `tracing.otlp_endpoint` is set, exports Sluice's spans (target [`crate::trace::SPAN_TARGET`])
/// over OTLP as `service` (the resource's `service.name`).
///
/// Export is beside the pipeline: spans are batched on their own thread and dropped (never
/// waited for) when the collector is slow or away. Only spans of Sluice's target, plus WARN and
/// ERROR events inside them, reach the exporter; the log output never shows the spans.
pub fn init(format: &str, tracing: &TracingConfig, service: &str) -> anyhow::Result<TelemetryGuard> {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, Registry};

    tracing.validate()?;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    if let Ok(d) = format!("{}=off", crate::trace::SPAN_TARGET).parse() {
        filter = filter.add_directive(d);
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if format == "json" {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![logs];
    let provider = if tracing.enabled() {
        let provider = tracer_provider(tracing, service)?;
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "sluice");
        let spans = Targets::new()
            .with_target(crate::trace::SPAN_TARGET, LevelFilter::TRACE)
            .with_default(LevelFilter::WARN);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_filter(spans)
            .boxed();
        layers.push(layer);
        Some(provider)
    } else {
        None
    };
    // a second call (tests, `sluice up` after a command) keeps the first subscriber
    if tracing_subscriber::registry().with(layers).try_init().is_ok() && provider.is_some() {
        tracing::info!(endpoint = %tracing.traces_url(), sample_ratio = tracing.sample_ratio, "exporting traces over otlp");
    }
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(cfg: &TracingConfig, service: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    let timeout = Duration::from_millis(cfg.export_timeout_ms);
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let builder = SdkTracerProvider::builder()
        // a message's trace is sampled at ingest; every later stage follows its traceparent
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio))))
        .with_resource(resource);
    let builder = if cfg.otlp_protocol == crate::config::OTLP_GRPC {
        // tonic needs a tokio reactor, and the batch exporter's thread has none: the channel is
        // made, and every export runs, on a one-thread runtime of the exporter's own
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-otlp-grpc")
            .enable_all()
            .build()?;
        let mut grpc = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.traces_url())
            .with_timeout(timeout);
        if cfg.otlp_endpoint.trim().starts_with("https://") {
            grpc = grpc.with_tls_config(opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_webpki_roots());
        }
        let inner = {
            let _in_rt = rt.enter();
            grpc.build()?
        };
        builder.with_batch_exporter(OnOwnRuntime { inner, rt: Some(rt) })
    } else {
        let http = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.traces_url())
            .with_timeout(timeout)
            .build()?;
        builder.with_batch_exporter(http)
    };
    Ok(builder.build())
}

/// A span exporter that needs tokio (OTLP over gRPC), driven on a runtime of its own: the SDK's
/// batch processor calls `export` from a plain thread and polls the future without a reactor.
#[derive(Debug)]
struct OnOwnRuntime<E> {
    inner: E,
    rt: Option<tokio::runtime::Runtime>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for OnOwnRuntime<E> {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let done = match &self.rt {
            Some(rt) => rt.block_on(self.inner.export(batch)),
            None => Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown),
        };
        std::future::ready(done)
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        let done = match &self.rt {
            Some(rt) => {
                let _in_rt = rt.enter();
                self.inner.shutdown_with_timeout(timeout)
            }
            None => Ok(()),
        };
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        done
    }

    fn force_flush(&mut self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E> Drop for OnOwnRuntime<E> {
    fn drop(&mut self) {
        // dropping a runtime blocks, which panics inside another runtime's task: let it go
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Bounds a log line that could repeat once per message (a broker outage fails every write):
/// the first occurrence is logged, the rest of the window only counted, and the next line after
/// the window says how many were left out (`n more like this in the last 10 s`).
pub struct Throttle {
    window: Duration,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(window: Duration) -> Throttle {
        Throttle {
            window,
            state: Mutex::new(ThrottleState { last: None, suppressed: 0 }),
        }
    }

    /// `Some(left_out)` when this occurrence should be logged, with how many were left out since
    /// the last logged one; `None` when it is only counted.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    pub fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(t) if now.saturating_duration_since(t) < self.window => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }

    /// The text appended to a logged line: empty, or `; n more like this in the last 10 s`.
    pub fn more(&self, left_out: u64) -> String {
        if left_out == 0 {
            String::new()
        } else {
            format!("; {left_out} more like this in the last {} s", self.window.as_secs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gRPC exporter brings its own runtime: spans are exported from the SDK's plain
    /// thread, and the provider can be shut down (or dropped) from a plain thread or from
    /// inside another runtime's task, with the collector away, without a panic. (The
    /// tracing suite sends real spans over gRPC to a real collector.)
    #[test]
    fn the_grpc_exporter_runs_on_its_own_runtime_and_ends_anywhere() {
        use opentelemetry::trace::{Tracer, TracerProvider};
        let cfg = TracingConfig {
            // nothing listens on the discard port
            otlp_endpoint: "http://127.0.0.1:9".into(),
            otlp_protocol: crate::config::OTLP_GRPC.into(),
            export_timeout_ms: 200,
            ..Default::default()
        };
        let provider = tracer_provider(&cfg, "sluice-test").expect("built outside a runtime");
        provider.tracer("t").in_span("s", |_| {});
        assert!(provider.force_flush().is_err(), "the collector is away");
        provider.shutdown().expect("shuts down");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let provider = tracer_provider(&cfg, "sluice-test").expect("built inside a runtime");
            provider.tracer("t").in_span("s", |_| {});
            drop(provider);
        });
    }

    #[test]
    fn a_repeated_line_is_logged_once_per_window_with_the_count_left_out() {
        let t = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.check_at(start), Some(0), "the first is logged");
        for i in 1..=99 {
            assert_eq!(
                t.check_at(start + Duration::from_millis(i * 50)),
                None,
                "the rest of the window is counted"
            );
        }
        let next = t.check_at(start + Duration::from_secs(11));
        assert_eq!(next, Some(99));
        assert_eq!(t.more(99), "; 99 more like this in the last 10 s");
        assert_eq!(t.more(0), "");
        assert_eq!(t.check_at(start + Duration::from_secs(12)), None);
        assert_eq!(t.check_at(start + Duration::from_secs(30)), Some(1));
    }
}
