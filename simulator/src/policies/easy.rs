//! Baseline: EASY backfilling (Lifka's; what Slurm's backfill scheduler does). Jobs start in
//! queue order (priority, then arrival) while all their pods fit (first fit, topology-blind).
//! When the head job does not fit, it gets a reservation at its shadow time, the earliest
//! moment at which the running jobs' declared run times free enough GPUs for it; a job behind
//! it may start now only if it cannot delay it: it ends (by its declaration) by then, or it
//! uses only GPUs the head will not need then. No preemption.
//!
//! A running job that declares nothing never ends as far as the reservation knows; if the
//! head cannot be placed by the declared ends at all, nothing backfills (Slurm's behaviour
//! with unlimited time limits: the head's start cannot be bounded, so nobody may pass it).

use super::{Policy, first_fit, start_on};
use crate::engine::{Sim, SimError};
use std::collections::HashSet;

pub struct Easy;

impl Policy for Easy {
    fn name(&self) -> &'static str {
        "easy"
    }

    fn priority_aware(&self) -> bool {
        true
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        let head = loop {
            let Some(&(_, _, head)) = sim.queue.first() else {
                return Ok(());
            };
            match first_fit(&sim.free, &sim.rt[head].pod_sizes) {
                Some(nodes) if start_on(sim, head, &nodes)? => continue,
                _ => break head,
            }
        };
        match shadow(sim, head) {
            Some(mut reservation) => backfill(sim, &mut reservation),
            None => Ok(()),
        }
    }
}

/// The head's reservation: when it can start, and per node the GPUs free at that moment that
/// it will not take (backfilled jobs running past `at` may use only those).
struct Reservation {
    at: u64,
    spare: Vec<u32>,
}

/// The head's earliest start from the running jobs' declared ends, or `None` if they never
/// free enough for it.
fn shadow(sim: &Sim<'_>, head: usize) -> Option<Reservation> {
    let sizes = &sim.rt[head].pod_sizes;
    let mut ends: Vec<(u64, usize)> = sim
        .running
        .iter()
        .filter_map(|&j| sim.expected_end(j).map(|end| (end, j)))
        .collect();
    ends.sort_unstable();
    let mut free = sim.free.clone();
    let mut i = 0;
    while i < ends.len() {
        let at = ends[i].0;
        // Every job ending at the same second frees its GPUs before the head is tried.
        while let Some(&(_, job)) = ends.get(i).filter(|e| e.0 == at) {
            for (_, node, gpus) in &sim.rt[job].placed {
                free[*node] += gpus.len() as u32;
            }
            i += 1;
        }
        if let Some(nodes) = first_fit(&free, sizes) {
            for (&node, &size) in nodes.iter().zip(sizes) {
                free[node] -= size;
            }
            return Some(Reservation { at, spare: free });
        }
    }
    None
}

/// Starts, in queue order, every job behind the head that fits now without delaying it.
fn backfill(sim: &mut Sim<'_>, reservation: &mut Reservation) -> Result<(), SimError> {
    // Free GPUs only shrink within the cycle, and a job's GPUs fix its pods: a size that did
    // not fit (now, or on spare GPUs) will not fit later in the cycle either.
    let mut too_big_now: HashSet<u32> = HashSet::new();
    let mut too_big_spare: HashSet<u32> = HashSet::new();
    let behind: Vec<usize> = sim.queue.iter().skip(1).map(|k| k.2).collect();
    for job in behind {
        let free_total = sim.free_total();
        if free_total == 0 {
            break;
        }
        let gpus = sim.jobs[job].gpus;
        if gpus > free_total || too_big_now.contains(&gpus) {
            continue;
        }
        let Some(nodes) = first_fit(&sim.free, &sim.rt[job].pod_sizes) else {
            too_big_now.insert(gpus);
            continue;
        };
        let ends_in_time = sim
            .declared_left(job)
            .is_some_and(|d| sim.now.saturating_add(d) <= reservation.at);
        if ends_in_time {
            start_on(sim, job, &nodes)?;
            continue;
        }
        if too_big_spare.contains(&gpus) {
            continue;
        }
        let usable: Vec<u32> = sim
            .free
            .iter()
            .zip(&reservation.spare)
            .map(|(&f, &s)| f.min(s))
            .collect();
        let Some(nodes) = first_fit(&usable, &sim.rt[job].pod_sizes) else {
            too_big_spare.insert(gpus);
            continue;
        };
        if start_on(sim, job, &nodes)? {
            for (&node, &size) in nodes.iter().zip(&sim.rt[job].pod_sizes) {
                reservation.spare[node] -= size;
            }
        }
    }
    Ok(())
}
