//! Muster's placement core as a policy: gangs all-or-nothing, priority order, topology-aware
//! GPU and node choice, reservations against starvation, gang-aware preemption. With a queue
//! tree (`muster-queues`, `muster-hard-quota`) it plans with `plan_with_queues`: guarantees,
//! fair share, limits, and reclaim of borrowed GPUs.

use super::gang_cache::GangCache;
use super::{Policy, hopeless};
use crate::engine::{QueueKey, Sim, SimError};
use muster_core::{Assignment, GangKey, PlannerConfig, QueueTree};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct MusterConfig {
    /// Hand the core also the gangs that cannot matter to this cycle's plan (`hopeless`),
    /// only to check that leaving them out changes nothing.
    pub keep_hopeless: bool,
    pub planner: PlannerConfig,
    /// With queues only: gangs from the head of the queue handed to each planning cycle
    /// (deeper gangs wait for their turn); `None`: the whole queue. Without queues the whole
    /// queue is planned, less the gangs that cannot matter (`hopeless`); with queues no such
    /// pruning exists yet, and every queued gang costs its verdict each cycle.
    pub window: Option<usize>,
    /// The queue trees of the queue policies, when the run has queues.
    pub queues: Option<QueueTrees>,
}

impl Default for MusterConfig {
    fn default() -> Self {
        MusterConfig {
            keep_hopeless: false,
            planner: PlannerConfig::default(),
            window: Some(256),
            queues: None,
        }
    }
}

/// `borrowing`: limits as configured (`muster-queues`); `hard`: every limit at the guarantee
/// (`muster-hard-quota`).
#[derive(Clone, Debug)]
pub struct QueueTrees {
    pub borrowing: Arc<QueueTree>,
    pub hard: Arc<QueueTree>,
}

pub struct Muster {
    name: &'static str,
    config: MusterConfig,
    tree: Option<Arc<QueueTree>>,
    /// The workload's lowest priority: gangs above it may preempt.
    lowest: Option<i32>,
    /// With queues, the waiting gangs handed to the core last cycle.
    cache: GangCache,
}

impl Muster {
    /// Today's policy, no queues.
    pub fn new(config: MusterConfig) -> Muster {
        Muster {
            name: "muster",
            config,
            tree: None,
            lowest: None,
            cache: GangCache::default(),
        }
    }

    /// Planning with `tree`, reported as `name`.
    pub fn with_queues(name: &'static str, config: MusterConfig, tree: Arc<QueueTree>) -> Muster {
        Muster {
            name,
            config,
            tree: Some(tree),
            lowest: None,
            cache: GangCache::default(),
        }
    }

    /// With queues, the gangs handed to the core: the head of the whole queue, plus the head of
    /// every queue's line, so that a queue arriving behind another's flood is seen (and can
    /// reclaim) instead of waiting beyond the window.
    fn head(&self, sim: &Sim<'_>) -> Vec<usize> {
        let Some(window) = self.config.window else {
            // Every lane is part of the whole queue.
            return sim.queue.iter().map(|k| k.2).collect();
        };
        let window = window.max(1);
        let mut keys: BTreeSet<QueueKey> = sim.queue.iter().take(window).copied().collect();
        if let Some(t) = &sim.queues {
            let per_lane = (window / 8).max(1);
            for lane in &t.lanes {
                keys.extend(lane.iter().take(per_lane).copied());
            }
        }
        keys.into_iter().map(|k| k.2).collect()
    }
}

fn place(sim: &mut Sim<'_>, job: usize, assignments: &[Assignment]) -> Result<(), SimError> {
    for a in assignments {
        let pod = a
            .pod
            .0
            .rsplit_once("-p")
            .and_then(|(_, i)| i.parse::<usize>().ok());
        let node = sim.topo.index.get(&*a.node).copied();
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
        self.name
    }

    fn priority_aware(&self) -> bool {
        true
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        // Evictions are instant here, but within one plan the core holds a reclaimer's node
        // and picks reclaim candidates before knowing where they run, so a second gang of the
        // same queue may find no victim in that plan. A real scheduler plans again seconds
        // later; with queues, so do we, at the same instant, while reclaims go on.
        let passes = if self.tree.is_some() { MAX_PASSES } else { 1 };
        for _ in 0..passes {
            if !self.pass(sim)? {
                break;
            }
        }
        Ok(())
    }
}

/// Planning passes per cycle with queues (see [`Muster::cycle`]).
const MAX_PASSES: usize = 4;

impl Muster {
    /// One plan, applied. True when it reclaimed and a queue is still below its guarantee
    /// with work waiting (another pass may reclaim more).
    fn pass(&mut self, sim: &mut Sim<'_>) -> Result<bool, SimError> {
        if sim.queue.is_empty() {
            return Ok(false);
        }
        // A full cluster can only change through preemption or reclaim.
        let starved = self.tree.is_some() && sim.queues.as_ref().is_some_and(|t| t.any_starved());
        if sim.free_total() == 0
            && ((sim.queued_high_priority() == 0 && !starved) || !self.config.planner.preemption)
        {
            return Ok(false);
        }
        let mut head = if self.tree.is_some() {
            self.head(sim)
        } else {
            Vec::new()
        };
        let planner = &self.config.planner;
        let (gangs, plan) = match &self.tree {
            Some(tree) => {
                let gangs = self.cache.take(sim, &head);
                let plan = sim.cluster.plan_with_queues(&gangs, sim.now, planner, tree);
                (gangs, plan)
            }
            None if self.config.keep_hopeless => {
                head = sim.queue.iter().map(|k| k.2).collect();
                let gangs: Vec<_> = head.iter().map(|&j| sim.gang(j)).collect();
                let plan = sim.cluster.plan(&gangs, sim.now, planner);
                (gangs, plan)
            }
            None => {
                let lowest = *self
                    .lowest
                    .get_or_insert_with(|| sim.jobs.iter().map(|j| j.priority).min().unwrap_or(0));
                let mut pruned = hopeless::prune(sim, planner, lowest);
                let mut gangs: Vec<_> = pruned.jobs.iter().map(|&j| sim.gang(j)).collect();
                let mut plan = sim.cluster.plan(&gangs, sim.now, planner);
                // A reservation with a bounded start lets gangs that end in time backfill it:
                // plan again with those of them the pruning left out.
                let until = plan.waiting.iter().filter_map(|w| w.reserved_until).max();
                if let Some(until) = until {
                    let more = hopeless::backfillers(sim, planner, lowest, &pruned.jobs, until);
                    if !more.is_empty() {
                        gangs.extend(more.iter().map(|&j| sim.gang(j)));
                        pruned.jobs.extend(more);
                        plan = sim.cluster.plan(&gangs, sim.now, planner);
                    }
                }
                if pruned.exact(&plan, planner, &gangs) {
                    head = pruned.jobs;
                    (gangs, plan)
                } else {
                    tracing::debug!(
                        now = sim.now,
                        "pruned plan not exact: planning the whole queue"
                    );
                    head = sim.queue.iter().map(|k| k.2).collect();
                    let gangs: Vec<_> = head.iter().map(|&j| sim.gang(j)).collect();
                    let plan = sim.cluster.plan(&gangs, sim.now, planner);
                    (gangs, plan)
                }
            }
        };
        sim.gangs_planned = sim.gangs_planned.saturating_add(gangs.len() as u64);
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
                if p.reclaim {
                    sim.evict_reclaimed(victim);
                } else {
                    sim.evict(victim);
                }
            }
            let job = job_of(sim, &p.gang)?;
            place(sim, job, &p.assignments)?;
            if p.reclaim
                && let Some(t) = &mut sim.queues
            {
                t.started_by_reclaim(job);
            }
        }
        for p in &plan.placements {
            let job = job_of(sim, &p.gang)?;
            place(sim, job, &p.assignments)?;
        }
        drop(by_key);
        if self.tree.is_some() {
            self.cache.put_back(&head, gangs);
        }
        let reclaimed = plan.preemptions.iter().any(|p| p.reclaim);
        Ok(reclaimed && sim.queues.as_ref().is_some_and(|t| t.any_starved()))
    }
}
