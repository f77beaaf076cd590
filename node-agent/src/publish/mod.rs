//! Publishing the node to the API server: one `GpuNode` (server-side apply) and the GFD labels
//! of the Node (server-side apply of `metadata.labels` only), written when their content changes
//! or, for the `GpuNode`, when the heartbeat (`lastSeen`) is due; never on every tick.

pub mod content;
pub mod sink;

use crate::view::NodeView;
use muster_crds::GpuNodeSpec;
use muster_gpu_inventory::MetricsSample;
use sink::Sink;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "muster-node-agent";

/// What one [`Publisher::sync`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub gpu_node: bool,
    pub labels: bool,
}

/// Remembers what was last written, to write only changes and heartbeats.
pub struct Publisher {
    sink: Sink,
    heartbeat: Duration,
    /// Last written spec with `last_seen` blanked (the part whose change forces a write).
    written_spec: Option<GpuNodeSpec>,
    written_at: Option<Instant>,
    written_labels: Option<BTreeMap<String, String>>,
    /// Last NVML readings: written along with the `GpuNode`, never a reason to write it.
    sample: Option<MetricsSample>,
}

impl Publisher {
    pub fn new(sink: Sink, heartbeat: Duration) -> Publisher {
        Publisher {
            sink,
            heartbeat,
            written_spec: None,
            written_at: None,
            written_labels: None,
            sample: None,
        }
    }

    /// The readings the next `GpuNode` write carries (`usage` of each GPU).
    pub fn set_sample(&mut self, sample: Option<&MetricsSample>) {
        self.sample = sample.cloned();
    }

    /// Whether the `GpuNode` needs a write at `now`: its content changed, or the heartbeat is due.
    pub fn gpu_node_due(&self, spec: &GpuNodeSpec, now: Instant) -> bool {
        let changed = self.written_spec.as_ref() != Some(&blank_last_seen(spec));
        let heartbeat = self
            .written_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.heartbeat);
        changed || heartbeat
    }

    /// Writes what changed. A failed write is retried at the next sync (nothing is recorded).
    pub async fn sync(&mut self, view: &NodeView, now: Instant) -> anyhow::Result<Written> {
        let mut written = Written::default();
        let labels = content::gfd_labels(view);
        if self.written_labels.as_ref() != Some(&labels) {
            self.sink.apply_labels(&view.node_name, &labels).await?;
            self.written_labels = Some(labels);
            written.labels = true;
        }
        let spec = content::gpu_node_spec(view, String::new());
        if self.gpu_node_due(&spec, now) {
            let stamped = content::with_usage(
                GpuNodeSpec {
                    last_seen: now_rfc3339(),
                    ..spec.clone()
                },
                self.sample.as_ref(),
            );
            self.sink.apply_gpu_node(&view.node_name, stamped).await?;
            self.written_spec = Some(spec);
            self.written_at = Some(now);
            written.gpu_node = true;
        }
        Ok(written)
    }

    /// When the next heartbeat is due (for the agent's timer).
    pub fn next_heartbeat(&self) -> Option<Instant> {
        self.written_at.map(|at| at + self.heartbeat)
    }
}

fn blank_last_seen(spec: &GpuNodeSpec) -> GpuNodeSpec {
    GpuNodeSpec {
        last_seen: String::new(),
        ..spec.clone()
    }
}

/// Current time, RFC 3339 in UTC with second precision (what `metav1.Time` holds).
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::fixture_view as view;

    #[tokio::test]
    async fn writes_on_change_and_heartbeat_only() {
        let mut p = Publisher::new(Sink::DryRun, Duration::from_secs(30));
        let mut v = view("dgx-a100");
        let t0 = Instant::now();
        let first = p.sync(&v, t0).await.unwrap();
        assert_eq!(
            first,
            Written {
                gpu_node: true,
                labels: true
            }
        );
        // Same content, before the heartbeat: nothing.
        let again = p.sync(&v, t0 + Duration::from_secs(29)).await.unwrap();
        assert_eq!(again, Written::default());
        // An application XID changes counters, not the published content.
        v.health[1].xid_count = 1;
        v.health[1].last_xid = Some(13);
        let xid13 = p.sync(&v, t0 + Duration::from_secs(29)).await.unwrap();
        assert_eq!(xid13, Written::default());
        // XID 79: the GPU turns unhealthy, the GpuNode is rewritten, labels are not.
        v.health[2].healthy = false;
        v.health[2].reason = Some("XID 79".into());
        let xid79 = p.sync(&v, t0 + Duration::from_secs(29)).await.unwrap();
        assert_eq!(
            xid79,
            Written {
                gpu_node: true,
                labels: false
            }
        );
        // The heartbeat counts from the last write.
        let early = p.sync(&v, t0 + Duration::from_secs(58)).await.unwrap();
        assert_eq!(early, Written::default());
        let beat = p.sync(&v, t0 + Duration::from_secs(59)).await.unwrap();
        assert!(beat.gpu_node && !beat.labels);
    }

    #[test]
    fn usage_comes_from_the_sample_and_never_forces_a_write() {
        use muster_gpu_inventory::GpuMetrics;
        let v = view("dgx-a100");
        let spec = content::gpu_node_spec(&v, String::new());
        let uuid = spec.gpus[1].uuid.clone();
        let sample = MetricsSample {
            gpus: vec![GpuMetrics {
                index: 1,
                uuid,
                lost: false,
                sm_util_percent: Some(87),
                memory_util_percent: Some(40),
                memory_used_mib: Some(61_440),
                memory_free_mib: Some(20_480),
                temperature_c: Some(64),
                power_watts: Some(312.46),
                energy_mj: None,
                sm_clock_mhz: None,
                processes: Vec::new(),
            }],
        };
        let with = content::with_usage(spec.clone(), Some(&sample));
        let usage = with.gpus[1].usage.clone().unwrap();
        assert_eq!(usage.utilization_percent, Some(87));
        assert_eq!(usage.memory_used_mib, Some(61_440));
        assert_eq!(usage.temperature_c, Some(64));
        assert_eq!(usage.power_watts, Some(312.5));
        assert!(with.gpus[0].usage.is_none(), "GPU 0 was not sampled");
        // Change detection ignores readings: a written spec plus new readings is not due.
        let mut p = Publisher::new(Sink::DryRun, Duration::from_secs(30));
        let t0 = Instant::now();
        p.written_spec = Some(spec.clone());
        p.written_at = Some(t0);
        p.set_sample(Some(&sample));
        assert!(!p.gpu_node_due(&content::gpu_node_spec(&v, String::new()), t0));
    }

    #[test]
    fn gpu_node_content_of_a_clique_member() {
        let v = view("gb200-nvl72");
        let spec = content::gpu_node_spec(&v, "t".into());
        assert_eq!(spec.clique.as_deref(), Some("nvl72-a.1"));
        assert_eq!(spec.gpu_count, 4);
        let labels = content::gfd_labels(&v);
        assert_eq!(labels["nvidia.com/gpu.clique"], "nvl72-a.1");
        assert_eq!(labels["nvidia.com/gpu.family"], "blackwell");
        assert_eq!(labels["nvidia.com/gpu.product"], "NVIDIA-GB200");
    }
}
