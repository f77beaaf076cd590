//! Prometheus metrics: DCGM exporter names and labels for GPU readings (so dashboards built for
//! dcgm-exporter, e.g. Grafana 12239, work unchanged) plus Muster's health, allocation and agent
//! self-metrics.
//!
//! Every per-GPU series carries `gpu, UUID, device, modelName, Hostname, container, namespace,
//! pod`; the last three are empty when no pod holds the GPU. When a GPU changes hands its old
//! series are removed, so a finished pod does not linger in queries.

pub mod server;

use crate::podresources::{Allocation, PodResourcesState};
use crate::view::NodeView;
use muster_gpu_inventory::{GpuMetrics, MetricsSample};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::Mutex;

/// DCGM exporter's per-GPU label names, in its order.
pub const GPU_LABELS: [&str; 8] = [
    "gpu",
    "UUID",
    "device",
    "modelName",
    "Hostname",
    "container",
    "namespace",
    "pod",
];

/// One DCGM field: name, help, and how to read it from a sample.
struct Field {
    name: &'static str,
    help: &'static str,
    read: fn(&GpuMetrics) -> Option<f64>,
}

const FIELDS: [Field; 8] = [
    Field {
        name: "DCGM_FI_DEV_GPU_UTIL",
        help: "GPU utilization (in %).",
        read: |m| m.sm_util_percent.map(f64::from),
    },
    Field {
        name: "DCGM_FI_DEV_MEM_COPY_UTIL",
        help: "Memory utilization (in %).",
        read: |m| m.memory_util_percent.map(f64::from),
    },
    Field {
        name: "DCGM_FI_DEV_FB_USED",
        help: "Framebuffer memory used (in MiB).",
        read: |m| m.memory_used_mib.map(|v| v as f64),
    },
    Field {
        name: "DCGM_FI_DEV_FB_FREE",
        help: "Framebuffer memory free (in MiB).",
        read: |m| m.memory_free_mib.map(|v| v as f64),
    },
    Field {
        name: "DCGM_FI_DEV_GPU_TEMP",
        help: "GPU temperature (in C).",
        read: |m| m.temperature_c.map(f64::from),
    },
    Field {
        name: "DCGM_FI_DEV_POWER_USAGE",
        help: "Power draw (in W).",
        read: |m| m.power_watts,
    },
    Field {
        name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        help: "Total energy consumption since boot (in mJ).",
        read: |m| m.energy_mj.map(|v| v as f64),
    },
    Field {
        name: "DCGM_FI_DEV_SM_CLOCK",
        help: "SM clock frequency (in MHz).",
        read: |m| m.sm_clock_mhz.map(f64::from),
    },
];

type Labels = [String; 8];

pub struct Metrics {
    registry: Registry,
    fields: Vec<GaugeVec>,
    xid: GaugeVec,
    healthy: GaugeVec,
    allocated: GaugeVec,
    gpus_total: IntGauge,
    gpus_allocated: IntGauge,
    pub scrape_duration: Gauge,
    pub nvml_errors: IntCounterVec,
    pub pod_resources_up: IntGauge,
    pub publishes: IntCounterVec,
    pub publish_errors: IntCounterVec,
    pub collections: IntCounter,
    /// Label values of each GPU's current series, by GPU index.
    series: Mutex<HashMap<usize, Labels>>,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let gpu_vec = |name: &str, help: &str| -> Result<GaugeVec, prometheus::Error> {
            let v = GaugeVec::new(Opts::new(name, help), &GPU_LABELS)?;
            registry.register(Box::new(v.clone()))?;
            Ok(v)
        };
        let fields = FIELDS
            .iter()
            .map(|f| gpu_vec(f.name, f.help))
            .collect::<Result<Vec<_>, _>>()?;
        let xid = gpu_vec(
            "DCGM_FI_DEV_XID_ERRORS",
            "Value of the last XID error encountered.",
        )?;
        let healthy = gpu_vec(
            "muster_gpu_healthy",
            "1 if the GPU is healthy (no critical XID, not lost), else 0.",
        )?;
        let allocated = gpu_vec(
            "muster_gpu_allocated",
            "1 if the kubelet allocated the GPU to a container, else 0.",
        )?;
        macro_rules! register {
            ($metric:expr) => {{
                let m = $metric;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        Ok(Metrics {
            fields,
            xid,
            healthy,
            allocated,
            gpus_total: register!(IntGauge::new(
                "muster_node_gpus_total",
                "GPUs on this node."
            )?),
            gpus_allocated: register!(IntGauge::new(
                "muster_node_gpus_allocated",
                "GPUs of this node allocated to containers."
            )?),
            scrape_duration: register!(Gauge::new(
                "muster_agent_scrape_duration_seconds",
                "Time the last NVML collection took."
            )?),
            nvml_errors: register!(IntCounterVec::new(
                Opts::new(
                    "muster_agent_nvml_errors_total",
                    "NVML calls that failed, by call."
                ),
                &["call"]
            )?),
            pod_resources_up: register!(IntGauge::new(
                "muster_agent_pod_resources_up",
                "1 if the last kubelet pod-resources List succeeded."
            )?),
            publishes: register!(IntCounterVec::new(
                Opts::new(
                    "muster_agent_publishes_total",
                    "Writes to the API server (or, with --no-publish, writes skipped), by object."
                ),
                &["object"]
            )?),
            publish_errors: register!(IntCounterVec::new(
                Opts::new(
                    "muster_agent_publish_errors_total",
                    "Failed writes to the API server, by object."
                ),
                &["object"]
            )?),
            collections: register!(IntCounter::new(
                "muster_agent_collections_total",
                "NVML collection ticks run."
            )?),
            registry,
            series: Mutex::new(HashMap::new()),
        })
    }

    /// Refreshes every per-GPU series from the view, the last NVML sample (`None` before the
    /// first one succeeded) and the kubelet's allocations.
    pub fn update(
        &self,
        view: &NodeView,
        sample: Option<&MetricsSample>,
        pods: &PodResourcesState,
    ) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let Some(inv) = &view.inventory else {
            for (_, old) in series.drain() {
                self.remove(&old);
            }
            self.gpus_total.set(0);
            self.gpus_allocated.set(0);
            return;
        };
        let mut allocated_count = 0;
        for (pos, gpu) in inv.gpus.iter().enumerate() {
            // A MIG instance held by a pod attributes its parent GPU to that pod.
            let holder: Option<&Allocation> = pods.allocations.get(&gpu.uuid).or_else(|| {
                gpu.mig
                    .instances
                    .iter()
                    .find_map(|m| pods.allocations.get(&m.uuid))
            });
            let empty = Allocation::default();
            let a = holder.unwrap_or(&empty);
            let labels: Labels = [
                gpu.index.to_string(),
                gpu.uuid.clone(),
                format!("nvidia{}", gpu.index),
                gpu.model.clone(),
                view.node_name.clone(),
                a.container.clone(),
                a.namespace.clone(),
                a.pod.clone(),
            ];
            if let Some(old) = series.get(&pos)
                && *old != labels
            {
                self.remove(old);
            }
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            let status = view.status(pos);
            self.healthy
                .with_label_values(&values)
                .set(if status.healthy { 1.0 } else { 0.0 });
            self.allocated
                .with_label_values(&values)
                .set(if holder.is_some() { 1.0 } else { 0.0 });
            allocated_count += i64::from(holder.is_some());
            self.xid
                .with_label_values(&values)
                .set(view.last_xid(pos) as f64);
            if let Some(m) = sample.and_then(|s| s.gpus.get(pos)) {
                for (field, vec) in FIELDS.iter().zip(&self.fields) {
                    match (field.read)(m).filter(|_| !m.lost) {
                        Some(v) => vec.with_label_values(&values).set(v),
                        // Unsupported or lost: no series, as DCGM does for blank fields.
                        None => {
                            let _ = vec.remove_label_values(&values);
                        }
                    }
                }
            }
            series.insert(pos, labels);
        }
        self.gpus_total.set(inv.gpus.len() as i64);
        self.gpus_allocated.set(allocated_count);
    }

    fn remove(&self, labels: &Labels) {
        let values: Vec<&str> = labels.iter().map(String::as_str).collect();
        for vec in self
            .fields
            .iter()
            .chain([&self.xid, &self.healthy, &self.allocated])
        {
            let _ = vec.remove_label_values(&values);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        // Under the lock `update` holds: a scrape shows one collection whole, never old per-GPU
        // series beside a new node count (gather reads the families one after another).
        let _series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixture_view;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn node_allocated(text: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix("muster_node_gpus_allocated "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// A scrape during a collection must show either the collection before it or the one after,
    /// never old per-GPU series beside a new node count (the e2e "stale series" flake).
    #[test]
    fn a_scrape_shows_one_update_whole() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let view = fixture_view("dgx-a100");
        let inv = view.inventory.clone().unwrap();
        let held = PodResourcesState {
            up: true,
            allocations: inv.gpus[..4]
                .iter()
                .map(|g| {
                    let holder = Allocation {
                        namespace: "ml".into(),
                        pod: "train-0".into(),
                        container: "main".into(),
                    };
                    (g.uuid.clone(), holder)
                })
                .collect(),
        };
        let freed = PodResourcesState {
            up: true,
            allocations: Default::default(),
        };
        metrics.update(&view, None, &held);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (metrics, view, stop) = (metrics.clone(), view.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut turn = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let pods = if turn.is_multiple_of(2) {
                        &freed
                    } else {
                        &held
                    };
                    metrics.update(&view, None, pods);
                    turn += 1;
                }
            })
        };
        let mut torn = None;
        for _ in 0..20_000 {
            let text = metrics.render().unwrap();
            let pod_series = text
                .lines()
                .filter(|l| l.starts_with("muster_gpu_allocated{") && l.contains("train-0"))
                .count();
            let expected = match node_allocated(&text) {
                Some(4.0) => 4,
                _ => 0,
            };
            if pod_series != expected {
                torn = Some(text);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            torn.is_none(),
            "a torn scrape:\n{}",
            torn.unwrap_or_default()
        );
    }
}
