//! The core's view of waiting jobs kept from one cycle to the next: with the whole queue
//! planned every cycle, building each gang (its key, its pods' names) and freeing it again
//! cost about as much as the core's plan of it. A job's gang changes only when it is evicted
//! (a new attempt: new key, new pod names) or its declared run time left changes; both are
//! checked, so a handed-out gang is always exactly [`Sim::gang`]'s.

use crate::engine::Sim;
use muster_core::Gang;

/// What a cached gang was built from, besides what never changes for a job.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    attempt: u32,
    declared_left: Option<u64>,
}

fn stamp(sim: &Sim<'_>, job: usize) -> Stamp {
    Stamp {
        attempt: sim.rt[job].attempt,
        declared_left: sim.declared_left(job),
    }
}

#[derive(Default)]
pub(crate) struct GangCache {
    /// By job id (a lookup per waiting gang per cycle: no hashing). A job that started keeps
    /// its slot until it waits again with a new attempt: at most one gang per job.
    gangs: Vec<Option<(Stamp, Gang)>>,
    /// The stamps of the last [`GangCache::take`]'s gangs, in its order.
    taken: Vec<Stamp>,
}

impl GangCache {
    /// The gangs of `jobs`, in their order.
    pub fn take(&mut self, sim: &Sim<'_>, jobs: &[usize]) -> Vec<Gang> {
        if self.gangs.len() < sim.jobs.len() {
            self.gangs.resize_with(sim.jobs.len(), || None);
        }
        self.taken.clear();
        jobs.iter()
            .map(|&j| {
                let now = stamp(sim, j);
                self.taken.push(now);
                match self.gangs.get_mut(j).and_then(Option::take) {
                    Some((s, g)) if s == now => g,
                    _ => sim.gang(j),
                }
            })
            .collect()
    }

    /// Keeps `gangs` (of `jobs`, as [`GangCache::take`] gave them) for the next cycle.
    /// Stamped as they were taken: applying the plan may evict and requeue jobs meanwhile.
    pub fn put_back(&mut self, jobs: &[usize], gangs: Vec<Gang>) {
        let stamps = std::mem::take(&mut self.taken);
        for ((&j, s), g) in jobs.iter().zip(stamps).zip(gangs) {
            if let Some(slot) = self.gangs.get_mut(j) {
                *slot = Some((s, g));
            }
        }
    }
}
