//! How placement quality stretches a job's run time, applied identically to every policy.
//!
//! The trace's durations are taken as run times under an ideal placement. A pod whose GPUs
//! are not all NVLink-connected communicates over PCIe, so its job runs slower by a penalty
//! set by the *worst* link among its GPUs (all-reduce goes at the pace of the slowest hop).
//! A multi-node gang spread over more racks than its node count needs pays per extra rack
//! (cross-rack bandwidth). Job factor = 1 + worst pod penalty + rack penalty.

use crate::topo::Topo;
use muster_api::{Link, PcieLevel};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct SlowdownModel {
    /// Penalty of a pod whose worst GPU pair is PCIe at this level (board/PIX/PXB/PHB/NODE/SYS).
    pub pcie: [f64; 6],
    /// Penalty per rack spanned beyond the minimum.
    pub per_extra_rack: f64,
}

impl Default for SlowdownModel {
    fn default() -> Self {
        SlowdownModel {
            pcie: [0.05, 0.10, 0.15, 0.20, 0.25, 0.35],
            per_extra_rack: 0.15,
        }
    }
}

impl SlowdownModel {
    fn link_penalty(&self, link: Link) -> f64 {
        match link {
            Link::NvLink(n) if n > 0 => 0.0,
            Link::NvLink(_) => self.pcie[5],
            Link::Pcie(level) => {
                let i = PcieLevel::ALL.iter().position(|l| *l == level).unwrap_or(5);
                self.pcie[i]
            }
        }
    }

    /// Run-time factor of a job whose pods hold `pods` = (node index, GPU indices).
    pub fn factor(&self, topo: &Topo, pods: &[(usize, Vec<u32>)]) -> f64 {
        let mut worst: f64 = 0.0;
        for (_, gpus) in pods {
            for (i, &a) in gpus.iter().enumerate() {
                for &b in &gpus[i + 1..] {
                    worst = worst.max(self.link_penalty(topo.matrix.link(a as usize, b as usize)));
                }
            }
        }
        let mut nodes: Vec<usize> = pods.iter().map(|(n, _)| *n).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut racks: Vec<usize> = nodes.iter().map(|&n| topo.rack[n]).collect();
        racks.sort_unstable();
        racks.dedup();
        let per_rack = topo.names.len().div_ceil(topo.racks.max(1)).max(1);
        let min_racks = nodes.len().div_ceil(per_rack).max(1);
        let extra = racks.len().saturating_sub(min_racks) as f64;
        1.0 + worst + extra * self.per_extra_rack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvlink_is_free_pcie_and_racks_cost() {
        let m = SlowdownModel::default();
        let a100 = Topo::new("dgx-a100", 4, Some(2)).unwrap();
        assert_eq!(m.factor(&a100, &[(0, vec![0, 1, 2, 3])]), 1.0);
        assert_eq!(
            m.factor(&a100, &[(0, (0..8).collect()), (1, (0..8).collect())]),
            1.0
        );
        // Nodes 0 and 2 are in different racks, although one rack holds two nodes.
        let spread = m.factor(&a100, &[(0, (0..8).collect()), (2, (0..8).collect())]);
        assert!((spread - 1.15).abs() < 1e-9, "{spread}");
        let l4 = Topo::new("l4-pcie-2s", 1, None).unwrap();
        assert_eq!(m.factor(&l4, &[(0, vec![0])]), 1.0);
        assert!((m.factor(&l4, &[(0, vec![0, 1])]) - 1.10).abs() < 1e-9);
        assert!((m.factor(&l4, &[(0, vec![0, 4])]) - 1.35).abs() < 1e-9);
    }
}
