//! The simulated machine behind the fake NVML: static wiring derived from a fixture, and the
//! scripted, time-dependent state. Pure code (time is an input), unit-tested here.

use muster_api::machines::{MachineSpec, ProcessSpec};
use muster_api::{Link, PcieLevel};

/// Links per NVSwitch chip on the fake switched machines. Real boxes differ (DGX A100: 6 switches x 2
/// links; DGX H100: 4 switches with 4-5 links); only "the remote end is some switch" matters here.
const LINKS_PER_SWITCH: u32 = 2;

/// Where one NVLink of a GPU lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    Gpu(usize),
    Switch(usize),
}

/// A PCI address (`domain:bus:device.function`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciAddr {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
    pub function: u32,
}

impl PciAddr {
    /// Parses `00000000:07:00.0` (or the legacy 4-digit domain form).
    pub fn parse(s: &str) -> Option<PciAddr> {
        let (domain, rest) = s.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        Some(PciAddr {
            domain: u32::from_str_radix(domain, 16).ok()?,
            bus: u32::from_str_radix(bus, 16).ok()?,
            device: u32::from_str_radix(device, 16).ok()?,
            function: u32::from_str_radix(function, 16).ok()?,
        })
    }

    /// NVML's `busId` form: 8-digit domain, upper-case hex.
    pub fn bus_id(&self) -> String {
        format!(
            "{:08X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }

    /// NVML's `busIdLegacy` form: 4-digit domain.
    pub fn bus_id_legacy(&self) -> String {
        format!(
            "{:04X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Values NVML reports for one GPU at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub gpu_util: u32,
    pub mem_util: u32,
    pub mem_used_mib: u64,
    pub temperature_c: u32,
    pub power_w: u32,
    pub processes: Vec<ProcessSpec>,
}

/// A scripted XID error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XidEvent {
    pub at: f64,
    pub gpu: usize,
    pub xid: u64,
}

/// A fixture turned into what NVML answers.
#[derive(Debug)]
pub struct Machine {
    pub spec: MachineSpec,
    pub pci: Vec<PciAddr>,
    /// Per GPU, the remote end of each active NVLink, by link number.
    pub links: Vec<Vec<Remote>>,
    /// Links each GPU supports (active ones first, then inactive ones).
    pub supported_links: Vec<u32>,
    pub switch_pci: Vec<PciAddr>,
    /// XID events ordered by time.
    pub xids: Vec<XidEvent>,
    /// Fixture time at which each GPU falls off the bus.
    pub lost_at: Vec<Option<f64>>,
}

impl Machine {
    pub fn new(spec: MachineSpec) -> Result<Machine, String> {
        let n = spec.gpus.len();
        let pci = spec
            .gpus
            .iter()
            .map(|g| {
                PciAddr::parse(&g.pci_bus_id).ok_or_else(|| {
                    format!(
                        "GPU {} has a malformed PCI bus id {:?}",
                        g.index, g.pci_bus_id
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut links = vec![Vec::new(); n];
        let mut switch_pci = Vec::new();
        if spec.nvswitch {
            let switches = spec.nvlinks_per_gpu.div_ceil(LINKS_PER_SWITCH) as usize;
            // Switch buses count down from 0xFF, skipping any bus a GPU uses, so they never collide.
            let mut bus = 0xFFu32;
            while switch_pci.len() < switches && bus > 0 {
                if !pci.iter().any(|p| p.bus == bus) {
                    switch_pci.push(PciAddr {
                        domain: 0,
                        bus,
                        device: 0,
                        function: 0,
                    });
                }
                bus -= 1;
            }
            for gpu_links in &mut links {
                *gpu_links = (0..spec.nvlinks_per_gpu)
                    .map(|l| Remote::Switch((l / LINKS_PER_SWITCH) as usize))
                    .collect();
            }
        } else {
            // Direct wiring: an `NV#` pair is # links of each GPU whose far end is the peer.
            for (i, gpu_links) in links.iter_mut().enumerate() {
                for j in (0..n).filter(|&j| j != i) {
                    if let Link::NvLink(count) = spec.topology.link(i, j) {
                        gpu_links.extend(std::iter::repeat_n(Remote::Gpu(j), usize::from(count)));
                    }
                }
                if gpu_links.len() > nvml_wrapper_sys::bindings::NVML_NVLINK_MAX_LINKS as usize {
                    return Err(format!(
                        "GPU {i} needs {} NVLinks, NVML has at most 18",
                        gpu_links.len()
                    ));
                }
            }
        }
        let supported_links = links
            .iter()
            .map(|l| (l.len() as u32).max(spec.nvlinks_per_gpu))
            .collect();
        let mut xids: Vec<XidEvent> = spec
            .script
            .iter()
            .filter_map(|e| {
                e.xid.map(|xid| XidEvent {
                    at: e.at_seconds,
                    gpu: e.gpu as usize,
                    xid,
                })
            })
            .collect();
        xids.sort_by(|a, b| a.at.total_cmp(&b.at));
        let lost_at = (0..n)
            .map(|g| {
                spec.script
                    .iter()
                    .filter(|e| e.lost && e.gpu as usize == g)
                    .map(|e| e.at_seconds)
                    .reduce(f64::min)
            })
            .collect();
        Ok(Machine {
            spec,
            pci,
            links,
            supported_links,
            switch_pci,
            xids,
            lost_at,
        })
    }

    pub fn gpu_count(&self) -> usize {
        self.spec.gpus.len()
    }

    pub fn is_lost(&self, gpu: usize, t: f64) -> bool {
        self.lost_at
            .get(gpu)
            .copied()
            .flatten()
            .is_some_and(|at| at <= t)
    }

    /// PCIe common ancestor of two GPUs. For NVLinked pairs the fixture shows the NVLink, so the
    /// PCIe path is inferred from NUMA placement: same node -> NODE, else SYS.
    pub fn pcie_level(&self, a: usize, b: usize) -> PcieLevel {
        match self.spec.topology.link(a, b) {
            Link::Pcie(level) => level,
            Link::NvLink(_) if self.spec.gpus[a].numa_node == self.spec.gpus[b].numa_node => {
                PcieLevel::Node
            }
            Link::NvLink(_) => PcieLevel::Sys,
        }
    }

    /// MIG-capable generations; other GPUs answer `NOT_SUPPORTED` to MIG queries.
    pub fn mig_capable(&self) -> bool {
        matches!(self.spec.family.as_str(), "ampere" | "hopper" | "blackwell")
    }

    /// Metrics of `gpu` at fixture time `t`: the idle baseline with script events applied in order.
    pub fn metrics(&self, gpu: usize, t: f64) -> Metrics {
        let mut m = Metrics {
            gpu_util: 0,
            mem_util: 0,
            mem_used_mib: 0,
            temperature_c: 31,
            power_w: self.spec.idle_power_watts,
            processes: Vec::new(),
        };
        for e in self
            .spec
            .script
            .iter()
            .filter(|e| e.gpu as usize == gpu && e.at_seconds <= t)
        {
            m.gpu_util = e.utilization_percent.unwrap_or(m.gpu_util);
            m.mem_util = e.memory_utilization_percent.unwrap_or(m.mem_util);
            m.mem_used_mib = e.memory_used_mib.unwrap_or(m.mem_used_mib);
            m.temperature_c = e.temperature_c.unwrap_or(m.temperature_c);
            m.power_w = e.power_watts.unwrap_or(m.power_w);
            if let Some(p) = &e.processes {
                m.processes = p.clone();
            }
        }
        m.mem_used_mib = m.mem_used_mib.min(self.spec.memory_mib);
        m
    }

    /// Energy in mJ since init: scripted power integrated over fixture time.
    pub fn energy_mj(&self, gpu: usize, t: f64) -> u64 {
        let mut changes: Vec<(f64, u32)> = self
            .spec
            .script
            .iter()
            .filter(|e| e.gpu as usize == gpu && e.at_seconds <= t)
            .filter_map(|e| e.power_watts.map(|w| (e.at_seconds.max(0.0), w)))
            .collect();
        changes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut since, mut watts, mut mj) =
            (0.0f64, f64::from(self.spec.idle_power_watts), 0.0f64);
        for (at, w) in changes {
            mj += watts * (at - since) * 1000.0;
            since = at;
            watts = f64::from(w);
        }
        mj += watts * (t - since).max(0.0) * 1000.0;
        mj as u64
    }

    /// Memory of one MIG instance, from its profile name (`1g.10gb` -> 10 GiB).
    pub fn mig_instance_mib(&self, gpu: usize) -> u64 {
        let Some(mig) = &self.spec.gpus[gpu].mig else {
            return 0;
        };
        mig.profile
            .split_once('.')
            .and_then(|(_, mem)| mem.trim_end_matches("gb").parse::<u64>().ok())
            .map_or(
                self.spec.memory_mib / u64::from(mig.instances.max(1)),
                |gb| gb * 1024,
            )
    }

    /// Stable UUID of MIG instance `k` of `gpu`: the parent's with the first byte of its last
    /// group replaced by `k`, so it keeps the 8-4-4-4-12 shape.
    pub fn mig_uuid(&self, gpu: usize, k: usize) -> String {
        let parent = self.spec.gpus[gpu].uuid.trim_start_matches("GPU-");
        let head = parent.get(..24).unwrap_or(parent);
        let tail = parent.get(26..).unwrap_or("");
        format!("MIG-{head}{:02x}{tail}", k % 256)
    }

    /// PCI device id (device << 16 | NVIDIA vendor id) for the fixture's model.
    pub fn pci_device_id(&self) -> u32 {
        let model = self.spec.model.as_str();
        let device = [
            ("V100-SXM2", 0x1DB5),
            ("A100-SXM4", 0x20B2),
            ("A100 80GB PCIe", 0x20B5),
            ("H100", 0x2330),
            ("L4", 0x27B8),
            ("GB200", 0x2941),
        ]
        .iter()
        .find(|(name, _)| model.contains(name))
        .map_or(0x2000, |(_, id)| *id);
        (device << 16) | 0x10DE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_api::machines::builtin;

    fn machine(name: &str) -> Machine {
        Machine::new(builtin(name).unwrap().clone()).unwrap()
    }

    #[test]
    fn dgx1_links_point_at_peers() {
        let m = machine("dgx1-v100");
        assert_eq!(m.links[0].len(), 6);
        let to3 = m.links[0].iter().filter(|r| **r == Remote::Gpu(3)).count();
        assert_eq!(to3, 2, "GPU 0 - GPU 3 is NV2");
        assert!(m.switch_pci.is_empty());
        assert_eq!(m.pcie_level(0, 5), PcieLevel::Sys);
        assert_eq!(m.pcie_level(0, 1), PcieLevel::Node);
    }

    #[test]
    fn nvswitch_links_land_on_distinct_switches() {
        let m = machine("dgx-a100");
        assert_eq!(m.switch_pci.len(), 6);
        assert!(m.links.iter().all(|l| l.len() == 12));
        for s in &m.switch_pci {
            assert!(!m.pci.contains(s), "switch {s:?} collides with a GPU");
        }
    }

    #[test]
    fn pci_ids_round_trip() {
        let p = PciAddr::parse("00000000:BD:00.0").unwrap();
        assert_eq!(p.bus, 0xBD);
        assert_eq!(p.bus_id(), "00000000:BD:00.0");
        assert_eq!(p.bus_id_legacy(), "0000:BD:00.0");
        assert!(PciAddr::parse("BD:00").is_none());
    }

    #[test]
    fn script_applies_in_time_order_and_energy_integrates() {
        let m = machine("dgx1-v100");
        assert_eq!(m.metrics(0, 0.5).gpu_util, 0);
        let busy = m.metrics(0, 1.5);
        assert_eq!(
            (busy.gpu_util, busy.mem_used_mib, busy.power_w),
            (87, 20480, 231)
        );
        assert_eq!(m.metrics(1, 5.0).gpu_util, 0);
        // 43 W for 1 s then 231 W for 1 s.
        assert_eq!(m.energy_mj(0, 2.0), 43_000 + 231_000);
    }

    #[test]
    fn mig_instances_are_sized_from_the_profile() {
        let m = machine("a100-pcie-mig");
        assert_eq!(m.mig_instance_mib(0), 10 * 1024);
        assert_eq!(m.mig_uuid(0, 3), "MIG-c3a4a326-e597-0934-b2dd-03626b68d815");
        assert_ne!(m.mig_uuid(0, 3), m.mig_uuid(0, 4));
        assert!(m.mig_capable());
    }
}
