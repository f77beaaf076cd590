//! Snapshot types, serde camelCase. The slow [`NodeInventory`] (identity, topology) is separate
//! from the cheap [`MetricsSample`] taken every collection tick.

use muster_api::LinkMatrix;
use serde::{Deserialize, Serialize};

/// Health of one GPU as far as this crate knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum GpuHealth {
    Healthy,
    Unhealthy { reason: String },
}

impl GpuHealth {
    pub fn is_healthy(&self) -> bool {
        matches!(self, GpuHealth::Healthy)
    }

    pub(crate) fn lost() -> GpuHealth {
        GpuHealth::Unhealthy {
            reason: "GPU is lost (fell off the bus)".to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MigMode {
    /// The GPU cannot do MIG.
    Unsupported,
    Disabled,
    Enabled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigInstance {
    pub uuid: String,
    pub name: String,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigInfo {
    pub mode: MigMode,
    /// Mode after the next GPU reset, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<MigMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<MigInstance>,
}

/// Identity and static properties of one GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    pub index: u32,
    /// Empty only if the GPU was lost before its UUID could ever be read.
    pub uuid: String,
    pub model: String,
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// NVML's `busId` form, `00000000:07:00.0`.
    pub pci_bus_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    pub mig: MigInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_watts: Option<u32>,
    pub health: GpuHealth,
}

/// The slow-changing picture of a node's GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInventory {
    pub driver_version: String,
    /// `major.minor`, e.g. `12.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    pub gpu_count: u32,
    pub gpus: Vec<GpuInfo>,
    /// Pairwise links by GPU index, `nvidia-smi topo -m` legend.
    pub links: LinkMatrix,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSample {
    pub pid: u32,
    /// `None` when NVML cannot tell (e.g. under WDDM).
    #[serde(
        default,
        rename = "usedMemoryMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub used_memory_mib: Option<u64>,
}

/// Fast-changing readings of one GPU; `None` where the GPU does not support a reading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuMetrics {
    pub index: u32,
    pub uuid: String,
    /// The GPU answered `GPU_IS_LOST`: every reading is `None`.
    pub lost: bool,
    pub sm_util_percent: Option<u32>,
    pub memory_util_percent: Option<u32>,
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: Option<u64>,
    #[serde(rename = "memoryFreeMiB")]
    pub memory_free_mib: Option<u64>,
    pub temperature_c: Option<u32>,
    pub power_watts: Option<f64>,
    /// Millijoules since the driver loaded (DCGM's TOTAL_ENERGY_CONSUMPTION unit).
    pub energy_mj: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub processes: Vec<ProcessSample>,
}

/// One collection tick over all GPUs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSample {
    pub gpus: Vec<GpuMetrics>,
}
