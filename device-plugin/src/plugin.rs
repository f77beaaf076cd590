//! Wiring: devices + health + pods + allocator + server + registration, started on the current
//! tokio runtime and stopped through a [`PluginHandle`].

use crate::allocator::{Allocator, AllocatorConfig};
use crate::config::PluginConfig;
use crate::devices::{DeviceList, Devices};
use crate::metrics::Metrics;
use crate::pods::PodStore;
use crate::pods::kube::{AllocatedPod, record_allocations, watch_node_pods};
use crate::registration;
use crate::server::Service;
use muster_gpu_inventory::HealthEvent;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A plugin ready to start.
pub struct Plugin {
    config: PluginConfig,
    devices: Devices,
    health: Option<Receiver<HealthEvent>>,
    pods: PodStore,
    kube: Option<kube::Client>,
    recorder: Option<mpsc::UnboundedSender<AllocatedPod>>,
    metrics: Metrics,
}

impl Plugin {
    pub fn new(config: PluginConfig, list: DeviceList) -> anyhow::Result<Plugin> {
        let metrics = Metrics::new()?;
        metrics.set_devices(&list);
        Ok(Plugin {
            config,
            devices: Devices::new(list),
            health: None,
            pods: PodStore::new(),
            kube: None,
            recorder: None,
            metrics,
        })
    }

    /// Health events from the inventory's XID watcher (keep the watcher alive meanwhile).
    pub fn with_health(mut self, events: Receiver<HealthEvent>) -> Plugin {
        self.health = Some(events);
        self
    }

    /// Uses `store` as the pod view (tests write it; [`Plugin::with_kube`] feeds its own).
    pub fn with_pods(mut self, store: PodStore) -> Plugin {
        self.pods = store;
        self
    }

    /// Where allocations of annotated pods are reported (tests observe them here).
    pub fn with_recorder(mut self, tx: mpsc::UnboundedSender<AllocatedPod>) -> Plugin {
        self.recorder = Some(tx);
        self
    }

    /// Watches this node's pods and patches allocated pods through `client`.
    pub fn with_kube(mut self, client: kube::Client) -> Plugin {
        self.kube = Some(client);
        self
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Starts everything on the current runtime. Serving and registration happen in the
    /// background: watch [`PluginHandle::metrics`] (`is_registered`) or the kubelet side.
    pub fn start(self) -> anyhow::Result<PluginHandle> {
        let Plugin {
            config,
            devices,
            health,
            pods,
            kube,
            mut recorder,
            metrics,
        } = self;
        let mut tasks = Vec::new();
        if let Some(client) = kube {
            tasks.push(tokio::spawn(watch_node_pods(
                client.clone(),
                config.node_name.clone(),
                pods.clone(),
            )));
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(record_allocations(client, rx)));
            recorder = Some(tx);
        }
        let health_thread = match health {
            Some(events) => Some(crate::health::bridge(
                events,
                devices.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        let allocator = Arc::new(Allocator::new(
            AllocatorConfig {
                node_name: config.node_name.clone(),
                driver_root: config.driver_root.clone(),
                cdi: config.cdi,
                annotation_wait: config.annotation_wait,
            },
            devices.clone(),
            pods.clone(),
            recorder,
            metrics.clone(),
        ));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let lifecycle = {
            let (devices, metrics) = (devices.clone(), metrics.clone());
            tokio::spawn(async move {
                let make =
                    |stop| Service::new(devices.clone(), allocator.clone(), metrics.clone(), stop);
                registration::run(&config, make, &metrics, shutdown_rx).await
            })
        };
        Ok(PluginHandle {
            shutdown: shutdown_tx,
            lifecycle,
            tasks,
            _health_thread: health_thread,
            metrics,
            devices,
            pods,
        })
    }
}

/// A running plugin.
pub struct PluginHandle {
    shutdown: watch::Sender<bool>,
    lifecycle: JoinHandle<anyhow::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    // Ends by itself when the health watcher (owned by the caller) stops.
    _health_thread: Option<std::thread::JoinHandle<()>>,
    pub metrics: Metrics,
    pub devices: Devices,
    pub pods: PodStore,
}

impl PluginHandle {
    /// Stops serving, removes the socket and ends the background tasks.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let result = match self.lifecycle.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("plugin lifecycle task failed: {e}")),
        };
        for task in self.tasks {
            task.abort();
        }
        result
    }

    /// Waits until the plugin stops by itself (a fatal error such as a refused registration).
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        match (&mut self.lifecycle).await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("plugin lifecycle task failed: {e}")),
        }
    }
}
