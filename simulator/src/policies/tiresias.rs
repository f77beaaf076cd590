//! Baseline: Tiresias' discretized two-dimensional least-attained-service policy (Gu et al.,
//! NSDI '19). A job's attained service is GPUs x seconds run, over all its runs; jobs are
//! ranked by the level their service falls in (`LEVELS_GPU_HOURS`), then by arrival, and the
//! cluster runs the best-ranked jobs whose GPUs add up to its capacity: a job that has had
//! less service preempts one that has had more, freely, whatever their priorities (without
//! Tiresias' optional starvation guard). All-or-nothing, first-fit, topology-blind placement; a
//! preempted job resumes from its last checkpoint, like every preemption in this simulator.

use super::{Policy, first_fit, start_on};
use crate::engine::{Phase, Sim, SimError};
use std::collections::{HashMap, HashSet};

/// Upper bounds of the levels but the last, in GPU-hours of attained service.
pub const LEVELS_GPU_HOURS: [f64; 2] = [1.0, 10.0];

#[derive(Default)]
pub struct Tiresias {
    /// GPU-seconds of runs that ended in an eviction (runs in progress are added on reading).
    attained: HashMap<usize, f64>,
}

impl Tiresias {
    fn level(&self, sim: &Sim<'_>, job: usize) -> usize {
        let mut service = self.attained.get(&job).copied().unwrap_or(0.0);
        if let Phase::Running { start } = sim.rt[job].phase {
            service += (sim.now - start) as f64 * f64::from(sim.jobs[job].gpus);
        }
        let hours = service / 3600.0;
        LEVELS_GPU_HOURS
            .iter()
            .position(|&bound| hours < bound)
            .unwrap_or(LEVELS_GPU_HOURS.len())
    }

    fn evict(&mut self, sim: &mut Sim<'_>, job: usize) {
        if let Phase::Running { start } = sim.rt[job].phase {
            let ran = (sim.now - start) as f64 * f64::from(sim.jobs[job].gpus);
            *self.attained.entry(job).or_default() += ran;
        }
        sim.evict(job);
    }
}

impl Policy for Tiresias {
    fn name(&self) -> &'static str {
        "tiresias"
    }

    fn priority_aware(&self) -> bool {
        false
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        if sim.queue.is_empty() {
            return Ok(());
        }
        // Rank every active job; the best ranked that fit the capacity should run.
        let mut ranked: Vec<(usize, u64, usize)> = sim
            .running
            .iter()
            .copied()
            .chain(sim.queue.iter().map(|k| k.2))
            .map(|j| (self.level(sim, j), sim.jobs[j].arrival, j))
            .collect();
        ranked.sort_unstable();
        let mut budget = sim.topo.gpu_total();
        let mut wanted = Vec::new();
        let mut keep: HashSet<usize> = HashSet::new();
        for &(_, _, job) in &ranked {
            let gpus = u64::from(sim.jobs[job].gpus);
            if gpus <= budget {
                budget -= gpus;
                keep.insert(job);
                if !sim.running.contains(&job) {
                    wanted.push(job);
                }
            }
        }
        // Running jobs outside the set (the worst ranked is popped first): evicted only as wanted jobs need
        // their GPUs (an eviction that would not let a wanted job fit is not made).
        let mut victims: Vec<usize> = ranked
            .iter()
            .map(|r| r.2)
            .filter(|j| sim.running.contains(j) && !keep.contains(j))
            .collect();
        for job in wanted {
            let sizes = &sim.rt[job].pod_sizes;
            if first_fit(&sim.free, sizes).is_none() {
                // Evict only if the worst-ranked victims would make room; else nobody.
                let mut free = sim.free.clone();
                let needed = victims.iter().rev().position(|&v| {
                    for (_, node, gpus) in &sim.rt[v].placed {
                        free[*node] += gpus.len() as u32;
                    }
                    first_fit(&free, sizes).is_some()
                });
                let Some(last) = needed else {
                    continue;
                };
                for _ in 0..=last {
                    if let Some(victim) = victims.pop() {
                        self.evict(sim, victim);
                    }
                }
            }
            if let Some(nodes) = first_fit(&sim.free, &sim.rt[job].pod_sizes) {
                start_on(sim, job, &nodes)?;
            }
        }
        // Work-conserving: whatever still fits runs, in rank order.
        for &(_, _, job) in &ranked {
            if sim.free_total() == 0 {
                break;
            }
            if matches!(sim.rt[job].phase, Phase::Waiting)
                && let Some(nodes) = first_fit(&sim.free, &sim.rt[job].pod_sizes)
            {
                start_on(sim, job, &nodes)?;
            }
        }
        Ok(())
    }
}
