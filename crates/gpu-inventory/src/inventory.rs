//! Opening NVML, the slow inventory snapshot and the cheap metrics sample.

use crate::error::{Answer, Context, InventoryError, answer};
use crate::topology::{PciAddr, link_matrix};
use crate::types::*;
use muster_api::LinkMatrix;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

/// Where NVML lives on a driver install (the unversioned `.so` only exists with dev packages).
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";
const MIB: u64 = 1024 * 1024;

/// Result of opening NVML.
#[derive(Debug)]
pub enum Discovery {
    Ready(Inventory),
    /// No NVIDIA driver on this node (library absent, or the kernel driver not loaded): no GPUs.
    NoDriver {
        reason: String,
    },
}

impl Discovery {
    pub fn into_inventory(self) -> Option<Inventory> {
        match self {
            Discovery::Ready(inv) => Some(inv),
            Discovery::NoDriver { .. } => None,
        }
    }
}

/// What is fixed for a GPU once seen: index and UUID (kept for GPUs that get lost later).
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub index: u32,
    pub uuid: String,
}

/// An open NVML with this node's GPUs and their (static) topology.
pub struct Inventory {
    pub(crate) nvml: Arc<Nvml>,
    pub(crate) gpus: Vec<Identity>,
    links: LinkMatrix,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("gpus", &self.gpus.len())
            .finish()
    }
}

fn uuid_of(device: &Device, index: u32) -> Result<Option<String>, InventoryError> {
    match answer(device.uuid(), "nvmlDeviceGetUUID", index)? {
        Answer::Value(uuid) => Ok(Some(uuid)),
        Answer::Lost | Answer::Unsupported => Ok(None),
    }
}

impl Inventory {
    /// Loads NVML from `lib_path` (default [`DEFAULT_LIB`]), lists the GPUs and computes the link
    /// matrix once (topology does not change while the driver is loaded).
    pub fn open(lib_path: Option<&Path>) -> Result<Discovery, InventoryError> {
        let path = lib_path.map_or(OsStr::new(DEFAULT_LIB), Path::as_os_str);
        let nvml = match Nvml::builder().lib_path(path).init() {
            Ok(nvml) => nvml,
            Err(
                e @ (NvmlError::LibloadingError(_)
                | NvmlError::DriverNotLoaded
                | NvmlError::LibraryNotFound),
            ) => {
                tracing::info!(lib = %path.to_string_lossy(), error = %e, "no NVIDIA driver: no GPUs");
                return Ok(Discovery::NoDriver {
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(InventoryError::nvml("nvmlInit_v2", None, e)),
        };
        let count = nvml.device_count().ctx("nvmlDeviceGetCount_v2", None)?;
        let mut gpus = Vec::with_capacity(count as usize);
        let mut buses = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .ctx("nvmlDeviceGetHandleByIndex_v2", Some(index))?;
            let uuid = uuid_of(&device, index)?;
            let bus = match answer(device.pci_info(), "nvmlDeviceGetPciInfo_v3", index)? {
                Answer::Value(pci) => PciAddr::parse(&pci.bus_id),
                Answer::Lost | Answer::Unsupported => None,
            };
            if uuid.is_none() {
                tracing::warn!(gpu = index, "GPU lost while opening the inventory");
            }
            gpus.push(Identity {
                index,
                uuid: uuid.unwrap_or_default(),
            });
            buses.push(bus);
        }
        let links = link_matrix(&nvml, &buses)?;
        tracing::debug!(gpus = count, "NVML inventory opened");
        Ok(Discovery::Ready(Inventory {
            nvml: Arc::new(nvml),
            gpus,
            links,
        }))
    }

    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    /// UUIDs by GPU index (empty for a GPU lost before it was first seen).
    pub fn uuids(&self) -> Vec<String> {
        self.gpus.iter().map(|g| g.uuid.clone()).collect()
    }

    pub fn links(&self) -> &LinkMatrix {
        &self.links
    }

    /// The NVML handle, for callers needing a query this crate does not wrap.
    pub fn nvml(&self) -> &Nvml {
        &self.nvml
    }

    /// Identity, memory, PCI, NUMA, MIG and power limit of every GPU, plus driver versions and
    /// the link matrix. A lost GPU is listed unhealthy with what is known of it.
    pub fn snapshot(&self) -> Result<NodeInventory, InventoryError> {
        let driver_version = self
            .nvml
            .sys_driver_version()
            .ctx("nvmlSystemGetDriverVersion", None)?;
        let cuda_version = match self.nvml.sys_cuda_driver_version() {
            Ok(v) => Some(format!("{}.{}", v / 1000, (v % 1000) / 10)),
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                return Err(InventoryError::nvml(
                    "nvmlSystemGetCudaDriverVersion_v2",
                    None,
                    e,
                ));
            }
        };
        let gpus = self
            .gpus
            .iter()
            .map(|id| self.gpu_info(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeInventory {
            driver_version,
            cuda_version,
            gpu_count: self.gpus.len() as u32,
            gpus,
            links: self.links.clone(),
        })
    }

    fn gpu_info(&self, id: &Identity) -> Result<GpuInfo, InventoryError> {
        let i = id.index;
        let lost = || GpuInfo {
            index: i,
            uuid: id.uuid.clone(),
            model: String::new(),
            memory_total_mib: 0,
            pci_bus_id: String::new(),
            numa_node: None,
            mig: MigInfo {
                mode: MigMode::Unsupported,
                pending: None,
                instances: Vec::new(),
            },
            power_limit_watts: None,
            health: GpuHealth::lost(),
        };
        let d = self
            .nvml
            .device_by_index(i)
            .ctx("nvmlDeviceGetHandleByIndex_v2", Some(i))?;
        // Each required query: a lost GPU short-circuits to the `lost` record.
        macro_rules! required {
            ($r:expr, $call:literal) => {
                match answer($r, $call, i)? {
                    Answer::Value(v) => v,
                    Answer::Lost => return Ok(lost()),
                    Answer::Unsupported => {
                        return Err(InventoryError::nvml(
                            $call,
                            Some(i),
                            NvmlError::NotSupported,
                        ))
                    }
                }
            };
        }
        macro_rules! optional {
            ($r:expr, $call:literal) => {
                match answer($r, $call, i)? {
                    Answer::Value(v) => Some(v),
                    Answer::Unsupported => None,
                    Answer::Lost => return Ok(lost()),
                }
            };
        }
        let uuid = required!(d.uuid(), "nvmlDeviceGetUUID");
        let model = required!(d.name(), "nvmlDeviceGetName");
        let memory = required!(d.memory_info(), "nvmlDeviceGetMemoryInfo_v2");
        let pci = required!(d.pci_info(), "nvmlDeviceGetPciInfo_v3");
        let numa_node = optional!(d.numa_node_id(), "nvmlDeviceGetNumaNodeId");
        let power_limit_watts =
            optional!(d.enforced_power_limit(), "nvmlDeviceGetEnforcedPowerLimit")
                .map(|mw| mw / 1000);
        let mig = match optional!(d.mig_mode(), "nvmlDeviceGetMigMode") {
            None => MigInfo {
                mode: MigMode::Unsupported,
                pending: None,
                instances: Vec::new(),
            },
            Some(m) => {
                let mode = |v: u32| {
                    if v == 0 {
                        MigMode::Disabled
                    } else {
                        MigMode::Enabled
                    }
                };
                let (current, pending) = (mode(m.current), mode(m.pending));
                let instances = if current == MigMode::Enabled {
                    self.mig_instances(&d, i)?
                } else {
                    Vec::new()
                };
                MigInfo {
                    mode: current,
                    pending: (pending != current).then_some(pending),
                    instances,
                }
            }
        };
        Ok(GpuInfo {
            index: i,
            uuid,
            model,
            memory_total_mib: memory.total / MIB,
            pci_bus_id: pci.bus_id,
            numa_node,
            mig,
            power_limit_watts,
            health: GpuHealth::Healthy,
        })
    }

    fn mig_instances(&self, d: &Device, i: u32) -> Result<Vec<MigInstance>, InventoryError> {
        let max = match answer(d.mig_device_count(), "nvmlDeviceGetMaxMigDeviceCount", i)? {
            Answer::Value(n) => n,
            Answer::Unsupported | Answer::Lost => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for k in 0..max {
            let mig = match d.mig_device_by_index(k) {
                Ok(m) => m,
                // Slots without an instance.
                Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
                Err(e) => {
                    return Err(InventoryError::nvml(
                        "nvmlDeviceGetMigDeviceHandleByIndex",
                        Some(i),
                        e,
                    ));
                }
            };
            out.push(MigInstance {
                uuid: mig.uuid().ctx("nvmlDeviceGetUUID", Some(i))?,
                name: mig.name().ctx("nvmlDeviceGetName", Some(i))?,
                memory_mib: mig
                    .memory_info()
                    .ctx("nvmlDeviceGetMemoryInfo_v2", Some(i))?
                    .total
                    / MIB,
            });
        }
        Ok(out)
    }

    /// Utilization, memory, temperature, power, energy, SM clock and processes of every GPU. A
    /// lost GPU yields `lost: true` instead of failing the sample.
    pub fn sample(&self) -> Result<MetricsSample, InventoryError> {
        let gpus = self
            .gpus
            .iter()
            .map(|id| self.gpu_metrics(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MetricsSample { gpus })
    }

    fn gpu_metrics(&self, id: &Identity) -> Result<GpuMetrics, InventoryError> {
        let i = id.index;
        let mut m = GpuMetrics {
            index: i,
            uuid: id.uuid.clone(),
            ..GpuMetrics::default()
        };
        let lost = |mut m: GpuMetrics| {
            m.lost = true;
            Ok(m)
        };
        let d = self
            .nvml
            .device_by_index(i)
            .ctx("nvmlDeviceGetHandleByIndex_v2", Some(i))?;
        macro_rules! read {
            ($r:expr, $call:literal) => {
                match answer($r, $call, i)? {
                    Answer::Value(v) => Some(v),
                    Answer::Unsupported => None,
                    Answer::Lost => return lost(m),
                }
            };
        }
        if let Some(u) = read!(d.utilization_rates(), "nvmlDeviceGetUtilizationRates") {
            m.sm_util_percent = Some(u.gpu);
            m.memory_util_percent = Some(u.memory);
        }
        if let Some(mem) = read!(d.memory_info(), "nvmlDeviceGetMemoryInfo_v2") {
            m.memory_used_mib = Some(mem.used / MIB);
            m.memory_free_mib = Some(mem.free / MIB);
        }
        m.temperature_c = read!(
            d.temperature(TemperatureSensor::Gpu),
            "nvmlDeviceGetTemperature"
        );
        m.power_watts =
            read!(d.power_usage(), "nvmlDeviceGetPowerUsage").map(|mw| f64::from(mw) / 1000.0);
        m.energy_mj = read!(
            d.total_energy_consumption(),
            "nvmlDeviceGetTotalEnergyConsumption"
        );
        m.sm_clock_mhz = read!(d.clock_info(Clock::SM), "nvmlDeviceGetClockInfo");
        let procs = read!(
            d.running_compute_processes(),
            "nvmlDeviceGetComputeRunningProcesses_v3"
        );
        m.processes = procs
            .unwrap_or_default()
            .into_iter()
            .map(|p| ProcessSample {
                pid: p.pid,
                used_memory_mib: match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes / MIB),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect();
        Ok(m)
    }
}
