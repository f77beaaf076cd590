//! Nodes by free GPUs, kept up to date through a planning round (issue #18).
//!
//! Placing a gang used to scan every node for room. A member needing `g` GPUs can only go to a
//! node with at least `g` free, and best fit takes the node with the fewest left: so nodes are
//! kept in buckets by free GPUs, and a shape looks only at the buckets from `g` up (a single
//! member stops at the first bucket holding a node it may use). The buckets follow the round's
//! changes (`Work::changes`: placements, rolled-back attempts, preemptors' holds,
//! reservations), so capacity taken and given back alike moves nodes between buckets, at a
//! cost of the nodes changed rather than of the cluster.
//!
//! Only free GPUs are indexed: CPU, memory, pod slots, static filters and reservations are
//! still checked node by node on the candidates, so candidates are exactly the nodes a full
//! scan would find (`tests/fit_index.rs` checks plans with and without the index are equal).

use crate::cluster::{Cluster, NodeFree};
use crate::model::PodRequest;
use crate::placement::{Assignment, Shortfall, StaticFit, Work};

/// Most GPUs a node can have (`GpuMask` is 64 bits wide).
const MAX_GPUS: usize = 64;

/// Marks a node in no bucket (not present in the cluster).
const NOWHERE: u8 = u8::MAX;

/// Free whole GPUs: what placement counts (the budget may be below the free healthy GPUs).
pub(crate) fn free_gpus(free: &NodeFree) -> u32 {
    free.gpu_budget.min(free.gpus.count_ones())
}

/// Present nodes in buckets by free GPUs. Built on first use, so rounds that never search
/// for a placement do not pay for it.
#[derive(Debug, Default)]
pub(crate) struct FitIndex {
    built: bool,
    /// `buckets[k]`: the nodes with exactly `k` free GPUs, in no particular order (placement
    /// breaks every tie by node, so the order cannot change a plan).
    buckets: Vec<Vec<u32>>,
    /// Each node's bucket (`NOWHERE`: none) and place in it, for O(1) moves.
    at: Vec<(u8, u32)>,
    /// How much of `Work::changes` is reflected.
    seen: usize,
}

impl FitIndex {
    /// Brings the buckets up to date with `free`, given the nodes changed since the last call.
    pub fn sync(&mut self, cluster: &Cluster, free: &[NodeFree], changes: &[u32]) {
        if !self.built {
            self.build(cluster, free);
            self.seen = changes.len();
            return;
        }
        for &i in changes.get(self.seen..).unwrap_or_default() {
            let Some(f) = free.get(i as usize) else {
                continue;
            };
            let Some(&(bucket, _)) = self.at.get(i as usize) else {
                continue;
            };
            let now = bucket_of(f);
            if bucket != NOWHERE && bucket != now {
                self.remove(i);
                self.insert(i, now);
            }
        }
        self.seen = changes.len();
    }

    fn build(&mut self, cluster: &Cluster, free: &[NodeFree]) {
        self.buckets = vec![Vec::new(); MAX_GPUS + 1];
        self.at = vec![(NOWHERE, 0); free.len()];
        for (i, (slot, f)) in cluster.nodes.iter().zip(free).enumerate() {
            if slot.present
                && let Ok(i) = u32::try_from(i)
            {
                self.insert(i, bucket_of(f));
            }
        }
        self.built = true;
    }

    fn insert(&mut self, node: u32, bucket: u8) {
        let Some(list) = self.buckets.get_mut(usize::from(bucket)) else {
            return;
        };
        let pos = u32::try_from(list.len()).unwrap_or(u32::MAX);
        list.push(node);
        if let Some(at) = self.at.get_mut(node as usize) {
            *at = (bucket, pos);
        }
    }

    fn remove(&mut self, node: u32) {
        let Some(&(bucket, pos)) = self.at.get(node as usize) else {
            return;
        };
        let Some(list) = self.buckets.get_mut(usize::from(bucket)) else {
            return;
        };
        list.swap_remove(pos as usize);
        // The last node took the removed one's place.
        if let Some(&moved) = list.get(pos as usize)
            && let Some(at) = self.at.get_mut(moved as usize)
        {
            at.1 = pos;
        }
        if let Some(at) = self.at.get_mut(node as usize) {
            *at = (NOWHERE, 0);
        }
    }

    /// The nodes with exactly `k` free GPUs.
    pub fn bucket(&self, k: u32) -> &[u32] {
        self.buckets.get(k as usize).map_or(&[], Vec::as_slice)
    }

    /// Every node with at least `gpus` free GPUs.
    pub fn at_least(&self, gpus: u32) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .get(gpus as usize..)
            .unwrap_or_default()
            .iter()
            .flatten()
            .copied()
    }
}

fn bucket_of(free: &NodeFree) -> u8 {
    u8::try_from(free_gpus(free).min(MAX_GPUS as u32)).unwrap_or(NOWHERE)
}

impl Work<'_> {
    /// Places a single member needing GPUs where a scan would: among the nodes it may use,
    /// those with the fewest GPUs left after it (the first bucket from its GPUs up holding
    /// one), the best ranked, ties to the lowest node.
    pub(crate) fn place_one(
        &mut self,
        shape: &[&PodRequest],
        fit: &StaticFit,
        holder: Option<u32>,
        out: &mut Vec<Assignment>,
    ) -> Result<(), Box<Shortfall>> {
        let Some(&member) = shape.first() else {
            return Ok(());
        };
        let res = member.resources;
        let mut best = None;
        if let Some(ix) = &self.fits {
            for k in res.gpus..=MAX_GPUS as u32 {
                best = ix
                    .bucket(k)
                    .iter()
                    .copied()
                    .filter(|&i| fit.member.get(i as usize).copied().unwrap_or(false))
                    .filter(|&i| self.room(i, member, 1, holder, out) > 0)
                    .min_by_key(|&i| (self.rank(i, 1, &res), i));
                if best.is_some() {
                    break;
                }
            }
        }
        if let Some(node) = best
            && self.assign(node, member, out)
        {
            return Ok(());
        }
        // The facts of the shortfall count every candidate: rare, and as dear as the scan.
        let (_, total) = self.candidates(shape, fit, holder, out);
        Err(self.shortfall(shape, fit, total, holder))
    }
}
