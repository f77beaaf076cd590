//! Topology exports: PCIe common ancestor and NVLink state / remote ends, from the fixture matrix.

use crate::device::{gpu_pci_info, pci_info, with_device};
use crate::ffi::{Target, decode, put};
use crate::machine::Remote;
use nvml_wrapper_sys::bindings::*;
use std::ffi::c_uint;

/// PCI device id of the fake NVSwitches (NVIDIA NVSwitch, vendor 10DE).
const NVSWITCH_PCI_DEVICE_ID: u32 = (0x1AF1 << 16) | 0x10DE;

/// # Safety
/// `path_info` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTopologyCommonAncestor(
    device1: nvmlDevice_t,
    device2: nvmlDevice_t,
    path_info: *mut nvmlGpuTopologyLevel_t,
) -> nvmlReturn_t {
    with_device(device1, |l, first, now| {
        let (Target::Gpu(a), Some(Target::Gpu(b))) = (first, decode(&l.machine, device2)) else {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        };
        if l.machine.is_lost(b, now) {
            return nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;
        }
        let level = if a == b {
            nvmlGpuLevel_enum_NVML_TOPOLOGY_INTERNAL
        } else {
            l.machine.pcie_level(a, b).nvml_level()
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(path_info, level) }
    })
}

/// The remote end of `link` of GPU `g`: `Ok(Some)` active, `Ok(None)` supported but down.
fn remote(
    l: &crate::state::Loaded,
    g: usize,
    link: c_uint,
) -> Result<Option<Remote>, nvmlReturn_t> {
    if link >= NVML_NVLINK_MAX_LINKS {
        return Err(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
    }
    if link >= l.machine.supported_links[g] {
        return Err(nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
    }
    Ok(l.machine.links[g].get(link as usize).copied())
}

/// # Safety
/// `is_active` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link: c_uint,
    is_active: *mut nvmlEnableState_t,
) -> nvmlReturn_t {
    with_device(device, |l, target, _| {
        let Target::Gpu(g) = target else {
            return nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
        };
        let state = match remote(l, g, link) {
            Ok(Some(_)) => nvmlEnableState_enum_NVML_FEATURE_ENABLED,
            Ok(None) => nvmlEnableState_enum_NVML_FEATURE_DISABLED,
            Err(code) => return code,
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(is_active, state) }
    })
}

/// # Safety
/// `pci` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    device: nvmlDevice_t,
    link: c_uint,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    with_device(device, |l, target, _| {
        let Target::Gpu(g) = target else {
            return nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
        };
        let info = match remote(l, g, link) {
            Ok(Some(Remote::Gpu(peer))) => gpu_pci_info(l, peer),
            Ok(Some(Remote::Switch(s))) => {
                pci_info(l.machine.switch_pci[s], NVSWITCH_PCI_DEVICE_ID)
            }
            // An inactive link has no far end to describe.
            Ok(None) => return nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
            Err(code) => return code,
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(pci, info) }
    })
}

/// # Safety
/// `device_type` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemoteDeviceType(
    device: nvmlDevice_t,
    link: c_uint,
    device_type: *mut nvmlIntNvLinkDeviceType_t,
) -> nvmlReturn_t {
    with_device(device, |l, target, _| {
        let Target::Gpu(g) = target else {
            return nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
        };
        let kind = match remote(l, g, link) {
            Ok(Some(Remote::Gpu(_))) => nvmlIntNvLinkDeviceType_enum_NVML_NVLINK_DEVICE_TYPE_GPU,
            Ok(Some(Remote::Switch(_))) => {
                nvmlIntNvLinkDeviceType_enum_NVML_NVLINK_DEVICE_TYPE_SWITCH
            }
            Ok(None) => nvmlIntNvLinkDeviceType_enum_NVML_NVLINK_DEVICE_TYPE_UNKNOWN,
            Err(code) => return code,
        };
        // SAFETY: forwarded caller contract.
        unsafe { put(device_type, kind) }
    })
}
