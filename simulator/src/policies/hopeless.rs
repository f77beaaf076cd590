//! Gangs the core cannot place this cycle whatever it decides, left out of its plan: with the
//! whole queue planned every cycle, a long queue is mostly such gangs, and their verdicts
//! (which the simulator does not use) cost more than the rest of the cycle.
//!
//! A gang needing more GPUs than are free cannot be placed; at the lowest priority of the
//! workload it cannot preempt (and evictions here are instant: no pods terminate); it changes
//! the plan only by taking a starvation reservation, so such gangs are kept until the plan's
//! reservations are accounted for: [`Pruned::exact`] says whether the plan was the whole
//! queue's, else the caller plans the whole queue.

use crate::engine::{QueueKey, Sim};
use muster_core::{Plan, PlannerConfig};

pub(crate) struct Pruned {
    pub jobs: Vec<usize>,
    /// The first gang left out that might have taken a reservation.
    first_reserver: Option<QueueKey>,
}

/// `head` (in planning order) without the gangs that cannot matter to the plan.
pub(crate) fn prune(sim: &Sim<'_>, head: &[usize], config: &PlannerConfig, lowest: i32) -> Pruned {
    let free = u64::from(sim.free_total());
    let mut jobs = Vec::with_capacity(head.len());
    let mut first_reserver = None;
    let mut reservers = 0;
    for &j in head {
        let job = &sim.jobs[j];
        let gpus: u64 = sim.rt[j].pod_sizes.iter().map(|&g| u64::from(g)).sum();
        let may_reserve = config.max_reservations > 0
            && sim.now.saturating_sub(job.arrival) >= config.reserve_after_secs;
        if gpus <= free || job.priority > lowest {
            jobs.push(j);
        } else if may_reserve && reservers < config.max_reservations {
            reservers += 1;
            jobs.push(j);
        } else if may_reserve && first_reserver.is_none() {
            first_reserver = Some(sim.queue_key(j));
        }
    }
    Pruned {
        jobs,
        first_reserver,
    }
}

impl Pruned {
    /// Whether `plan` (of `self.jobs`) is the whole queue's: every gang left out that might
    /// have reserved nodes comes after all the reservations the plan could make.
    pub fn exact(&self, sim: &Sim<'_>, plan: &Plan, config: &PlannerConfig) -> bool {
        let Some(first) = self.first_reserver else {
            return true;
        };
        // Strictly before in (priority, arrival): the core breaks ties by name, not job index.
        let before = plan
            .waiting
            .iter()
            .filter(|w| !w.reserved_nodes.is_empty())
            .filter_map(|w| sim.job_of(&w.gang).ok())
            .filter(|&j| {
                let k = sim.queue_key(j);
                (k.0, k.1) < (first.0, first.1)
            })
            .count();
        before >= config.max_reservations
    }
}
