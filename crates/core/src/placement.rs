//! Placing one gang's members onto a working copy of free capacity, all or nothing.
//!
//! Members are grouped into shapes (identical requests and constraints). For each shape the
//! nodes that could take it are found once (through the fit index, among the nodes with enough
//! free GPUs only, see `fit_index`); a gang spanning nodes stays inside one NVLink
//! domain / rack when one can hold it, uses as few nodes as possible, and fills nodes best-fit
//! so that whole free nodes stay whole for the next big gang.

use crate::cluster::{Cluster, NodeFree};
use crate::fit_index::FitIndex;
use crate::model::{PodId, PodRequest, Resources};
pub(crate) use crate::shortfall::{Contribution, Shortfall};
pub(crate) use crate::static_fit::{LocalFits, StaticFit, StaticKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where one member goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub pod: PodId,
    /// Shared with the cluster's node (a round writes thousands of assignments).
    pub node: Arc<str>,
    /// GPU indices on `node`, ascending.
    pub gpus: Vec<u32>,
}

/// A planning cycle's scratch state over a [`Cluster`].
pub(crate) struct Work<'c> {
    pub cluster: &'c Cluster,
    pub free: Vec<NodeFree>,
    /// Gang (by planning order) holding a reservation on each node.
    pub reserved_by: Vec<Option<u32>>,
    /// When the holder of each reserved node can start there at the latest, by the declared
    /// ends of the pods in its way (`None`: unbounded, some never declared an end).
    pub reserved_until: Vec<Option<u64>>,
    /// When the gang being placed will have ended, if it declared a run time: it may use a
    /// node reserved for another gang whose `reserved_until` it ends by (EASY backfilling).
    pub backfill_end: Option<u64>,
    undo: Vec<(u32, NodeFree)>,
    /// Every node whose `free` or `reserved_by` changed, in order: facts computed when it was
    /// shorter need updating only on the nodes since (the equivalence classes keep them).
    pub changes: Vec<u32>,
    /// Nodes by free GPUs, so that placing looks only at nodes with room (`None`: scan all,
    /// as what-if copies do: they live for one check).
    pub fits: Option<FitIndex>,
    /// Static fits this round has looked up, ahead of the cluster's shared cache.
    pub(crate) local_fits: LocalFits,
}

impl<'c> Work<'c> {
    pub fn new(cluster: &'c Cluster, index_fits: bool) -> Work<'c> {
        Work {
            cluster,
            free: cluster.free.clone(),
            reserved_by: vec![None; cluster.free.len()],
            reserved_until: vec![None; cluster.free.len()],
            backfill_end: None,
            undo: Vec::new(),
            changes: Vec::new(),
            fits: index_fits.then(FitIndex::default),
            local_fits: LocalFits::default(),
        }
    }

    /// A copy sharing the static-filter cache, for what-if checks (preemption).
    pub fn fork(&self, free: Vec<NodeFree>) -> Work<'c> {
        Work {
            cluster: self.cluster,
            free,
            reserved_by: self.reserved_by.clone(),
            reserved_until: self.reserved_until.clone(),
            backfill_end: self.backfill_end,
            undo: Vec::new(),
            changes: Vec::new(),
            fits: None,
            local_fits: self.local_fits.clone(),
        }
    }

    /// Places all `pods` or none. `holder` may use nodes it has reserved.
    pub fn place(
        &mut self,
        pods: &[&PodRequest],
        holder: Option<u32>,
    ) -> Result<Vec<Assignment>, Box<Shortfall>> {
        // A gang of one shape (most are) is placed as it comes, without grouping its members.
        let mut shapes: Vec<Vec<&PodRequest>> = Vec::new();
        if !pods.windows(2).all(|w| same_shape(w[0], w[1])) {
            for p in pods {
                match shapes.iter_mut().find(|s| same_shape(s[0], p)) {
                    Some(s) => s.push(p),
                    None => shapes.push(vec![p]),
                }
            }
            // Biggest members first: they are the hardest to fit; among equals, the ones with
            // fewest eligible nodes (a member excluded from some nodes must get one of the rest).
            shapes.sort_by_cached_key(|s| {
                let eligible = self.static_fit(s[0]).nodes.len();
                (
                    std::cmp::Reverse((s[0].resources.gpus, s[0].resources.cpu_millis)),
                    eligible,
                )
            });
        }
        let count = if shapes.is_empty() {
            usize::from(!pods.is_empty())
        } else {
            shapes.len()
        };
        let checkpoint = self.undo.len();
        let mut out = Vec::with_capacity(pods.len());
        let mut domain = None;
        for k in 0..count {
            let shape = shapes.get(k).map_or(pods, Vec::as_slice);
            if let Err(shortfall) = self.place_shape(shape, holder, &mut domain, &mut out) {
                self.rollback(checkpoint);
                return Err(shortfall);
            }
        }
        self.undo.truncate(checkpoint);
        Ok(out)
    }

    fn rollback(&mut self, checkpoint: usize) {
        while self.undo.len() > checkpoint {
            if let Some((i, old)) = self.undo.pop() {
                self.free[i as usize] = old;
                self.touch(i);
            }
        }
    }

    /// Whether node `i` is held for a gang other than `holder` that the gang being placed
    /// would delay (it declares no end, or ends after the holder could start there).
    pub fn held_for_other(&self, i: u32, holder: Option<u32>) -> bool {
        let i = i as usize;
        match self.reserved_by[i] {
            Some(h) if Some(h) != holder => !matches!(
                (self.backfill_end, self.reserved_until[i]),
                (Some(end), Some(until)) if end <= until
            ),
            _ => false,
        }
    }

    /// Whether the gang being placed may backfill some node reserved this round.
    pub fn may_backfill(&self) -> bool {
        self.backfill_end.is_some_and(|end| {
            self.reserved_by
                .iter()
                .zip(&self.reserved_until)
                .any(|(by, until)| by.is_some() && until.is_some_and(|u| end <= u))
        })
    }

    /// Records that node `i`'s `free` or `reserved_by` changed.
    pub fn touch(&mut self, i: u32) {
        self.changes.push(i);
    }

    fn place_shape(
        &mut self,
        shape: &[&PodRequest],
        holder: Option<u32>,
        domain: &mut Option<u32>,
        out: &mut Vec<Assignment>,
    ) -> Result<(), Box<Shortfall>> {
        let first = shape[0];
        let res = first.resources;
        let want = u32::try_from(shape.len()).unwrap_or(u32::MAX);
        let fit = self.static_fit(first);
        if let Some(ix) = self.fits.as_mut() {
            ix.sync(self.cluster, &self.free, &self.changes);
            if want == 1 && res.gpus > 0 {
                return self.place_one(shape, &fit, holder, out);
            }
        }
        let (cands, total) = self.candidates(shape, &fit, holder, out);
        if total < want {
            return Err(self.shortfall(shape, &fit, total, holder));
        }
        let groups = if want > 1 {
            self.domain_groups(cands, want, domain)
        } else {
            vec![cands]
        };
        let mut remaining = want;
        let mut members = shape.iter();
        for mut group in groups {
            if remaining == 0 {
                break;
            }
            if remaining == 1 {
                // One member: the best-ranked node, no sorting. Rank leads with leftover
                // GPUs, so only the nodes with the fewest left need the GPU-set quality.
                let least = group.iter().map(|c| self.leftover(c.node, &res)).min();
                let best = group
                    .iter()
                    .filter(|c| res.gpus == 0 || Some(self.leftover(c.node, &res)) == least)
                    .min_by_key(|c| (self.rank(c.node, 1, &res), c.node));
                let (Some(best), Some(member)) = (best, members.next()) else {
                    continue;
                };
                if !self.assign(best.node, member, out) {
                    return Err(self.shortfall(shape, &fit, total, holder));
                }
                remaining = 0;
                break;
            }
            group.sort_by_cached_key(|c| {
                (
                    std::cmp::Reverse(c.cap),
                    self.rank(c.node, c.cap, &res),
                    c.node,
                )
            });
            let mut taken = vec![false; group.len()];
            while remaining > 0 {
                // Best fit among nodes that take all the rest; else the node taking the most.
                let whole = group
                    .iter()
                    .enumerate()
                    .take_while(|(_, c)| c.cap >= remaining)
                    .filter(|(k, _)| !taken[*k])
                    .min_by_key(|(_, c)| (self.rank(c.node, remaining, &res), c.node))
                    .map(|(k, _)| k);
                let Some(k) = whole.or_else(|| (0..group.len()).find(|&k| !taken[k])) else {
                    break;
                };
                taken[k] = true;
                let n = group[k].cap.min(remaining);
                for _ in 0..n {
                    let Some(member) = members.next() else { break };
                    if !self.assign(group[k].node, member, out) {
                        return Err(self.shortfall(shape, &fit, total, holder));
                    }
                }
                remaining -= n;
            }
        }
        if remaining > 0 {
            return Err(self.shortfall(shape, &fit, total, holder));
        }
        Ok(())
    }

    /// The nodes that can take members of `shape` now, how many each (at most all of them),
    /// and their sum. With the fit index, only nodes with enough free GPUs are looked at.
    pub(crate) fn candidates(
        &self,
        shape: &[&PodRequest],
        fit: &StaticFit,
        holder: Option<u32>,
        out: &[Assignment],
    ) -> (Vec<Cand>, u32) {
        let mut cands: Vec<Cand> = Vec::new();
        let mut total = 0u32;
        let Some(first) = shape.first() else {
            return (cands, total);
        };
        let want = u32::try_from(shape.len()).unwrap_or(u32::MAX);
        let mut consider = |i: u32| {
            let cap = self.room(i, first, want, holder, out);
            if cap > 0 {
                total = total.saturating_add(cap);
                cands.push(Cand {
                    node: i,
                    cap,
                    domain: self.cluster.hot[i as usize].domain,
                });
            }
        };
        match &self.fits {
            // Every GPU-free node is a candidate for CPU-only members: nothing to narrow.
            Some(ix) if first.resources.gpus > 0 => ix
                .at_least(first.resources.gpus)
                .filter(|&i| fit.member.get(i as usize).copied().unwrap_or(false))
                .for_each(&mut consider),
            _ => fit.nodes.iter().copied().for_each(&mut consider),
        }
        (cands, total)
    }

    /// How many of `want` members like `first` matching node `i` can take now (at most one
    /// if they go one per node, or if one is wanted): 0 if it is held for another gang or
    /// already has one of them that must go one per node.
    pub(crate) fn room(
        &self,
        i: u32,
        first: &PodRequest,
        want: u32,
        holder: Option<u32>,
        out: &[Assignment],
    ) -> u32 {
        if self.held_for_other(i, holder) {
            return 0;
        }
        if first.one_per_node
            && out
                .iter()
                .any(|a| *a.node == *self.cluster.nodes[i as usize].name)
        {
            return 0;
        }
        let free = &self.free[i as usize];
        if want == 1 || first.one_per_node {
            u32::from(free.capacity_for(&first.resources) > 0)
        } else {
            free.capacity_for(&first.resources).min(want)
        }
    }

    /// Keeps a multi-node shape inside one domain when one can hold it (preferring the domain
    /// the gang already uses, then the tightest fit); otherwise spans domains, roomiest first.
    fn domain_groups(
        &self,
        cands: Vec<Cand>,
        want: u32,
        chosen: &mut Option<u32>,
    ) -> Vec<Vec<Cand>> {
        if self.cluster.domains.is_empty() {
            return vec![cands];
        }
        // Totals by domain in an array (slot 0: nodes in none): hashing them cost a quarter
        // of a short round.
        let slot = |d: Option<u32>| d.map_or(0, |d| d as usize + 1);
        let mut sums = vec![0u32; self.cluster.domains.len() + 1];
        for c in &cands {
            let k = slot(c.domain);
            if k >= sums.len() {
                sums.resize(k + 1, 0);
            }
            sums[k] = sums[k].saturating_add(c.cap);
        }
        let domain = |k: usize| k.checked_sub(1).and_then(|d| u32::try_from(d).ok());
        let pick = chosen
            .filter(|&d| sums.get(slot(Some(d))).copied().unwrap_or(0) >= want)
            .or_else(|| {
                (1..sums.len())
                    .filter(|&k| sums[k] >= want)
                    .min_by_key(|&k| (sums[k], k))
                    .and_then(domain)
            });
        if let Some(d) = pick {
            *chosen = Some(d);
            return vec![cands.into_iter().filter(|c| c.domain == Some(d)).collect()];
        }
        // Roomiest domain first; nodes in none come first among equals (`None < Some`).
        let mut order: Vec<(u32, usize)> = (0..sums.len())
            .filter(|&k| sums[k] > 0)
            .map(|k| (sums[k], k))
            .collect();
        order.sort_by_key(|&(s, k)| (std::cmp::Reverse(s), k));
        order
            .into_iter()
            .map(|(_, k)| {
                let d = domain(k);
                cands.iter().filter(|c| c.domain == d).copied().collect()
            })
            .collect()
    }

    /// Lower is better: leftover GPUs (best fit), then GPU-set quality, then leftover CPU;
    /// CPU-only pods prefer nodes without GPUs.
    pub(crate) fn rank(&self, node: u32, pods: u32, res: &Resources) -> (u64, u64, u64) {
        let free = &self.free[node as usize];
        let hot = &self.cluster.hot[node as usize];
        if res.gpus == 0 {
            let has_gpus = u64::from(hot.has_gpus);
            return (
                has_gpus,
                free.cpu_millis - u64::from(pods) * res.cpu_millis,
                0,
            );
        }
        let free_gpus = free.gpu_budget.min(free.gpus.count_ones());
        let leftover = u64::from(free_gpus.saturating_sub(pods * res.gpus));
        let quality =
            u64::from(self.cluster.tables[hot.table as usize].best_per_pair(free.gpus, res.gpus));
        (
            leftover,
            u64::MAX - quality,
            free.cpu_millis
                .saturating_sub(u64::from(pods) * res.cpu_millis),
        )
    }

    /// GPUs left on `node` after one member of `res`: [`Work::rank`]'s first key for it.
    fn leftover(&self, node: u32, res: &Resources) -> u32 {
        let free = &self.free[node as usize];
        free.gpu_budget
            .min(free.gpus.count_ones())
            .saturating_sub(res.gpus)
    }

    pub(crate) fn assign(
        &mut self,
        node: u32,
        member: &PodRequest,
        out: &mut Vec<Assignment>,
    ) -> bool {
        let i = node as usize;
        let slot = &self.cluster.nodes[i];
        let free = self.free[i];
        let Some(mask) = slot.table.choose(free.gpus, member.resources.gpus, 0) else {
            return false;
        };
        self.undo.push((node, free));
        self.free[i].take(&member.resources, mask);
        self.touch(node);
        out.push(Assignment {
            pod: member.id.clone(),
            node: slot.name.clone(),
            gpus: crate::gpu_choice::indices_u32(mask),
        });
        true
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    node: u32,
    cap: u32,
    domain: Option<u32>,
}

/// The members that are hardest to fit (most GPUs, then most CPU) and how many share their
/// requests: what reservations and preemption size their search for.
pub(crate) fn dominant_shape<'a>(members: &[&'a PodRequest]) -> Option<(&'a PodRequest, u32)> {
    let big = *members
        .iter()
        .max_by_key(|m| (m.resources.gpus, m.resources.cpu_millis))?;
    let count = members
        .iter()
        .filter(|m| m.resources == big.resources)
        .count() as u32;
    Some((big, count))
}

pub(crate) fn same_shape(a: &PodRequest, b: &PodRequest) -> bool {
    // Lengths first: most members have no constraints at all, and comparing empty lists
    // element-wise was a tenth of a long queue's round (it runs for every member).
    a.resources == b.resources
        && a.one_per_node == b.one_per_node
        && a.selector.len() == b.selector.len()
        && a.node_terms.len() == b.node_terms.len()
        && a.tolerations.len() == b.tolerations.len()
        && (a.selector.is_empty() || a.selector == b.selector)
        && (a.node_terms.is_empty() || a.node_terms == b.node_terms)
        && (a.tolerations.is_empty() || a.tolerations == b.tolerations)
}
