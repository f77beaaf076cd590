//! One planning cycle: gangs in priority order, each placed whole, preempting whole
//! lower-priority gangs, or waiting with a reason.
//!
//! Starvation: a gang that has waited `reserve_after_secs` at the head of the line reserves the
//! nodes closest to fitting it; later (lower or equal priority) gangs may backfill only other
//! nodes, so the reserved nodes drain until it fits. At most `max_reservations` gangs hold
//! reservations at once, which bounds the capacity idled for them.

use crate::cluster::Cluster;
use crate::explain::{self, WaitReason};
use crate::model::{Gang, GangKey, PodId, PodRequest};
pub use crate::order::{GangOrder, OrderRank};
use crate::placement::{Assignment, Work, same_shape};
use crate::preemption;
use crate::queues::{QueueStatus, QueueWait};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerConfig {
    /// Waiting time after which the first blocked gang reserves nodes. Reserved nodes idle
    /// their free GPUs until the gang fits, so this trades average wait for a bound on the
    /// biggest gangs' wait (on the Philly-like workload: 30 min and one reservation keep the
    /// average within 10% of no reservations while 32-GPU gangs stop starving).
    pub reserve_after_secs: u64,
    /// Gangs that may hold reservations at once.
    pub max_reservations: usize,
    /// Whether higher-priority gangs may evict lower-priority ones.
    pub preemption: bool,
    /// Bound on what-if placements when minimising a victim set.
    pub max_prune_checks: usize,
    /// Gives a gang the verdict of an earlier one of its shape that could not fit, without a
    /// search (`equivalence`): the same plan, at a cost that no longer grows with the queue.
    /// Off only to check that claim.
    #[serde(default = "yes")]
    pub skip_equivalent: bool,
    /// Places gangs by looking only at nodes with room for each shape (`fit_index`), kept up
    /// to date as the round takes and gives back capacity, instead of scanning every node:
    /// the same plan at a cost that no longer grows with the cluster. Off only to check that.
    #[serde(default = "yes")]
    pub index_fits: bool,
    /// Order among gangs of equal priority.
    #[serde(default)]
    pub order: GangOrder,
    /// The run time [`GangOrder::ResponseRatio`] assumes for a gang that declares none: long, so
    /// that declaring (and being held to) a shorter one pays.
    #[serde(default = "one_day")]
    pub undeclared_runtime_secs: u64,
}

fn yes() -> bool {
    true
}

fn one_day() -> u64 {
    86_400
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            reserve_after_secs: 1800,
            max_reservations: 1,
            preemption: true,
            max_prune_checks: 32,
            skip_equivalent: true,
            order: GangOrder::default(),
            undeclared_runtime_secs: one_day(),
            index_fits: true,
        }
    }
}

/// A decision to place (part of) a gang now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GangPlacement {
    pub gang: GangKey,
    /// The first `required` assignments complete the gang's minimum (all or nothing); the
    /// rest are members beyond it, each placed on its own.
    pub required: usize,
    pub assignments: Vec<Assignment>,
}

/// A whole lower-priority gang to evict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    pub gang: GangKey,
    pub priority: i32,
    pub pods: Vec<PodId>,
    pub gpus: u32,
}

/// Evict `victims`, then `gang` goes where `assignments` say once they are gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemption {
    pub gang: GangKey,
    pub victims: Vec<Victim>,
    pub assignments: Vec<Assignment>,
    pub message: String,
    /// A queue's reclaim (its victims borrowed other queues' guarantees), not priority
    /// preemption; evicted the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reclaim: bool,
}

/// A gang that waits, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub gang: GangKey,
    pub reason: WaitReason,
    pub message: String,
    /// Nodes held for this gang so that it cannot starve.
    pub reserved_nodes: Vec<String>,
    /// When it can start on them at the latest, by the declared ends of the pods in its way;
    /// gangs that end by then may use them meanwhile. `None`: unbounded or no reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_until: Option<u64>,
    /// What its queue has to do with it, when queues are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueWait>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub placements: Vec<GangPlacement>,
    pub preemptions: Vec<Preemption>,
    pub waiting: Vec<Waiting>,
    /// Every queue's state as of the snapshot planned over (empty without queues).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStatus>,
}

impl Plan {
    pub fn waiting_for(&self, gang: &GangKey) -> Option<&Waiting> {
        self.waiting.iter().find(|w| w.gang == *gang)
    }

    pub fn placement_for(&self, gang: &GangKey) -> Option<&GangPlacement> {
        self.placements.iter().find(|p| p.gang == *gang)
    }
}

impl PlannerConfig {
    /// Where a gang created at `created_at`, declaring `runtime` seconds, stands at `now` among
    /// gangs of its priority (see [`order`]).
    pub fn rank(&self, created_at: u64, runtime: Option<u64>, now: u64) -> OrderRank {
        OrderRank::of(
            self.order,
            self.undeclared_runtime_secs,
            created_at,
            runtime,
            now,
        )
    }
}

/// Planning order: higher priority first, then by [`OrderRank`] at `now` (`config.order`,
/// then older), then by name (deterministic).
pub fn order(pending: &[Gang], now: u64, config: &PlannerConfig) -> Vec<usize> {
    // Ranks computed once, not per comparison.
    let ranks: Vec<OrderRank> = pending
        .iter()
        .map(|g| config.rank(g.created_at, g.runtime_limit, now))
        .collect();
    let mut idx: Vec<usize> = (0..pending.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (&pending[a], &pending[b]);
        y.priority
            .cmp(&x.priority)
            .then_with(|| ranks[a].cmp(&ranks[b]))
            .then_with(|| x.key.cmp(&y.key))
    });
    idx
}

impl Cluster {
    /// Plans every pending gang against the current state. Pure: the cluster is not changed.
    pub fn plan(&self, pending: &[Gang], now: u64, config: &PlannerConfig) -> Plan {
        self.plan_counted(pending, now, config).0
    }

    /// [`Cluster::plan`], and how many gangs got their verdict without a placement search.
    pub(crate) fn plan_counted(
        &self,
        pending: &[Gang],
        now: u64,
        config: &PlannerConfig,
    ) -> (Plan, usize) {
        let mut classes = crate::equivalence::Classes::default();
        let mut work = Work::new(self, config.index_fits);
        let mut plan = Plan::default();
        // Most of a long queue waits: one allocation, not a copy of the list at each doubling.
        plan.waiting.reserve(pending.len());
        let mut evicted: HashSet<GangKey> = HashSet::new();
        let mut reservations = 0;
        // Preemption can only help a gang above the lowest evictable priority, or one that can
        // count on terminating pods: skip the search for everyone else.
        let lowest_victim = self
            .gangs
            .values()
            .filter(|g| g.preemptible && !g.terminating)
            .map(|g| g.priority)
            .min();
        let any_terminating = self.gangs.values().any(|g| g.terminating);
        // One buffer for every gang's members: a long queue is mostly gangs given a verdict
        // at once, for which allocating it was a noticeable part of the cost.
        let mut members: Vec<&PodRequest> = Vec::new();
        for (rank, &gi) in order(pending, now, config).iter().enumerate() {
            let gang = &pending[gi];
            let holder = u32::try_from(rank).ok();
            // Terminating pods are not members: they are leaving (a gang restarted whole).
            let running = self.gangs.get(&gang.key).map_or(0, |g| g.live);
            let have =
                running.saturating_add(u32::try_from(gang.pending.len()).unwrap_or(u32::MAX));
            if have < gang.min_member {
                plan.waiting.push(Waiting {
                    gang: gang.key.clone(),
                    reason: WaitReason::MissingMembers,
                    message: explain::missing_members(have, gang.min_member),
                    reserved_nodes: Vec::new(),
                    reserved_until: None,
                    queue: None,
                });
                continue;
            }
            members.clear();
            members.extend(gang.pending.iter());
            let need = (gang.min_member.saturating_sub(running) as usize).min(members.len());
            work.backfill_end = gang.runtime_limit.map(|r| now.saturating_add(r));
            // A gang that may backfill a reservation can fit where its class could not.
            let use_classes = config.skip_equivalent && !work.may_backfill();
            // Members go in name order: it decides which make the minimum and where each goes.
            // A gang of one shape gets its class's verdict whichever they are, so sorting
            // waits until the gang is searched for (sorting names of gangs of tens of pods was
            // a tenth of a 10k-gang round, most of which gets verdicts).
            let uniform = use_classes && members.windows(2).all(|w| same_shape(w[0], w[1]));
            let mut sorted = !uniform;
            if sorted {
                members.sort_by(|a, b| a.id.cmp(&b.id));
            }
            let known = match members.first() {
                Some(first) if uniform && need > 0 => classes.known_uniform(&work, first, need),
                _ if use_classes => classes.known_shortfall(&work, &members[..need]),
                _ => None,
            };
            if known.is_none() && !sorted {
                members.sort_by(|a, b| a.id.cmp(&b.id));
                sorted = true;
            }
            let placed = match known {
                Some(said) => Err(said),
                None => match work.place(&members[..need], holder) {
                    Ok(a) => Ok(a),
                    Err(shortfall) => {
                        if use_classes {
                            classes.failed(&work, &members[..need], &shortfall);
                        }
                        Err(explain::shortfall(&shortfall))
                    }
                },
            };
            match placed {
                Ok(mut assignments) => {
                    let required = assignments.len();
                    // Members beyond the minimum are welcome but not required: one by one.
                    for m in &members[need..] {
                        if let Ok(mut a) = work.place(&[*m], holder) {
                            assignments.append(&mut a);
                        }
                    }
                    if !assignments.is_empty() {
                        plan.placements.push(GangPlacement {
                            gang: gang.key.clone(),
                            required,
                            assignments,
                        });
                    }
                }
                Err((reason, mut message)) => {
                    let may_help =
                        any_terminating || lowest_victim.is_some_and(|p| p < gang.priority);
                    let preempt = !reason.unresolvable() && config.preemption && may_help;
                    let waited = now.saturating_sub(gang.created_at);
                    let reserve = !reason.unresolvable()
                        && waited >= config.reserve_after_secs
                        && reservations < config.max_reservations;
                    if (preempt || reserve) && !sorted {
                        members.sort_by(|a, b| a.id.cmp(&b.id));
                    }
                    let core = &members[..need];
                    if preempt {
                        // A gang's own running pods are never its victims but may be another's:
                        // only gangs with none share their candidates.
                        let reuse = use_classes && !self.gangs.contains_key(&gang.key);
                        let known = reuse
                            .then(|| classes.known_no_victims(core, gang.priority, evicted.len()))
                            .flatten();
                        let outcome = match known {
                            Some(note) => preemption::Outcome::Impossible(note),
                            None => {
                                let o = preemption::search(
                                    &mut work, gang, core, holder, &evicted, config,
                                );
                                if let preemption::Outcome::Impossible(note) = &o
                                    && reuse
                                {
                                    classes.no_victims(core, gang.priority, evicted.len(), note);
                                }
                                o
                            }
                        };
                        match outcome {
                            preemption::Outcome::Preempt(p) => {
                                evicted.extend(p.victims.iter().map(|v| v.gang.clone()));
                                plan.preemptions.push(p);
                                continue;
                            }
                            preemption::Outcome::AwaitVictims(nodes) => {
                                plan.waiting.push(Waiting {
                                    gang: gang.key.clone(),
                                    reason: WaitReason::WaitingForVictims,
                                    message: "waiting for preempted pods to terminate".into(),
                                    reserved_nodes: nodes,
                                    reserved_until: None,
                                    queue: None,
                                });
                                continue;
                            }
                            preemption::Outcome::NotAllowed(note)
                            | preemption::Outcome::Impossible(note) => {
                                if let Some(note) = note {
                                    message.push_str("; ");
                                    message.push_str(&note);
                                }
                            }
                        }
                    }
                    let (mut reserved_nodes, mut reserved_until) = (Vec::new(), None);
                    if reserve && let Some(h) = holder {
                        (reserved_nodes, reserved_until) =
                            reserve_noted(&mut work, core, h, now, &mut message);
                        if !reserved_nodes.is_empty() {
                            reservations += 1;
                        }
                    }
                    plan.waiting.push(Waiting {
                        gang: gang.key.clone(),
                        reason,
                        message,
                        reserved_nodes,
                        reserved_until,
                        queue: None,
                    });
                }
            }
        }
        (plan, classes.skipped)
    }

    /// Records a placement decision's pods as placed (the simulator's and tests' "bind"), in
    /// the gang's queue.
    pub fn commit(
        &mut self,
        gang: &Gang,
        assignments: &[Assignment],
        now: u64,
    ) -> Result<(), crate::cluster::ClusterError> {
        if !assignments.is_empty() {
            self.set_gang_queue(&gang.key, gang.queue.clone());
        }
        for a in assignments {
            let Some(req) = gang.pending.iter().find(|p| p.id == a.pod) else {
                continue;
            };
            self.add_pod(crate::model::PlacedPod {
                id: a.pod.clone(),
                gang: gang.key.clone(),
                node: a.node.to_string(),
                resources: req.resources,
                gpus: a.gpus.clone(),
                priority: gang.priority,
                started_at: now,
                preemptible: true,
                terminating: false,
                ends_by: gang.runtime_limit.map(|r| now.saturating_add(r)),
            })?;
        }
        Ok(())
    }
}

/// Reserves nodes for a starving gang and says so in its message.
pub(crate) fn reserve_noted(
    work: &mut Work<'_>,
    core: &[&PodRequest],
    holder: u32,
    now: u64,
    message: &mut String,
) -> (Vec<String>, Option<u64>) {
    let (nodes, until) = work.reserve(core, holder, now);
    if !nodes.is_empty() {
        message.push_str(&format!(
            "; holding {} node{} so it cannot starve",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" }
        ));
        if let Some(until) = until {
            message.push_str(&format!(
                " (it can start there within {}s; gangs that declare they end sooner may use them)",
                until.saturating_sub(now)
            ));
        }
    }
    (nodes, until)
}

impl Work<'_> {
    /// Holds the nodes closest to fitting `members` (by free capacity now, then by capacity
    /// when empty) until, once drained, they can hold the biggest members' shape.
    /// Gangs that declare an end before the holder could start on these nodes may still use
    /// them (`Work::held_for_other`).
    pub(crate) fn reserve(
        &mut self,
        members: &[&PodRequest],
        holder: u32,
        now: u64,
    ) -> (Vec<String>, Option<u64>) {
        let Some((big, want)) = crate::placement::dominant_shape(members) else {
            return (Vec::new(), None);
        };
        let res = big.resources;
        let fit = self.static_fit(big);
        // (members that fit now, free GPUs now, members once empty, node): a node that cannot
        // take a member yet is still closer the more of its GPUs are already free.
        let mut cands: Vec<(u32, u32, u32, u32)> = fit
            .nodes
            .iter()
            .filter(|&&i| self.reserved_by[i as usize].is_none())
            .filter_map(|&i| {
                let slot = &self.cluster.nodes[i as usize];
                let empty = crate::cluster::NodeFree {
                    cpu_millis: slot.info.allocatable.cpu_millis,
                    memory_bytes: slot.info.allocatable.memory_bytes,
                    pods: slot.info.allocatable.pods,
                    gpu_budget: slot.info.allocatable.gpus,
                    gpus: slot.healthy,
                };
                let potential = empty.capacity_for(&res).min(want);
                let free = &self.free[i as usize];
                let now = free.capacity_for(&res).min(want);
                let free_gpus = free.gpu_budget.min(free.gpus.count_ones());
                (potential > 0).then_some((now, free_gpus, potential, i))
            })
            .collect();
        cands.sort_by_key(|&(now, free_gpus, potential, i)| {
            use std::cmp::Reverse;
            (Reverse(now), Reverse(free_gpus), Reverse(potential), i)
        });
        let mut got = 0;
        let mut chosen = Vec::new();
        for (_, _, potential, i) in cands {
            if got >= want {
                break;
            }
            got += potential;
            chosen.push(i);
        }
        if got < want {
            return (Vec::new(), None);
        }
        let until = self.start_bound(&chosen, big.resources.gpus, want, now);
        let names = chosen
            .into_iter()
            .map(|i| {
                self.reserved_by[i as usize] = Some(holder);
                self.reserved_until[i as usize] = until;
                self.touch(i);
                self.cluster.nodes[i as usize].info.name.clone()
            })
            .collect();
        (names, until)
    }
}

impl Work<'_> {
    /// The latest time by which `nodes` will have room for `want` members of `gpus` GPUs
    /// each, counting their free GPUs now and those of running pods as their declared ends
    /// pass; `None` if that takes pods that declared no end (or placed this round: their ends
    /// are not tracked, so they are taken to run on). GPUs only: CPU and memory rarely bind.
    fn start_bound(&self, nodes: &[u32], gpus: u32, want: u32, now: u64) -> Option<u64> {
        let per = gpus.max(1);
        let mut free: Vec<u32> = nodes
            .iter()
            .map(|&i| {
                let f = &self.free[i as usize];
                f.gpu_budget.min(f.gpus.count_ones())
            })
            .collect();
        let fits = |free: &[u32]| free.iter().map(|f| (f / per).min(want)).sum::<u32>() >= want;
        if fits(&free) {
            return Some(now);
        }
        let mut ends: Vec<(u64, usize, u32)> = Vec::new();
        for (k, &i) in nodes.iter().enumerate() {
            for id in &self.cluster.nodes[i as usize].pods {
                let Some(pod) = self.cluster.pod(id) else {
                    continue;
                };
                if let Some(end) = pod.ends_by {
                    ends.push((end.max(now), k, pod.resources.gpus));
                }
            }
        }
        ends.sort_unstable();
        for (end, k, g) in ends {
            free[k] = free[k].saturating_add(g);
            if fits(&free) {
                return Some(end);
            }
        }
        None
    }
}
