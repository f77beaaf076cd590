//! What the agent currently knows about its node: the one input of publishing and metrics.

use muster_gpu_inventory::{GpuHealthState, NodeInventory};

/// The node as last observed. Built once at start (inventory) and updated by health events and
/// collection ticks (health, lost GPUs).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub node_name: String,
    /// `None`: no NVIDIA driver on this node.
    pub inventory: Option<NodeInventory>,
    /// Health watcher state by GPU index (empty without a driver).
    pub health: Vec<GpuHealthState>,
    /// GPUs whose last sample answered `GPU_IS_LOST`, by index.
    pub lost: Vec<bool>,
    /// CUDA compute capability `(major, minor)` of GPU 0, when NVML tells.
    pub compute_capability: Option<(i32, i32)>,
    /// Machine type (DMI product name), when known.
    pub machine: Option<String>,
    /// Rack-scale NVLink clique, when known.
    pub clique: Option<String>,
    pub mig_strategy: String,
}

/// Health of one GPU as published: the watcher's verdict, or lost in the last sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuStatus {
    pub healthy: bool,
    pub reason: Option<String>,
}

impl NodeView {
    pub fn gpu_count(&self) -> usize {
        self.inventory.as_ref().map_or(0, |i| i.gpus.len())
    }

    /// Published health of GPU `index`. Unhealthy wins: the inventory's own verdict (lost at
    /// open), the watcher's (XID, lost, failed waits), or a lost answer in the last sample.
    pub fn status(&self, index: usize) -> GpuStatus {
        if let Some(gpu) = self.inventory.as_ref().and_then(|i| i.gpus.get(index))
            && let muster_gpu_inventory::GpuHealth::Unhealthy { reason } = &gpu.health
        {
            return GpuStatus {
                healthy: false,
                reason: Some(reason.clone()),
            };
        }
        if let Some(h) = self.health.get(index)
            && !h.healthy
        {
            return GpuStatus {
                healthy: false,
                reason: h.reason.clone(),
            };
        }
        if self.lost.get(index).copied().unwrap_or(false) {
            return GpuStatus {
                healthy: false,
                reason: Some("GPU is lost".to_string()),
            };
        }
        GpuStatus {
            healthy: true,
            reason: None,
        }
    }

    /// Last XID value of GPU `index` (0 when none), as DCGM reports it.
    pub fn last_xid(&self, index: usize) -> u64 {
        self.health.get(index).and_then(|h| h.last_xid).unwrap_or(0)
    }
}

/// A view of a fixture machine as the inventory would report it (for tests).
#[cfg(test)]
pub(crate) fn fixture_view(fixture: &str) -> NodeView {
    use muster_api::machines::builtin;
    use muster_gpu_inventory::{
        GpuHealth, GpuHealthState, GpuInfo, MigInfo, MigMode, NodeInventory,
    };

    let m = builtin(fixture).unwrap().for_node("n");
    let gpus: Vec<GpuInfo> = m
        .gpus
        .iter()
        .map(|g| GpuInfo {
            index: g.index,
            uuid: g.uuid.clone(),
            model: m.model.clone(),
            memory_total_mib: m.memory_mib,
            pci_bus_id: g.pci_bus_id.clone(),
            numa_node: Some(g.numa_node),
            mig: MigInfo {
                mode: MigMode::Disabled,
                pending: None,
                instances: Vec::new(),
            },
            power_limit_watts: Some(m.power_limit_watts),
            health: GpuHealth::Healthy,
        })
        .collect();
    let health = gpus
        .iter()
        .map(|g| GpuHealthState::healthy(g.index, g.uuid.clone()))
        .collect();
    NodeView {
        node_name: "n".into(),
        lost: vec![false; gpus.len()],
        inventory: Some(NodeInventory {
            driver_version: m.driver_version.clone(),
            cuda_version: Some(m.cuda_version.clone()),
            gpu_count: gpus.len() as u32,
            gpus,
            links: m.topology.clone(),
        }),
        health,
        compute_capability: None,
        machine: Some(m.machine.clone()),
        clique: m.clique.clone(),
        mig_strategy: "none".into(),
    }
}
