//! Baseline: FIFO all-or-nothing. Strict arrival order (priorities ignored, no preemption):
//! the head job starts when all its pods fit, and nothing behind it may pass (head-of-line
//! blocking, no backfill). No topology awareness: each pod takes the first node by index with
//! enough free GPUs, and that node's lowest-index free GPUs.

use super::{Policy, first_gpus};
use crate::engine::{Sim, SimError};

pub struct Fifo;

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn priority_aware(&self) -> bool {
        false
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        while let Some(&(_, _, job)) = sim.queue.first() {
            let Some(plan) = fit_all(sim, job) else {
                break;
            };
            for (pod, node, gpus) in plan {
                sim.place_pod(job, pod, node, gpus)?;
            }
            sim.start(job);
        }
        Ok(())
    }
}

/// First-fit places for all pods of `job`, or `None` if they do not all fit now.
fn fit_all(sim: &Sim<'_>, job: usize) -> Option<Vec<(usize, usize, Vec<u32>)>> {
    let mut free = sim.free.clone();
    let mut plan: Vec<(usize, usize, Vec<u32>)> = Vec::new();
    for (pod, &size) in sim.rt[job].pod_sizes.iter().enumerate() {
        let node = free.iter().position(|&f| f >= size)?;
        let taken: Vec<u32> = plan
            .iter()
            .filter(|(_, n, _)| *n == node)
            .flat_map(|(_, _, g)| g.iter().copied())
            .collect();
        let gpus = first_gpus(sim, node, size, &taken)?;
        free[node] -= size;
        plan.push((pod, node, gpus));
    }
    Some(plan)
}
