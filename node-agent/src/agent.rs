//! Wiring: NVML inventory and health watcher, pod-resources watcher, metrics server and
//! publisher, driven by one event loop (collection ticks, health events, allocation changes).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::server::{self, AppState};
use crate::podresources::{self, PodResourcesState};
use crate::publish::sink::Sink;
use crate::publish::{Publisher, content};
use crate::view::NodeView;
use anyhow::Context as _;
use muster_gpu_inventory::{
    Discovery, HealthEvent, HealthWatcher, Inventory, InventoryError, WatchConfig,
};
use serde_json::json;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Runs the agent until `shutdown` resolves. Errors only for what makes the agent useless:
/// the metrics port cannot be bound, NVML answers garbage at open, no API access.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let debug = Arc::new(Mutex::new(json!({})));

    // NVML first: a broken library is a clean exit before anything is served or written.
    let mut gpus = Gpus::open(&config, &metrics)?;
    let mut view = gpus.initial_view(&config);

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", config.metrics_addr))?;
    let addr = listener
        .local_addr()
        .context("reading the metrics address")?;
    if config.debug_endpoints {
        tracing::info!(metrics_addr = %addr, "serving /metrics, /healthz and /debug/state");
    } else {
        tracing::info!(metrics_addr = %addr, "serving /metrics and /healthz");
    }
    let app = server::router(AppState {
        metrics: Arc::clone(&metrics),
        debug: config.debug_endpoints.then(|| Arc::clone(&debug)),
    });
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    let sink = if config.no_publish {
        tracing::info!("--no-publish: nothing is written to the API server");
        Sink::DryRun
    } else {
        Sink::Kube(kube_client(&config).await?)
    };
    let mut publisher = Publisher::new(sink, config.publish_interval);

    let (pods_tx, mut pods_rx) = watch::channel(PodResourcesState::default());
    let pods_task = tokio::spawn(podresources::watch::run(
        podresources::watch::WatchConfig::new(config.pod_resources_socket.clone(), config.interval),
        pods_tx,
    ));

    let mut health_rx = gpus.health_events();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Readings of the last successful sample: series re-labelled between ticks (a pod came or
    // went) get their values at once instead of vanishing until the next tick.
    let mut last_sample = None;
    let mut publish_failing = false;
    tokio::pin!(shutdown);
    tracing::info!(node = %config.node_name, gpus = view.gpu_count(), "node agent running");
    loop {
        // The heartbeat has its own timer: a long collection interval must not starve lastSeen.
        let heartbeat = publisher.next_heartbeat().map_or_else(
            || tokio::time::Instant::now() + config.publish_interval,
            tokio::time::Instant::from_std,
        );
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(heartbeat) => {}
            _ = ticker.tick() => {
                let started = Instant::now();
                // A failed sample keeps the previous readings (and counts the error).
                if let Some(s) = gpus.sample(&metrics) {
                    view.lost = s.gpus.iter().map(|g| g.lost).collect();
                    last_sample = Some(s);
                }
                view.health = gpus.health();
                metrics.update(&view, last_sample.as_ref(), &pods_rx.borrow());
                metrics.scrape_duration.set(started.elapsed().as_secs_f64());
                metrics.collections.inc();
            }
            Some(event) = health_rx.recv() => {
                tracing::info!(gpu = event.gpu_index, uuid = %event.gpu_uuid, xid = ?event.xid, healthy = event.healthy, cause = ?event.cause, "GPU health event");
                view.health = gpus.health();
                metrics.update(&view, last_sample.as_ref(), &pods_rx.borrow());
            }
            Ok(()) = pods_rx.changed() => {
                let pods = pods_rx.borrow_and_update().clone();
                metrics.pod_resources_up.set(i64::from(pods.up));
                metrics.update(&view, last_sample.as_ref(), &pods);
                continue;
            }
        }
        publisher.set_sample(last_sample.as_ref());
        sync(
            &mut publisher,
            &view,
            &metrics,
            &debug,
            &mut publish_failing,
        )
        .await;
    }
    tracing::info!("shutting down");
    pods_task.abort();
    server.abort();
    drop(gpus);
    Ok(())
}

/// Publishes what changed; failures are logged, counted and retried on the next tick.
async fn sync(
    publisher: &mut Publisher,
    view: &NodeView,
    metrics: &Metrics,
    debug: &Mutex<serde_json::Value>,
    failing: &mut bool,
) {
    match publisher.sync(view, Instant::now()).await {
        Ok(written) => {
            if std::mem::take(failing) {
                tracing::info!("publishing works again");
            }
            if written.gpu_node {
                metrics.publishes.with_label_values(&["gpunode"]).inc();
                tracing::info!(node = %view.node_name, healthy = view.gpu_count() - (0..view.gpu_count()).filter(|&i| !view.status(i).healthy).count(), "GpuNode published");
            }
            if written.labels {
                metrics.publishes.with_label_values(&["labels"]).inc();
                tracing::info!(node = %view.node_name, "node labels published");
            }
            if written.gpu_node || written.labels {
                let state = json!({
                    "gpuNode": content::gpu_node_spec(view, String::new()),
                    "labels": content::gfd_labels(view),
                    "writes": {
                        "gpuNode": metrics.publishes.with_label_values(&["gpunode"]).get(),
                        "labels": metrics.publishes.with_label_values(&["labels"]).get(),
                    },
                });
                *debug.lock().unwrap_or_else(|p| p.into_inner()) = state;
            }
        }
        Err(e) => {
            metrics.publish_errors.with_label_values(&["api"]).inc();
            // Warn once per outage; a down API server would otherwise log every tick.
            if *failing {
                tracing::debug!(error = format!("{e:#}"), "publishing still failing");
            } else {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "publishing failed; retrying on every tick"
                );
            }
            *failing = true;
        }
    }
}

async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no kubeconfig")?,
    };
    kube::Client::try_from(kube_config).context("building the Kubernetes client")
}

/// The node's GPUs: an open inventory with its health watcher, or nothing (no driver).
struct Gpus {
    inventory: Option<Inventory>,
    snapshot: Option<muster_gpu_inventory::NodeInventory>,
    watcher: Option<HealthWatcher>,
    events: Option<std::sync::mpsc::Receiver<HealthEvent>>,
}

impl Gpus {
    fn open(config: &Config, metrics: &Metrics) -> anyhow::Result<Gpus> {
        let inventory = match Inventory::open(config.nvml_lib.as_deref())
            .inspect_err(|e| count_error(metrics, e))
            .context("opening NVML")?
        {
            Discovery::Ready(inv) => inv,
            Discovery::NoDriver { reason } => {
                tracing::warn!(reason, "no NVIDIA driver: publishing a node without GPUs");
                return Ok(Gpus {
                    inventory: None,
                    snapshot: None,
                    watcher: None,
                    events: None,
                });
            }
        };
        let snapshot = inventory
            .snapshot()
            .inspect_err(|e| count_error(metrics, e))
            .context("reading the GPU inventory")?;
        // Without events the GPUs are still listed and sampled (lost GPUs still show up in
        // samples); only XIDs go unnoticed, which is logged loudly.
        let (watcher, events) = match inventory.watch_health(WatchConfig::default()) {
            Ok((w, rx)) => (Some(w), Some(rx)),
            Err(e) => {
                count_error(metrics, &e);
                tracing::error!(error = %e, "XID health watcher unavailable");
                (None, None)
            }
        };
        Ok(Gpus {
            inventory: Some(inventory),
            snapshot: Some(snapshot),
            watcher,
            events,
        })
    }

    fn initial_view(&self, config: &Config) -> NodeView {
        let compute_capability = self.inventory.as_ref().and_then(|inv| {
            let device = inv.nvml().device_by_index(0).ok()?;
            let cc = device.cuda_compute_capability().ok()?;
            Some((cc.major, cc.minor))
        });
        let machine = std::fs::read_to_string(&config.machine_type_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let count = self.snapshot.as_ref().map_or(0, |s| s.gpus.len());
        NodeView {
            node_name: config.node_name.clone(),
            inventory: self.snapshot.clone(),
            health: self.health(),
            lost: vec![false; count],
            compute_capability,
            machine,
            // NVML's fabric info (the clique) is not exposed by nvml-wrapper 0.13.
            clique: None,
            mig_strategy: config.mig_strategy.clone(),
        }
    }

    fn health(&self) -> Vec<muster_gpu_inventory::GpuHealthState> {
        self.watcher
            .as_ref()
            .map(|w| w.health())
            .unwrap_or_default()
    }

    fn sample(&self, metrics: &Metrics) -> Option<muster_gpu_inventory::MetricsSample> {
        let inventory = self.inventory.as_ref()?;
        match inventory.sample() {
            Ok(s) => Some(s),
            Err(e) => {
                count_error(metrics, &e);
                tracing::warn!(error = %e, "NVML sample failed");
                None
            }
        }
    }

    /// Health events bridged from the watcher's thread into the event loop. The bridge thread
    /// ends when the watcher (the sender) stops.
    fn health_events(&mut self) -> mpsc::Receiver<HealthEvent> {
        let (tx, rx) = mpsc::channel(64);
        if let Some(events) = self.events.take() {
            let spawned = std::thread::Builder::new()
                .name("health-bridge".into())
                .spawn(move || {
                    for event in events {
                        if tx.blocking_send(event).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the health event bridge");
            }
        }
        rx
    }
}

fn count_error(metrics: &Metrics, e: &InventoryError) {
    let call = match e {
        InventoryError::Nvml { call, .. } | InventoryError::Unexpected { call, .. } => *call,
        InventoryError::Thread(_) => "thread",
    };
    metrics.nvml_errors.with_label_values(&[call]).inc();
}
