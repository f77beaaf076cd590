//! Prometheus metrics and the small HTTP server exposing `/metrics` and `/healthz`.

use crate::allocator::Source;
use crate::devices::DeviceList;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    allocations: IntCounter,
    allocation_errors: IntCounterVec,
    preferred: IntCounterVec,
    registered: IntGauge,
    registrations: IntCounter,
    devices: IntGaugeVec,
    allocate_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let allocations = IntCounter::new(
            "muster_device_plugin_allocations_total",
            "Containers given GPUs by Allocate.",
        )?;
        let allocation_errors = IntCounterVec::new(
            Opts::new(
                "muster_device_plugin_allocation_errors_total",
                "Refused GetPreferredAllocation/Allocate requests, by reason.",
            ),
            &["reason"],
        )?;
        let preferred = IntCounterVec::new(
            Opts::new(
                "muster_device_plugin_preferred_allocations_total",
                "Preferred allocations answered, by source (annotation or fallback).",
            ),
            &["source"],
        )?;
        let registered = IntGauge::new(
            "muster_device_plugin_registered",
            "1 while registered with the kubelet.",
        )?;
        let registrations = IntCounter::new(
            "muster_device_plugin_registrations_total",
            "Successful registrations with the kubelet (more than one means kubelet restarts).",
        )?;
        let devices = IntGaugeVec::new(
            Opts::new("muster_device_plugin_devices", "Advertised GPUs by health."),
            &["health"],
        )?;
        let allocate_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "muster_device_plugin_allocate_duration_seconds",
                "Time to answer Allocate.",
            )
            .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
        )?;
        registry.register(Box::new(allocations.clone()))?;
        registry.register(Box::new(allocation_errors.clone()))?;
        registry.register(Box::new(preferred.clone()))?;
        registry.register(Box::new(registered.clone()))?;
        registry.register(Box::new(registrations.clone()))?;
        registry.register(Box::new(devices.clone()))?;
        registry.register(Box::new(allocate_seconds.clone()))?;
        Ok(Metrics {
            inner: Arc::new(Inner {
                registry,
                allocations,
                allocation_errors,
                preferred,
                registered,
                registrations,
                devices,
                allocate_seconds,
            }),
        })
    }

    pub fn allocated(&self) {
        self.inner.allocations.inc();
    }

    pub fn allocation_error(&self, reason: &str) {
        self.inner
            .allocation_errors
            .with_label_values(&[reason])
            .inc();
    }

    pub fn preferred(&self, source: Source) {
        self.inner
            .preferred
            .with_label_values(&[source.label()])
            .inc();
    }

    pub fn set_registered(&self, registered: bool) {
        self.inner.registered.set(i64::from(registered));
        if registered {
            self.inner.registrations.inc();
        }
    }

    pub fn is_registered(&self) -> bool {
        self.inner.registered.get() == 1
    }

    pub fn registrations(&self) -> u64 {
        self.inner.registrations.get()
    }

    pub fn observe_allocate(&self, seconds: f64) {
        self.inner.allocate_seconds.observe(seconds);
    }

    pub fn set_devices(&self, list: &DeviceList) {
        let (healthy, unhealthy) = list.counts();
        let gauge = |label: &str, n: usize| {
            self.inner
                .devices
                .with_label_values(&[label])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        gauge("Healthy", healthy);
        gauge("Unhealthy", unhealthy);
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.inner.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves `/metrics` and `/healthz` (200 while registered with the kubelet, 503 otherwise, so a
/// liveness probe notices a plugin stuck unregistered) until the future is dropped.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let m = metrics.clone();
    let app = Router::new()
        .route("/metrics", get(move || async move { m.render() }))
        .route(
            "/healthz",
            get(move || async move {
                if metrics.is_registered() {
                    (StatusCode::OK, "ok\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not registered with the kubelet\n",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    axum::serve(listener, app).await
}
