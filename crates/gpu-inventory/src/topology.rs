//! The pairwise link matrix from NVML: NVLinks from link state + remote PCI info, else the PCIe
//! common ancestor.

use crate::error::{Context, InventoryError};
use muster_api::{Link, LinkMatrix, PcieLevel};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::{
    NVML_NVLINK_MAX_LINKS, nvmlIntNvLinkDeviceType_enum_NVML_NVLINK_DEVICE_TYPE_SWITCH,
    nvmlIntNvLinkDeviceType_t,
};
use std::collections::BTreeSet;

/// A PCI address, compared numerically (NVML mixes 4- and 8-digit domains and letter case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddr(u32, u32, u32, u32);

impl PciAddr {
    pub fn parse(s: &str) -> Option<PciAddr> {
        let (domain, rest) = s.trim().split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let hex = |x: &str| u32::from_str_radix(x, 16).ok();
        Some(PciAddr(
            hex(domain)?,
            hex(bus)?,
            hex(device)?,
            hex(function)?,
        ))
    }
}

/// What one GPU's NVLinks reach.
#[derive(Debug, Default, Clone)]
struct GpuLinks {
    /// Active links per peer GPU index.
    to_gpu: Vec<u32>,
    /// Active links whose far end is an NVSwitch, and those switches.
    to_switch: u32,
    switches: BTreeSet<PciAddr>,
}

/// Remote device type through the raw symbol: nvml-wrapper 0.13's `remote_device_type()` passes a
/// temporary as the out-parameter and always reports `Unknown`.
fn remote_is_switch(nvml: &Nvml, device: &nvml_wrapper::Device, link: u32) -> Option<bool> {
    let sym = nvml
        .lib()
        .nvmlDeviceGetNvLinkRemoteDeviceType
        .as_ref()
        .ok()?;
    let mut kind: nvmlIntNvLinkDeviceType_t = 0;
    // SAFETY: a valid device handle from this library and a live out-parameter.
    let rc = unsafe { sym(device.handle(), link, &mut kind) };
    (rc == 0).then_some(kind == nvmlIntNvLinkDeviceType_enum_NVML_NVLINK_DEVICE_TYPE_SWITCH)
}

fn scan_links(
    nvml: &Nvml,
    index: u32,
    buses: &[Option<PciAddr>],
) -> Result<GpuLinks, InventoryError> {
    let mut out = GpuLinks {
        to_gpu: vec![0; buses.len()],
        ..GpuLinks::default()
    };
    let device = nvml
        .device_by_index(index)
        .ctx("nvmlDeviceGetHandleByIndex_v2", Some(index))?;
    for link in 0..NVML_NVLINK_MAX_LINKS {
        let wrapper = device.link_wrapper_for(link);
        match wrapper.is_active() {
            Ok(true) => {}
            Ok(false) => continue,
            // PCIe-only GPU, or past the links this GPU has.
            Err(NvmlError::NotSupported | NvmlError::InvalidArg) => break,
            Err(e) => {
                return Err(InventoryError::nvml(
                    "nvmlDeviceGetNvLinkState",
                    Some(index),
                    e,
                ));
            }
        }
        let remote = wrapper
            .remote_pci_info()
            .ctx("nvmlDeviceGetNvLinkRemotePciInfo_v2", Some(index))?;
        let addr = PciAddr::parse(&remote.bus_id);
        if let Some(peer) = addr.and_then(|a| buses.iter().position(|b| *b == Some(a))) {
            out.to_gpu[peer] += 1;
        } else if remote_is_switch(nvml, &device, link).unwrap_or(true) {
            // A far end that is no GPU of this node is a switch even if the type is unknown.
            out.to_switch += 1;
            out.switches.extend(addr);
        }
    }
    Ok(out)
}

fn pcie_level(nvml: &Nvml, a: u32, b: u32) -> Result<PcieLevel, InventoryError> {
    let call = "nvmlDeviceGetTopologyCommonAncestor";
    let da = nvml
        .device_by_index(a)
        .ctx("nvmlDeviceGetHandleByIndex_v2", Some(a))?;
    let db = nvml
        .device_by_index(b)
        .ctx("nvmlDeviceGetHandleByIndex_v2", Some(b))?;
    let level = da.topology_common_ancestor(db).ctx(call, Some(a))?;
    PcieLevel::from_nvml_level(level.as_c()).ok_or_else(|| InventoryError::Unexpected {
        call,
        gpu: Some(a),
        detail: format!("unknown topology level {}", level.as_c()),
    })
}

/// Builds the link matrix. `buses[i]` is GPU i's PCI address (`None` if it was lost). Pairs with a
/// lost GPU are reported as `SYS`: nothing better is known and the GPU is unusable anyway.
pub fn link_matrix(nvml: &Nvml, buses: &[Option<PciAddr>]) -> Result<LinkMatrix, InventoryError> {
    let n = buses.len();
    let mut links = Vec::with_capacity(n);
    for (i, bus) in buses.iter().enumerate() {
        links.push(match bus {
            Some(_) => scan_links(nvml, i as u32, buses)?,
            None => GpuLinks {
                to_gpu: vec![0; n],
                ..GpuLinks::default()
            },
        });
    }
    let mut matrix = LinkMatrix::uniform(n, Link::Pcie(PcieLevel::Sys));
    for i in 0..n {
        for j in i + 1..n {
            if buses[i].is_none() || buses[j].is_none() {
                continue;
            }
            let (a, b) = (&links[i], &links[j]);
            // Both ends count the same cables; take the smaller if the views ever disagree.
            let mut count = a.to_gpu[j].min(b.to_gpu[i]);
            // Through NVSwitches every GPU reaches every other one sharing a switch at the bandwidth
            // of the smaller side, as `nvidia-smi topo -m` shows NV12 on a DGX A100.
            if !a.switches.is_disjoint(&b.switches) {
                count += a.to_switch.min(b.to_switch);
            }
            let link = if count > 0 {
                Link::NvLink(u8::try_from(count).unwrap_or(u8::MAX))
            } else {
                Link::Pcie(pcie_level(nvml, i as u32, j as u32)?)
            };
            matrix.set(i, j, link);
        }
    }
    Ok(matrix)
}

#[cfg(test)]
mod tests {
    use super::PciAddr;

    #[test]
    fn pci_addresses_compare_across_spellings() {
        assert_eq!(
            PciAddr::parse("00000000:0f:00.0"),
            PciAddr::parse("0000:0F:00.0")
        );
        assert_ne!(
            PciAddr::parse("00000000:0F:00.0"),
            PciAddr::parse("00000000:0F:00.1")
        );
        assert_eq!(PciAddr::parse("junk"), None);
    }
}
