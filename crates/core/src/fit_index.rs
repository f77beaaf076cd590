//! Nodes by free GPUs, kept up to date through a planning round (issue #18).
//!
//! Placing a gang used to scan every node for room. A member needing `g` GPUs can only go to a
//! node with at least `g` free, and best fit takes the node with the fewest left: so nodes are
//! kept in buckets by free GPUs, and a shape looks only at the buckets from `g` up (a single
//! member stops at the first bucket holding a node it may use). The buckets follow the round's
//! changes (`Work::changes`: placements, rolled-back attempts, preemptors' holds,
//! reservations), so capacity taken and given back alike moves nodes between buckets, at a
//! cost of the nodes changed rather than of the cluster. A single-member shape placed often
//! also keeps each bucket's nodes ordered by rank (`Ranked`), so that placing one takes the
//! first usable node rather than ranking the whole bucket.
//!
//! Only free GPUs are indexed: CPU, memory, pod slots, static filters and reservations are
//! still checked node by node on the candidates, so candidates are exactly the nodes a full
//! scan would find (`tests/fit_index.rs` checks plans with and without the index are equal).

use crate::cluster::{Cluster, NodeFree};
use crate::model::{PodRequest, Resources};
use crate::placement::{Assignment, Shortfall, StaticFit, Work};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Most GPUs a node can have (`GpuMask` is 64 bits wide).
const MAX_GPUS: usize = 64;

/// Single-member shapes whose candidates are kept ordered (`Ranked`) in one round.
const MAX_SHAPES: usize = 16;

/// Members of a shape placed by ranking whole buckets before its buckets are kept ordered:
/// ordering a bucket costs a few rankings of it, so one-off shapes are not worth it.
const ORDER_AFTER: u32 = 4;

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
    /// Single-member shapes' candidates in rank order, for shapes placed often this round.
    ranked: Vec<Ranked>,
    /// Single members of each other shape placed by ranking a whole bucket this round, by
    /// resources and static filters (the address of the cluster's shared `StaticFit`, kept
    /// alive here).
    scanned: HashMap<(Resources, usize), (Arc<StaticFit>, u32)>,
}

/// [`Work::rank`] of a node for one member.
type Rank = (u64, u64, u64);

/// One single-member shape's nodes with room, bucket by bucket in the order a scan would
/// choose them (rank, then node), so that placing one member takes the first usable node
/// instead of ranking the whole bucket: most placements in a long queue are single members,
/// and each took a bucket of hundreds of nodes. Buckets are ordered on first use.
#[derive(Debug)]
struct Ranked {
    res: Resources,
    fit: Arc<StaticFit>,
    /// By bucket: `None` until first used.
    sets: Vec<Option<BTreeSet<(Rank, u32)>>>,
    /// Each node's bucket and rank while it is in a set.
    entry: Vec<Option<(u8, Rank)>>,
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

impl FitIndex {
    /// The first node in rank order (ties to the lowest node) that can take one `member`,
    /// from the fullest bucket with one: the node a scan of every node would choose.
    fn best_single(
        &mut self,
        work: &Work<'_>,
        member: &PodRequest,
        fit: &Arc<StaticFit>,
        holder: Option<u32>,
        out: &[Assignment],
    ) -> Option<u32> {
        let res = member.resources;
        let same = |r: &Ranked| r.res == res && Arc::ptr_eq(&r.fit, fit);
        let at = match self.ranked.iter().position(same) {
            Some(at) => at,
            None if self.scanned(member, fit) < ORDER_AFTER || self.ranked.len() >= MAX_SHAPES => {
                return self.scan_single(work, member, fit, holder, out);
            }
            None => {
                self.ranked.push(Ranked {
                    res: member.resources,
                    fit: fit.clone(),
                    sets: vec![None; MAX_GPUS + 1],
                    entry: vec![None; work.free.len()],
                    seen: work.changes.len(),
                });
                self.ranked.len() - 1
            }
        };
        let ranked = self.ranked.get_mut(at)?;
        ranked.sync(work);
        for k in member.resources.gpus as usize..=MAX_GPUS {
            if ranked.sets.get(k).is_some_and(Option::is_none) {
                let nodes = self.buckets.get(k).map_or(&[][..], Vec::as_slice);
                ranked.order(work, k, nodes);
            }
            let Some(Some(set)) = ranked.sets.get(k) else {
                continue;
            };
            // Usable: not held for another gang, not already holding one of its members if
            // they go one per node (room checks the rest again, cheaply).
            let found = set
                .iter()
                .map(|&(_, i)| i)
                .find(|&i| work.room(i, member, 1, holder, out) > 0);
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

impl FitIndex {
    /// How many members like `member` were placed by [`FitIndex::scan_single`] before this
    /// one, counting this one.
    fn scanned(&mut self, member: &PodRequest, fit: &Arc<StaticFit>) -> u32 {
        let key = (member.resources, Arc::as_ptr(fit) as usize);
        let count = &mut self
            .scanned
            .entry(key)
            .or_insert_with(|| (fit.clone(), 0))
            .1;
        *count = count.saturating_add(1);
        *count
    }

    /// [`FitIndex::best_single`] without the ordered sets: ranks every usable node of the
    /// fullest bucket with one.
    fn scan_single(
        &self,
        work: &Work<'_>,
        member: &PodRequest,
        fit: &StaticFit,
        holder: Option<u32>,
        out: &[Assignment],
    ) -> Option<u32> {
        (member.resources.gpus..=MAX_GPUS as u32).find_map(|k| {
            self.bucket(k)
                .iter()
                .copied()
                .filter(|&i| fit.member.get(i as usize).copied().unwrap_or(false))
                .filter(|&i| work.room(i, member, 1, holder, out) > 0)
                .min_by_key(|&i| (work.rank(i, 1, &member.resources), i))
        })
    }
}

impl Ranked {
    /// The rank of node `i` if it belongs in a set: it matches the shape and has room.
    fn rank(&self, work: &Work<'_>, i: u32) -> Option<Rank> {
        let member = self.fit.member.get(i as usize).copied().unwrap_or(false);
        let room = work.free.get(i as usize)?.capacity_for(&self.res) > 0;
        (member && room).then(|| work.rank(i, 1, &self.res))
    }

    /// Orders bucket `k` (its `nodes`, as of now).
    fn order(&mut self, work: &Work<'_>, k: usize, nodes: &[u32]) {
        let Ok(bucket) = u8::try_from(k) else {
            return;
        };
        let mut ranked = Vec::with_capacity(nodes.len());
        for &i in nodes {
            if let Some(rank) = self.rank(work, i) {
                ranked.push((rank, i));
                if let Some(e) = self.entry.get_mut(i as usize) {
                    *e = Some((bucket, rank));
                }
            }
        }
        // Built from a sorted list at once: cheaper than inserting one by one.
        ranked.sort_unstable();
        if let Some(slot) = self.sets.get_mut(k) {
            *slot = Some(BTreeSet::from_iter(ranked));
        }
    }

    /// Moves the nodes changed since the last call to their new place in the ordered sets.
    fn sync(&mut self, work: &Work<'_>) {
        for &i in work.changes.get(self.seen..).unwrap_or_default() {
            let Some(e) = self.entry.get_mut(i as usize) else {
                continue;
            };
            if let Some((b, rank)) = e.take()
                && let Some(Some(set)) = self.sets.get_mut(usize::from(b))
            {
                set.remove(&(rank, i));
            }
            let Some(free) = work.free.get(i as usize) else {
                continue;
            };
            let b = bucket_of(free);
            if !matches!(self.sets.get(usize::from(b)), Some(Some(_))) {
                continue;
            }
            if let Some(rank) = self.rank(work, i)
                && let Some(Some(set)) = self.sets.get_mut(usize::from(b))
            {
                set.insert((rank, i));
                if let Some(e) = self.entry.get_mut(i as usize) {
                    *e = Some((b, rank));
                }
            }
        }
        self.seen = work.changes.len();
    }
}

impl Work<'_> {
    /// Places a single member needing GPUs where a scan would: among the nodes it may use,
    /// those with the fewest GPUs left after it (the first bucket from its GPUs up holding
    /// one), the best ranked, ties to the lowest node.
    pub(crate) fn place_one(
        &mut self,
        shape: &[&PodRequest],
        fit: &Arc<StaticFit>,
        holder: Option<u32>,
        out: &mut Vec<Assignment>,
    ) -> Result<(), Box<Shortfall>> {
        let Some(&member) = shape.first() else {
            return Ok(());
        };
        // Taken out while it reads the rest of the work.
        let best = self.fits.take().and_then(|mut ix| {
            let best = ix.best_single(self, member, fit, holder, out);
            self.fits = Some(ix);
            best
        });
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
