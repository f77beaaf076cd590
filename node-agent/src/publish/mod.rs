//! Publishing the node to the API server: one `GpuNode` (server-side apply) and the GFD labels
//! of the Node (server-side apply of `metadata.labels` only), written when their content changes
//! or, for the `GpuNode`, when the heartbeat (`lastSeen`) is due; never on every tick.

pub mod content;
pub mod sink;

use crate::view::NodeView;
use muster_crds::GpuNodeSpec;
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
}

impl Publisher {
    pub fn new(sink: Sink, heartbeat: Duration) -> Publisher {
        Publisher {
            sink,
            heartbeat,
            written_spec: None,
            written_at: None,
            written_labels: None,
        }
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
            let stamped = GpuNodeSpec {
                last_seen: now_rfc3339(),
                ..spec.clone()
            };
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
