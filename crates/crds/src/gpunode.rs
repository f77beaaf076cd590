//! `GpuNode`: what the node agent knows about one node's GPUs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "muster.dev",
    version = "v1alpha1",
    kind = "GpuNode",
    shortname = "gn",
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".spec.gpuCount"}"#,
    printcolumn = r#"{"name":"Healthy","type":"integer","jsonPath":".spec.healthyCount"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
    printcolumn = r#"{"name":"Clique","type":"string","jsonPath":".spec.clique"}"#,
    printcolumn = r#"{"name":"Driver","type":"string","jsonPath":".spec.driverVersion","priority":1}"#,
    printcolumn = r#"{"name":"Seen","type":"date","jsonPath":".spec.lastSeen"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSpec {
    /// The Node this describes (the object has the same name).
    pub node_name: String,
    pub driver_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Model of the node's GPUs (NVML name).
    pub model: String,
    pub gpu_count: i32,
    pub healthy_count: i32,
    /// Rack-scale NVLink domain (`nvidia.com/gpu.clique`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clique: Option<String>,
    pub gpus: Vec<GpuNodeGpu>,
    /// Pairwise links in the `nvidia-smi topo -m` legend (`X` on the diagonal, `NV12`, `PIX`,
    /// `SYS`, ...), rows and columns by GPU index.
    pub topology: Vec<Vec<String>>,
    /// RFC 3339 time the agent last confirmed this object.
    pub last_seen: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeGpu {
    pub index: i32,
    pub uuid: String,
    pub model: String,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    pub pci_bus_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<i32>,
    pub healthy: bool,
    /// Why the GPU is unhealthy (e.g. `XID 79`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_reason: Option<String>,
    #[serde(default)]
    pub mig_enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig_devices: Vec<MigDevice>,
    /// Readings of the agent's last NVML sample before the write (refreshed with every write,
    /// i.e. at least once per heartbeat; absent when the GPU could not be sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<GpuUsage>,
}

/// Live readings of one GPU, as `DCGM_FI_DEV_GPU_UTIL`, `_FB_USED`, `_GPU_TEMP`, `_POWER_USAGE`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<i32>,
    #[serde(
        default,
        rename = "memoryUsedMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_used_mib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigDevice {
    pub uuid: String,
    pub profile: String,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
}

impl GpuNodeSpec {
    /// The link matrix, validated (square, symmetric, known legend, one row per GPU).
    pub fn link_matrix(&self) -> Result<muster_api::LinkMatrix, String> {
        let m = muster_api::LinkMatrix::from_rows(&self.topology).map_err(|e| e.to_string())?;
        if m.size() != self.gpus.len() {
            return Err(format!(
                "topology has {} rows for {} GPUs",
                m.size(),
                self.gpus.len()
            ));
        }
        Ok(m)
    }
}
