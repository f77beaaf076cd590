//! Muster's placement core as a policy: gangs all-or-nothing, priority order, topology-aware
//! GPU and node choice, reservations against starvation, gang-aware preemption.

use super::Policy;
use crate::engine::{Sim, SimError};
use muster_core::{Assignment, GangKey, PlannerConfig};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct MusterConfig {
    pub planner: PlannerConfig,
    /// Gangs from the head of the queue handed to each planning cycle. Bounds the cost of a
    /// cycle when the queue is long; deeper gangs wait for their turn (a real scheduler also
    /// plans a bounded window per cycle).
    pub window: usize,
}

impl Default for MusterConfig {
    fn default() -> Self {
        MusterConfig {
            planner: PlannerConfig::default(),
            window: 256,
        }
    }
}

pub struct Muster {
    config: MusterConfig,
}

impl Muster {
    pub fn new(config: MusterConfig) -> Muster {
        Muster { config }
    }
}

fn place(sim: &mut Sim<'_>, job: usize, assignments: &[Assignment]) -> Result<(), SimError> {
    for a in assignments {
        let pod = a
            .pod
            .0
            .rsplit_once("-p")
            .and_then(|(_, i)| i.parse::<usize>().ok());
        let node = sim.topo.index.get(&a.node).copied();
        let (Some(pod), Some(node)) = (pod, node) else {
            return Err(SimError::UnknownGang {
                policy: sim.policy.clone(),
                gang: format!("{} (pod {} on {})", sim.gang_key(job), a.pod, a.node),
                now: sim.now,
            });
        };
        sim.place_pod(job, pod, node, a.gpus.clone())?;
    }
    sim.start(job);
    Ok(())
}

impl Policy for Muster {
    fn name(&self) -> &'static str {
        "muster"
    }

    fn priority_aware(&self) -> bool {
        true
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        if sim.queue.is_empty() {
            return Ok(());
        }
        // A full cluster can only change through preemption.
        if sim.free_total() == 0
            && (sim.queued_high_priority() == 0 || !self.config.planner.preemption)
        {
            return Ok(());
        }
        let head: Vec<usize> = sim
            .queue
            .iter()
            .take(self.config.window.max(1))
            .map(|k| k.2)
            .collect();
        let gangs: Vec<_> = head.iter().map(|&j| sim.gang(j)).collect();
        let plan = sim.cluster.plan(&gangs, sim.now, &self.config.planner);
        let by_key: HashMap<&GangKey, usize> = gangs
            .iter()
            .map(|g| &g.key)
            .zip(head.iter().copied())
            .collect();
        let job_of = |sim: &Sim<'_>, key: &GangKey| {
            by_key
                .get(key)
                .copied()
                .ok_or_else(|| SimError::UnknownGang {
                    policy: sim.policy.clone(),
                    gang: key.to_string(),
                    now: sim.now,
                })
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            for w in &plan.waiting {
                tracing::trace!(now = sim.now, free = sim.free_total(), gang = %w.gang, reason = ?w.reason, message = %w.message, "waiting");
            }
        }
        for p in &plan.preemptions {
            for v in &p.victims {
                let victim = sim.job_of(&v.gang)?;
                sim.evict(victim);
            }
            let job = job_of(sim, &p.gang)?;
            place(sim, job, &p.assignments)?;
        }
        for p in &plan.placements {
            let job = job_of(sim, &p.gang)?;
            place(sim, job, &p.assignments)?;
        }
        Ok(())
    }
}
