//! Per-device exports: identity, memory, utilization, sensors, PCI, NUMA, MIG, processes.

use crate::ffi::{Target, decode, fill_chars, guard, mig_handle, put, write_str};
use crate::state::{Loaded, with_loaded};
use nvml_wrapper_sys::bindings::*;
use std::ffi::{c_char, c_uint, c_ulonglong};

/// Resolves a handle (bad -> `INVALID_ARGUMENT`, lost GPU -> `GPU_IS_LOST`) and runs `f` with the
/// fixture time.
pub fn with_device(
    handle: nvmlDevice_t,
    f: impl FnOnce(&mut Loaded, Target, f64) -> nvmlReturn_t,
) -> nvmlReturn_t {
    guard(|| {
        with_loaded(|l| {
            let Some(target) = decode(&l.machine, handle) else {
                return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
            };
            let now = l.now();
            if l.machine.is_lost(target.gpu(), now) {
                return nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;
            }
            f(l, target, now)
        })
    })
}

/// Like [`with_device`] for queries only whole GPUs answer (MIG handles: `NOT_SUPPORTED`).
fn with_gpu(
    handle: nvmlDevice_t,
    f: impl FnOnce(&mut Loaded, usize, f64) -> nvmlReturn_t,
) -> nvmlReturn_t {
    with_device(handle, |l, target, now| match target {
        Target::Gpu(g) => f(l, g, now),
        Target::Mig(..) => nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
    })
}

/// # Safety
/// `index` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_gpu(device, |_, g, _| unsafe { put(index, g as c_uint) })
}

/// # Safety
/// `name` must be null or valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    with_device(device, |l, target, _| {
        let spec = &l.machine.spec;
        let text = match target {
            Target::Gpu(_) => spec.model.clone(),
            Target::Mig(g, _) => {
                let profile = spec.gpus[g].mig.as_ref().map_or("", |m| m.profile.as_str());
                format!("{} MIG {profile}", spec.model)
            }
        };
        // SAFETY: forwarded caller contract.
        unsafe { write_str(name, length, &text) }
    })
}

/// # Safety
/// `uuid` must be null or valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    with_device(device, |l, target, _| {
        let text = match target {
            Target::Gpu(g) => l.machine.spec.gpus[g].uuid.clone(),
            Target::Mig(g, k) => l.machine.mig_uuid(g, k),
        };
        // SAFETY: forwarded caller contract.
        unsafe { write_str(uuid, length, &text) }
    })
}

/// (total, used) in bytes of a GPU or MIG instance.
fn memory_bytes(l: &Loaded, target: Target, now: f64) -> (u64, u64) {
    const MIB: u64 = 1024 * 1024;
    match target {
        Target::Gpu(g) => (
            l.machine.spec.memory_mib * MIB,
            l.machine.metrics(g, now).mem_used_mib * MIB,
        ),
        Target::Mig(g, _) => (l.machine.mig_instance_mib(g) * MIB, 0),
    }
}

/// # Safety
/// `memory` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    with_device(device, |l, target, now| {
        let (total, used) = memory_bytes(l, target, now);
        // SAFETY: forwarded caller contract.
        unsafe {
            put(
                memory,
                nvmlMemory_t {
                    total,
                    free: total - used,
                    used,
                },
            )
        }
    })
}

/// `NVML_STRUCT_VERSION(Memory, 2)`; a caller passing another version gets a mismatch, as from NVML.
const MEMORY_V2_VERSION: c_uint = (size_of::<nvmlMemory_v2_t>() as c_uint) | (2 << 24);

/// # Safety
/// `memory` must be null or valid for reads and writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    with_device(device, |l, target, now| {
        if memory.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null; the caller passes an initialised struct carrying its version.
        let version = unsafe { (*memory).version };
        if version != MEMORY_V2_VERSION {
            return nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        let (total, used) = memory_bytes(l, target, now);
        let info = nvmlMemory_v2_t {
            version,
            total,
            reserved: 0,
            free: total - used,
            used,
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(memory, info) }
    })
}

/// # Safety
/// `utilization` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    with_gpu(device, |l, g, now| {
        let m = l.machine.metrics(g, now);
        // SAFETY: forwarded caller contract.
        unsafe {
            put(
                utilization,
                nvmlUtilization_t {
                    gpu: m.gpu_util,
                    memory: m.mem_util,
                },
            )
        }
    })
}

/// # Safety
/// `temp` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor: nvmlTemperatureSensors_t,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, |l, g, now| {
        if sensor != nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: forwarded caller contract.
        unsafe { put(temp, l.machine.metrics(g, now).temperature_c) }
    })
}

/// Milliwatts.
///
/// # Safety
/// `power` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: nvmlDevice_t,
    power: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_gpu(device, |l, g, now| unsafe {
        put(power, l.machine.metrics(g, now).power_w * 1000)
    })
}

/// Milliwatts.
///
/// # Safety
/// `limit` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_gpu(device, |l, _, _| unsafe {
        put(limit, l.machine.spec.power_limit_watts * 1000)
    })
}

/// Millijoules since init.
///
/// # Safety
/// `energy` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: nvmlDevice_t,
    energy: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_gpu(device, |l, g, now| unsafe {
        put(energy, l.machine.energy_mj(g, now))
    })
}

/// MHz: SM/graphics clocks scale from 210 MHz idle to 1410 MHz at full load; memory is fixed.
///
/// # Safety
/// `clock` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    clock_type: nvmlClockType_t,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, |l, g, now| {
        let util = l.machine.metrics(g, now).gpu_util.min(100);
        let mhz = match clock_type {
            nvmlClockType_enum_NVML_CLOCK_GRAPHICS | nvmlClockType_enum_NVML_CLOCK_SM => {
                210 + util * 12
            }
            nvmlClockType_enum_NVML_CLOCK_MEM => 1593,
            nvmlClockType_enum_NVML_CLOCK_VIDEO => 795,
            _ => return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(clock, mhz) }
    })
}

/// The PCI info of a GPU (also used for NVLink remote ends).
pub fn gpu_pci_info(l: &Loaded, g: usize) -> nvmlPciInfo_t {
    pci_info(l.machine.pci[g], l.machine.pci_device_id())
}

pub fn pci_info(addr: crate::machine::PciAddr, device_id: u32) -> nvmlPciInfo_t {
    let mut info = nvmlPciInfo_t {
        busIdLegacy: [0; 16],
        domain: addr.domain,
        bus: addr.bus,
        device: addr.device,
        pciDeviceId: device_id,
        pciSubSystemId: 0x1450_10DE,
        busId: [0; 32],
    };
    fill_chars(&mut info.busIdLegacy, &addr.bus_id_legacy());
    fill_chars(&mut info.busId, &addr.bus_id());
    info
}

/// # Safety
/// `pci` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_gpu(device, |l, g, _| unsafe { put(pci, gpu_pci_info(l, g)) })
}

/// # Safety
/// `node` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumaNodeId(
    device: nvmlDevice_t,
    node: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_gpu(device, |l, g, _| unsafe {
        put(node, l.machine.spec.gpus[g].numa_node)
    })
}

/// # Safety
/// Both pointers must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, |l, g, _| {
        if !l.machine.mig_capable() {
            return nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
        }
        if current.is_null() || pending.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        let mode = if l.machine.spec.gpus[g].mig.is_some() {
            NVML_DEVICE_MIG_ENABLE
        } else {
            NVML_DEVICE_MIG_DISABLE
        };
        // SAFETY: both non-null and valid per the caller.
        unsafe {
            put(current, mode);
            put(pending, mode)
        }
    })
}

/// Seven on every MIG-capable GPU (A100/H100 class), whatever the current mode.
///
/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: nvmlDevice_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, |l, _, _| {
        if !l.machine.mig_capable() {
            return nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
        }
        // SAFETY: forwarded caller contract.
        unsafe { put(count, 7) }
    })
}

/// # Safety
/// `mig_device` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    mig_device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    with_gpu(device, |l, g, _| match &l.machine.spec.gpus[g].mig {
        None if l.machine.mig_capable() => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        None => nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
        Some(mig) if index >= mig.instances => nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
        // SAFETY: forwarded caller contract.
        Some(_) => unsafe { put(mig_device, mig_handle(g, index as usize)) },
    })
}

/// The usual NVML two-call protocol: a short buffer gets `INSUFFICIENT_SIZE` and the needed count.
///
/// # Safety
/// `count` must be null or valid for reads and writes; `infos` null or valid for `*count` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    with_gpu(device, |l, g, now| {
        if count.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        let procs = l.machine.metrics(g, now).processes;
        // SAFETY: non-null and valid per the caller.
        let capacity = unsafe { *count } as usize;
        // SAFETY: as above.
        unsafe { *count = procs.len() as c_uint };
        if procs.len() > capacity {
            return nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
        }
        if procs.is_empty() {
            return nvmlReturn_enum_NVML_SUCCESS;
        }
        if infos.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        for (i, p) in procs.iter().enumerate() {
            let info = nvmlProcessInfo_t {
                pid: p.pid,
                usedGpuMemory: p.used_memory_mib * 1024 * 1024,
                // Not attributable to a MIG instance (NVML's "invalid" id).
                gpuInstanceId: u32::MAX,
                computeInstanceId: u32::MAX,
            };
            // SAFETY: i < procs.len() <= capacity entries, valid per the caller.
            unsafe { infos.add(i).write(info) };
        }
        nvmlReturn_enum_NVML_SUCCESS
    })
}
