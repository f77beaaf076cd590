//! Gangs the core cannot place this cycle whatever it decides, left out of its plan: with the
//! whole queue planned every cycle, a long queue is mostly such gangs, and handing them over
//! (building each gang, its verdict) would cost more than the rest of the cycle.
//!
//! A gang at the workload's lowest priority cannot preempt (and evictions here are instant:
//! no pods terminate), so it changes the plan only by being placed or by taking a starvation
//! reservation. It cannot be placed if it needs more GPUs than are free. Of the gangs of one
//! uniform shape (every pod the same size) and size, at most `free / gpus` can be placed in
//! one plan, and they are the first of their class in planning order: capacity only shrinks
//! within a plan, so once one fails the core gives every later one the same verdict
//! (`muster_core`'s equivalence classes). So the core needs only that many of each class.
//! Gangs that may take a reservation are kept until the plan's reservations are accounted
//! for: [`Pruned::exact`] says whether the plan was the whole queue's, else the caller plans
//! the whole queue.

use crate::engine::Sim;
use muster_core::{Gang, OrderRank as Rank, Plan, PlannerConfig};
use std::cmp::Reverse;
use std::collections::HashSet;

pub(crate) struct Pruned {
    pub jobs: Vec<usize>,
    /// The first gang left out that might have taken a reservation.
    first_reserver: Option<Rank>,
    lowest: i32,
    now: u64,
}

/// Where a waiting job's gang stands among the lowest priority's in the core's planning order.
fn rank(sim: &Sim<'_>, config: &PlannerConfig, job: usize) -> Rank {
    config.rank(sim.jobs[job].arrival, sim.declared_left(job), sim.now)
}

/// The first `cap` of `jobs` in planning order, and every one tied with the last of them.
fn first_in_order(mut ranked: Vec<(Rank, usize)>, cap: usize) -> Vec<usize> {
    if cap == 0 {
        return Vec::new();
    }
    if ranked.len() > cap {
        let (_, &mut (last, _), _) = ranked.select_nth_unstable_by_key(cap - 1, |r| r.0);
        ranked.retain(|r| r.0 <= last);
    }
    ranked.into_iter().map(|r| r.1).collect()
}

/// How many gangs of a class the core needs: `None` for all that fit the free GPUs.
fn class_cap(sim: &Sim<'_>, gpus: u32, free: u32, config: &PlannerConfig) -> Option<usize> {
    if gpus > free {
        return Some(0);
    }
    if gpus == 0 {
        return None;
    }
    let gpn = sim.topo.gpus_per_node.max(1);
    let uniform = gpus <= gpn || gpus.is_multiple_of(gpn);
    (uniform && config.skip_equivalent).then(|| (free / gpus) as usize)
}

/// The waiting gangs (in the queue's planning order) the plan cannot do without.
pub(crate) fn prune(sim: &Sim<'_>, config: &PlannerConfig, lowest: i32) -> Pruned {
    let free = sim.free_total();
    let mut jobs = Vec::new();
    // Above the lowest priority a gang may preempt: all are kept.
    let lowest_start = (Reverse(lowest), 0, 0);
    jobs.extend(sim.queue.range(..lowest_start).map(|k| k.2));
    let mut kept: HashSet<usize> = HashSet::new();
    for (gpus, set) in sim.classes.of_priority(lowest) {
        match class_cap(sim, gpus, free, config) {
            None => kept.extend(set.iter().map(|k| k.2)),
            Some(0) => {}
            Some(cap) => {
                let ranked = set.iter().map(|k| (rank(sim, config, k.2), k.2)).collect();
                kept.extend(first_in_order(ranked, cap));
            }
        }
    }
    // Gangs that have waited long enough may reserve nodes: of those left out so far, keep the
    // first `max_reservations` in planning order, noting the next one.
    let mut first_reserver = None;
    if config.max_reservations > 0 {
        let mut eligible: Vec<(Rank, usize)> = Vec::new();
        for key in sim.queue.range(lowest_start..) {
            let j = key.2;
            // The line is in arrival order: all later ones have waited less.
            if sim.now.saturating_sub(sim.jobs[j].arrival) < config.reserve_after_secs {
                break;
            }
            if !kept.contains(&j) {
                eligible.push((rank(sim, config, j), j));
            }
        }
        let reservers = first_in_order(eligible.clone(), config.max_reservations);
        first_reserver = eligible
            .iter()
            .filter(|(_, j)| !reservers.contains(j))
            .map(|r| r.0)
            .min();
        kept.extend(reservers);
    }
    jobs.extend(kept);
    Pruned {
        jobs,
        first_reserver,
        lowest,
        now: sim.now,
    }
}

/// Gangs left out that could backfill a reservation ending at `until`: of each class, the
/// first that fit the free GPUs among those that end by then and among those that do not (a
/// class splits in two once a reservation lets its short gangs use nodes the others cannot;
/// within each part, the argument above holds). Empty when none was left out.
pub(crate) fn backfillers(
    sim: &Sim<'_>,
    config: &PlannerConfig,
    lowest: i32,
    kept: &[usize],
    until: u64,
) -> Vec<usize> {
    let free = sim.free_total();
    let kept: HashSet<usize> = kept.iter().copied().collect();
    let ends_in_time = |j: usize| {
        sim.declared_left(j)
            .is_some_and(|d| sim.now.saturating_add(d) <= until)
    };
    let mut more = Vec::new();
    for (gpus, set) in sim.classes.of_priority(lowest) {
        let Some(cap) = class_cap(sim, gpus, free, config) else {
            continue;
        };
        for part in [true, false] {
            let ranked = set
                .iter()
                .filter(|k| ends_in_time(k.2) == part)
                .map(|k| (rank(sim, config, k.2), k.2))
                .collect();
            more.extend(
                first_in_order(ranked, cap)
                    .into_iter()
                    .filter(|j| !kept.contains(j)),
            );
        }
    }
    more
}

impl Pruned {
    /// Whether `plan` (of `gangs`, made from `self.jobs`) is the whole queue's: every gang left
    /// out that might have reserved nodes comes after all the reservations the plan could make.
    pub fn exact(&self, plan: &Plan, config: &PlannerConfig, gangs: &[Gang]) -> bool {
        let Some(first) = self.first_reserver else {
            return true;
        };
        // Strictly before in planning order: a higher priority, or a better rank at the lowest
        // (ties go by name in the core). Few gangs reserve (at most `max_reservations`): a scan
        // finds each.
        let before = plan
            .waiting
            .iter()
            .filter(|w| !w.reserved_nodes.is_empty())
            .filter_map(|w| gangs.iter().find(|g| g.key == w.gang))
            .filter(|g| {
                g.priority > self.lowest
                    || config.rank(g.created_at, g.runtime_limit, self.now) < first
            })
            .count();
        before >= config.max_reservations
    }
}
