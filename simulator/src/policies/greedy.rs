//! Baseline: per-pod greedy, no gangs. Every waiting pod is placed on its own as soon as some
//! node has room (first fit, lowest-index GPUs, arrival order, no preemption); a job runs only
//! once all of its pods are placed, and placed pods hold their GPUs meanwhile. This is what a
//! gang-unaware scheduler does to distributed jobs: partial placements that waste GPUs and,
//! when partial jobs hold everything, a deadlock.

use super::{Policy, first_gpus};
use crate::engine::{Sim, SimError};

pub struct Greedy;

impl Policy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn priority_aware(&self) -> bool {
        false
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        let waiting: Vec<usize> = sim.queue.iter().map(|k| k.2).collect();
        let mut biggest_hole = sim.free.iter().copied().max().unwrap_or(0);
        for job in waiting {
            if biggest_hole == 0 {
                break;
            }
            let sizes = sim.rt[job].pod_sizes.clone();
            for (pod, &size) in sizes.iter().enumerate() {
                if size > biggest_hole || sim.rt[job].placed.iter().any(|(p, _, _)| *p == pod) {
                    continue;
                }
                let Some(node) = sim.free.iter().position(|&f| f >= size) else {
                    continue;
                };
                let Some(gpus) = first_gpus(sim, node, size, &[]) else {
                    continue;
                };
                sim.place_pod(job, pod, node, gpus)?;
                biggest_hole = sim.free.iter().copied().max().unwrap_or(0);
            }
            if sim.rt[job].placed.len() == sizes.len() {
                sim.start(job);
            }
        }
        Ok(())
    }
}
