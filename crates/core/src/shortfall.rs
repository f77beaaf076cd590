//! Why a shape did not fit: the facts its explanation is written from, counted over the
//! nodes that match it, and each node's share of them (which the equivalence classes keep up
//! to date as capacity changes).

use crate::model::{LabelRequirement, PodRequest, Resources};
use crate::placement::{StaticFit, Work};

/// Why a shape did not fit: the facts explanations are written from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shortfall {
    pub pods: u32,
    pub resources: Resources,
    pub selector: Vec<LabelRequirement>,
    /// Members of this shape that fit right now (0..pods).
    pub fit_now: u32,
    pub nodes_total: usize,
    pub matching_nodes: usize,
    pub rejected_unschedulable: usize,
    pub rejected_selector: usize,
    pub rejected_taints: usize,
    pub reserved_nodes_skipped: usize,
    /// Free GPUs on matching nodes.
    pub free_gpus: u64,
    /// Matching nodes with at least `resources.gpus` free GPUs.
    pub nodes_with_room: usize,
    /// Most GPUs any matching node has at all (healthy, allocatable).
    pub largest_node_gpus: u32,
    /// Healthy allocatable GPUs on all matching nodes.
    pub matching_gpus_total: u64,
}

/// One node's share of a [`Shortfall`]'s changing facts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Contribution {
    /// Members it could take now (`fit_now`).
    pub fit: u32,
    /// Held for another gang (`reserved_nodes_skipped`).
    pub reserved: u32,
    pub free_gpus: u32,
    /// Has room for one member's GPUs (`nodes_with_room`).
    pub room: u32,
}

impl Work<'_> {
    /// What matching node `i` adds to the facts of a shortfall of `want` members like `first`
    /// (of a gang holding no reservation), as [`Work::place`] counts them.
    pub fn contribution(&self, i: u32, first: &PodRequest, want: u32) -> Contribution {
        let free = &self.free[i as usize];
        let res = &first.resources;
        let free_gpus = free.gpu_budget.min(free.gpus.count_ones());
        let room = u32::from(free_gpus >= res.gpus && res.gpus > 0);
        if self.reserved_by[i as usize].is_some() {
            return Contribution {
                fit: 0,
                reserved: 1,
                free_gpus,
                room,
            };
        }
        let fit = if want == 1 || first.one_per_node {
            u32::from(free.capacity_for(res) > 0)
        } else {
            free.capacity_for(res).min(want)
        };
        Contribution {
            fit,
            reserved: 0,
            free_gpus,
            room,
        }
    }

    pub(crate) fn shortfall(
        &self,
        shape: &[&PodRequest],
        fit: &StaticFit,
        fit_now: u32,
        holder: Option<u32>,
    ) -> Box<Shortfall> {
        let res = shape[0].resources;
        let mut sf = Shortfall {
            pods: u32::try_from(shape.len()).unwrap_or(u32::MAX),
            resources: res,
            selector: shape[0].selector.clone(),
            fit_now,
            nodes_total: self.cluster.node_count(),
            matching_nodes: fit.nodes.len(),
            rejected_unschedulable: fit.unschedulable,
            rejected_selector: fit.selector,
            rejected_taints: fit.taints,
            ..Shortfall::default()
        };
        for &i in &fit.nodes {
            let free = &self.free[i as usize];
            let slot = &self.cluster.nodes[i as usize];
            let free_gpus = free.gpu_budget.min(free.gpus.count_ones());
            let all = slot.info.allocatable.gpus.min(slot.healthy.count_ones());
            sf.free_gpus += u64::from(free_gpus);
            sf.matching_gpus_total += u64::from(all);
            sf.largest_node_gpus = sf.largest_node_gpus.max(all);
            if free_gpus >= res.gpus && res.gpus > 0 {
                sf.nodes_with_room += 1;
            }
            if self.held_for_other(i, holder) {
                sf.reserved_nodes_skipped += 1;
            }
        }
        Box::new(sf)
    }
}
