//! Machine fixtures: JSON descriptions of real GPU servers (`fixtures/machines/*.json`).
//!
//! One source of truth for the fake NVML library, the simulated kwok nodes and the scheduler's
//! fallback topology, so that simulated nodes and their agents always agree.

use crate::topology::LinkMatrix;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

/// One GPU server model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSpec {
    /// Fixture name, e.g. `dgx-a100` (the value of the `muster.dev/topology-fixture` label).
    pub name: String,
    pub description: String,
    /// NVML device name, e.g. `NVIDIA A100-SXM4-80GB`.
    pub model: String,
    /// GFD `nvidia.com/gpu.product` label value.
    pub product: String,
    /// GFD `nvidia.com/gpu.family`.
    pub family: String,
    /// GFD `nvidia.com/gpu.machine`.
    pub machine: String,
    /// Framebuffer memory per GPU.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    pub driver_version: String,
    pub cuda_version: String,
    pub power_limit_watts: u32,
    pub idle_power_watts: u32,
    /// NVLinks go through NVSwitches (their remote end is a switch, not the peer GPU).
    pub nvswitch: bool,
    /// Active NVLinks per GPU (0 on PCIe-only machines).
    pub nvlinks_per_gpu: u32,
    /// Rack-scale NVLink domain this node belongs to (GFD `nvidia.com/gpu.clique`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clique: Option<String>,
    pub gpus: Vec<GpuSpec>,
    /// `nvidia-smi topo -m` of the machine.
    pub topology: LinkMatrix,
    /// Changes over time (utilization, XID errors, a GPU falling off the bus).
    #[serde(default)]
    pub script: Vec<ScriptEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuSpec {
    pub index: u32,
    pub uuid: String,
    /// Extended PCI bus id, `domain:bus:device.function` (`00000000:07:00.0`).
    pub pci_bus_id: String,
    pub numa_node: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigSpec {
    /// MIG profile of every instance, e.g. `1g.10gb`.
    pub profile: String,
    pub instances: u32,
}

/// A scripted change to one GPU, `at_seconds` after the library was initialised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptEvent {
    pub at_seconds: f64,
    pub gpu: u32,
    /// An XID error event delivered through the NVML event set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization_percent: Option<u32>,
    #[serde(
        default,
        rename = "memoryUsedMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_used_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<u32>,
    /// Compute processes running on the GPU from then on (replaces the previous list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<ProcessSpec>>,
    /// The GPU falls off the bus: NVML answers `NVML_ERROR_GPU_IS_LOST` from then on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

/// A compute process as NVML lists it (`nvmlProcessInfo_t`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessSpec {
    pub pid: u32,
    #[serde(rename = "usedMemoryMiB")]
    pub used_memory_mib: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("reading machine fixture {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing machine fixture {name}: {source}")]
    Parse {
        name: String,
        source: serde_json::Error,
    },
    #[error("machine fixture {name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("unknown machine fixture {0:?}; built-in fixtures: {1}")]
    Unknown(String, String),
}

const BUILTIN_SOURCES: [(&str, &str); 6] = [
    (
        "dgx1-v100",
        include_str!("../../../fixtures/machines/dgx1-v100.json"),
    ),
    (
        "dgx-a100",
        include_str!("../../../fixtures/machines/dgx-a100.json"),
    ),
    (
        "dgx-h100",
        include_str!("../../../fixtures/machines/dgx-h100.json"),
    ),
    (
        "l4-pcie-2s",
        include_str!("../../../fixtures/machines/l4-pcie-2s.json"),
    ),
    (
        "a100-pcie-mig",
        include_str!("../../../fixtures/machines/a100-pcie-mig.json"),
    ),
    (
        "gb200-nvl72",
        include_str!("../../../fixtures/machines/gb200-nvl72.json"),
    ),
];

/// Names of the fixtures compiled into every binary.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_SOURCES.iter().map(|(name, _)| *name)
}

/// A built-in fixture by name.
pub fn builtin(name: &str) -> Result<&'static MachineSpec, MachineError> {
    static PARSED: OnceLock<Vec<MachineSpec>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        BUILTIN_SOURCES
            .iter()
            .filter_map(|(n, src)| MachineSpec::parse(n, src).ok())
            .collect()
    });
    parsed.iter().find(|m| m.name == name).ok_or_else(|| {
        MachineError::Unknown(
            name.to_string(),
            builtin_names().collect::<Vec<_>>().join(", "),
        )
    })
}

/// A fixture by built-in name or by file path.
pub fn resolve(name_or_path: &str) -> Result<MachineSpec, MachineError> {
    if let Ok(spec) = builtin(name_or_path) {
        return Ok(spec.clone());
    }
    if Path::new(name_or_path).exists() {
        return MachineSpec::load(Path::new(name_or_path));
    }
    builtin(name_or_path).cloned()
}

impl MachineSpec {
    pub fn parse(name: &str, json: &str) -> Result<MachineSpec, MachineError> {
        let spec: MachineSpec =
            serde_json::from_str(json).map_err(|source| MachineError::Parse {
                name: name.to_string(),
                source,
            })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<MachineSpec, MachineError> {
        let json = std::fs::read_to_string(path).map_err(|source| MachineError::Read {
            path: path.display().to_string(),
            source,
        })?;
        MachineSpec::parse(&path.display().to_string(), &json)
    }

    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    fn validate(&self) -> Result<(), MachineError> {
        let invalid = |reason: String| MachineError::Invalid {
            name: self.name.clone(),
            reason,
        };
        if self.gpus.len() != self.topology.size() {
            return Err(invalid(format!(
                "{} GPUs but a {}x{} topology matrix",
                self.gpus.len(),
                self.topology.size(),
                self.topology.size()
            )));
        }
        let mut uuids = HashSet::new();
        let mut buses = HashSet::new();
        for (i, gpu) in self.gpus.iter().enumerate() {
            if gpu.index as usize != i {
                return Err(invalid(format!(
                    "GPU at position {i} has index {}",
                    gpu.index
                )));
            }
            if !gpu.uuid.starts_with("GPU-") || !uuids.insert(gpu.uuid.as_str()) {
                return Err(invalid(format!(
                    "GPU {i} has a bad or repeated UUID {}",
                    gpu.uuid
                )));
            }
            if !buses.insert(gpu.pci_bus_id.as_str()) {
                return Err(invalid(format!(
                    "GPU {i} repeats PCI bus id {}",
                    gpu.pci_bus_id
                )));
            }
        }
        if let Some(event) = self
            .script
            .iter()
            .find(|e| e.gpu as usize >= self.gpus.len())
        {
            return Err(invalid(format!(
                "script event names GPU {} of {}",
                event.gpu,
                self.gpus.len()
            )));
        }
        Ok(())
    }

    /// The same machine as installed on `node`: UUIDs are derived from the node name, so that
    /// many simulated nodes of one model have distinct, stable GPU identities that the fake NVML
    /// (run with the node's name) and the scheduler's fixture fallback agree on.
    pub fn for_node(&self, node: &str) -> MachineSpec {
        let mut spec = self.clone();
        for gpu in &mut spec.gpus {
            gpu.uuid = node_gpu_uuid(node, &self.name, gpu.index);
        }
        spec
    }
}

/// Stable GPU UUID for GPU `index` of a `machine` fixture installed on `node` (FNV-1a based).
pub fn node_gpu_uuid(node: &str, machine: &str, index: u32) -> String {
    let hash = |salt: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for b in node
            .bytes()
            .chain([0])
            .chain(machine.bytes())
            .chain(index.to_le_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(1), hash(2));
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Link;

    #[test]
    fn every_builtin_parses_and_validates() {
        for (name, src) in BUILTIN_SOURCES {
            let spec = MachineSpec::parse(name, src).unwrap();
            assert_eq!(spec.name, name);
        }
        assert_eq!(builtin_names().count(), 6);
    }

    #[test]
    fn dgx1_is_a_hybrid_cube_mesh() {
        let m = builtin("dgx1-v100").unwrap();
        for i in 0..8 {
            let links: u32 = (0..8)
                .filter(|&j| j != i)
                .map(|j| match m.topology.link(i, j) {
                    Link::NvLink(n) => u32::from(n),
                    Link::Pcie(_) => 0,
                })
                .sum();
            assert_eq!(links, 6, "GPU {i} has six NVLinks");
        }
    }

    #[test]
    fn unknown_fixture_lists_builtins() {
        let err = builtin("dgx-9000").unwrap_err().to_string();
        assert!(err.contains("dgx-a100"), "{err}");
    }

    #[test]
    fn node_uuids_are_stable_and_distinct() {
        let m = builtin("dgx-a100").unwrap();
        let a = m.for_node("node-1");
        let b = m.for_node("node-2");
        assert_eq!(a, m.for_node("node-1"));
        assert_ne!(a.gpus[0].uuid, b.gpus[0].uuid);
        assert_ne!(a.gpus[0].uuid, a.gpus[1].uuid);
        assert_eq!(a.gpus[0].uuid.len(), 40);
    }

    #[test]
    fn malformed_fixture_is_a_clear_error() {
        let err = MachineSpec::parse("bad", "{\"name\": 3}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("parsing machine fixture bad"), "{err}");
        let src = BUILTIN_SOURCES[0].1.replace("\"index\": 1", "\"index\": 5");
        let err = MachineSpec::parse("bad", &src).unwrap_err().to_string();
        assert!(err.contains("position 1 has index 5"), "{err}");
    }
}
