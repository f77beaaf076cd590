//! A planning cycle with queues.
//!
//! Order: gangs whose queue stays within its guarantee go first (guaranteed work before
//! borrowing); among those, and then among the rest, the queue furthest below its fair share
//! (dominant resource, hierarchically: the child furthest below at every level from the roots
//! down); within a queue, priority then age. A gang enters only while its queue and every
//! ancestor stay within their limits. A gang that does not fit tries, in turn: reclaim (its
//! queue below its guarantee, see [`super::reclaim`]), then priority preemption of lower
//! priority gangs of its own queue only, then a reservation (at most `max_reservations` per
//! queue).

use super::ahead::Ahead;
use super::reclaim;
use super::share::fair_shares;
use super::status::{QueueWait, capacity, status};
use super::usage::{self, RunningKeys, Usage, add, of_members, sub};
use super::{Amounts, QueueTree, RESOURCES};
use crate::cluster::Cluster;
use crate::explain::{self, WaitReason};
use crate::model::{Gang, GangKey, PodRequest};
use crate::placement::{Work, same_shape};
use crate::planner::{
    GangPlacement, Plan, PlannerConfig, Preemption, Waiting, order, reserve_noted,
};
use crate::preemption::{self, Outcome};
use std::collections::{HashSet, VecDeque};
use turn::Turns;

mod turn;

impl Cluster {
    /// Plans like [`Cluster::plan`], with queues (see [`crate::queues`]). With an empty tree,
    /// exactly [`Cluster::plan`]. Running gangs count against [`Cluster::gang_queue`]; pending
    /// gangs against [`Gang::queue`], which must name a leaf queue (others wait).
    pub fn plan_with_queues(
        &self,
        pending: &[Gang],
        now: u64,
        config: &PlannerConfig,
        queues: &QueueTree,
    ) -> Plan {
        if queues.is_empty() {
            return self.plan(pending, now, config);
        }
        Round::new(self, pending, now, queues, config).run(now)
    }
}

pub(super) struct Entry<'g> {
    gang: &'g Gang,
    core: Vec<&'g PodRequest>,
    extra: Vec<&'g PodRequest>,
    running: u32,
    need: Amounts,
}

struct Round<'c, 'g> {
    cluster: &'c Cluster,
    tree: &'c QueueTree,
    config: &'c PlannerConfig,
    work: Work<'c>,
    plan: Plan,
    usage: Usage,
    shares: Vec<Amounts>,
    /// Per leaf, its gangs in priority order.
    lines: Vec<VecDeque<Entry<'g>>>,
    reservations: Vec<usize>,
    evicted: HashSet<GangKey>,
    /// Queues that placed gangs this round, for the fair-share note.
    ahead: Ahead,
    any_terminating: bool,
    /// Per queue, the lowest priority of its preemptible running gangs: whether priority
    /// preemption inside the queue can help, without a scan per blocked gang.
    lowest_preemptible: Vec<Option<i32>>,
    /// Some leaf protects what it borrows: reclaim must still run to say so.
    protected_borrowers: bool,
    /// Per leaf, uniform gang shapes (a member, how many) reclaim could not make room for this
    /// round, with the note it gave: bigger or equal gangs of that shape skip the search.
    reclaim_failed: Vec<Vec<(PodRequest, usize, Option<String>)>>,
    free_gpus_at_start: u64,
    /// Gang shapes that could not fit this round (see [`crate::equivalence`]).
    classes: crate::equivalence::Classes<'g>,
    /// Whose turn it is, kept between picks.
    turns: Turns,
    /// Usage changed since the turn order was last brought up to date.
    usage_changed: bool,
    /// Per leaf, [`reclaim::anyone_borrows`] as of the last usage change, once asked.
    borrows: Vec<Option<bool>>,
}

impl<'c, 'g> Round<'c, 'g> {
    fn new(
        cluster: &'c Cluster,
        pending: &'g [Gang],
        now: u64,
        tree: &'c QueueTree,
        config: &'c PlannerConfig,
    ) -> Self {
        let n = tree.nodes.len();
        let usage = Usage::of(tree, cluster);
        let mut plan = Plan::default();
        let mut lines: Vec<VecDeque<Entry<'g>>> = (0..n).map(|_| VecDeque::new()).collect();
        let mut asked = vec![[0u64; 3]; n];
        // Gangs a closed queue holds back: pending in its status all the same.
        let mut held_back = vec![0u32; n];
        let running_keys = RunningKeys::of(cluster);
        for gi in order(pending, now, config) {
            let gang = &pending[gi];
            let leaf = match tree.leaf(&gang.queue) {
                Ok(l) => l,
                Err(e) => {
                    plan.waiting.push(waiting(
                        gang,
                        WaitReason::Capacity,
                        format!("{e}"),
                        QueueWait::InvalidQueue,
                    ));
                    continue;
                }
            };
            if tree.nodes[leaf].closed {
                held_back[leaf] = held_back[leaf].saturating_add(1);
                plan.waiting.push(waiting(
                    gang,
                    WaitReason::Capacity,
                    format!(
                        "queue {} is closed: it admits no new gangs",
                        tree.nodes[leaf].name
                    ),
                    QueueWait::Closed,
                ));
                continue;
            }
            let running = running_keys.live(cluster, &gang.key);
            let mut members: Vec<&PodRequest> = gang.pending.iter().collect();
            // Callers mostly list members in order already: checking is cheaper than sorting.
            if !members.is_sorted_by(|a, b| a.id <= b.id) {
                members.sort_by(|a, b| a.id.cmp(&b.id));
            }
            let want = gang.min_member.saturating_sub(running) as usize;
            let extra = members.split_off(want.min(members.len()));
            let need = of_members(&members);
            asked[leaf] = add(asked[leaf], need);
            lines[leaf].push_back(Entry {
                gang,
                core: members,
                extra,
                running,
                need,
            });
        }
        // Demand: what a queue holds plus what its gangs ask, within its limit.
        let mut demand = vec![[0u64; 3]; n];
        for q in tree.postorder() {
            let node = &tree.nodes[q];
            let own = add(usage.alloc[q], asked[q]);
            let below = node
                .children
                .iter()
                .fold([0u64; 3], |a, &c| add(a, demand[c]));
            for k in 0..3 {
                demand[q][k] = own[k].max(below[k]).min(node.limit[k]);
            }
        }
        let mut lowest_preemptible: Vec<Option<i32>> = vec![None; n];
        for (key, &q) in &usage.queue_of {
            if let Some(g) = cluster
                .gangs
                .get(key)
                .filter(|g| g.preemptible && !g.terminating)
            {
                let low = &mut lowest_preemptible[q];
                *low = Some(low.map_or(g.priority, |p| p.min(g.priority)));
            }
        }
        let protected_borrowers = tree.nodes.iter().any(|q| !q.borrowed_reclaimable);
        // What running gangs outside every queue hold is not there to share out.
        let outside = cluster
            .gangs
            .iter()
            .filter(|(k, _)| !usage.queue_of.contains_key(*k))
            .fold([0u64; 3], |a, (_, g)| add(a, usage::of_gang(g)));
        let shares = fair_shares(tree, sub(capacity(cluster), outside), &demand);
        plan.queues = status(tree, &usage, &shares, &lines, &held_back);
        Round {
            cluster,
            tree,
            config,
            work: Work::new(cluster, config.index_fits),
            plan,
            usage,
            shares,
            lines,
            reservations: vec![0; n],
            evicted: HashSet::new(),
            ahead: Ahead::new(n),
            any_terminating: cluster.gangs.values().any(|g| g.terminating),
            lowest_preemptible,
            protected_borrowers,
            reclaim_failed: vec![Vec::new(); n],
            free_gpus_at_start: cluster.free_gpu_total(),
            classes: Default::default(),
            turns: Turns::new(n),
            usage_changed: false,
            borrows: vec![None; n],
        }
    }

    fn run(mut self, now: u64) -> Plan {
        let mut rank = 0u32;
        self.refresh(None);
        loop {
            let picked = self.turns.pick(self.tree);
            #[cfg(debug_assertions)]
            assert_eq!(picked, self.pick_afresh(), "kept turn order went stale");
            let Some(leaf) = picked else { break };
            let Some(entry) = self.lines[leaf].pop_front() else {
                break;
            };
            let ratio = self.turns.ratio[leaf];
            self.step(&entry, leaf, Some(rank), ratio, now);
            self.refresh(Some(leaf));
            rank = rank.saturating_add(1);
        }
        self.plan
    }

    fn step(&mut self, e: &Entry<'g>, leaf: usize, holder: Option<u32>, ratio: u64, now: u64) {
        let gang = e.gang;
        let have = e
            .running
            .saturating_add(u32::try_from(gang.pending.len()).unwrap_or(u32::MAX));
        if have < gang.min_member {
            self.plan.waiting.push(Waiting {
                gang: gang.key.clone(),
                reason: WaitReason::MissingMembers,
                message: explain::missing_members(have, gang.min_member),
                reserved_nodes: Vec::new(),
                reserved_until: None,
                queue: None,
            });
            return;
        }
        if let Some((q, k)) = self.usage.over_limit(self.tree, leaf, e.need) {
            let r = RESOURCES[k];
            let (held, limit) = (self.usage.alloc[q][k], self.tree.nodes[q].limit[k]);
            let (of, need) = r.against_limit(held, limit, e.need[k]);
            let name = &self.tree.nodes[q].name;
            let message = if held >= limit {
                let n = need.split(' ').next().unwrap_or_default();
                format!("queue {name} is at its limit {of}; the gang needs {n} more")
            } else {
                format!("queue {name} would go above its limit: {of} held, the gang needs {need}")
            };
            self.plan.waiting.push(waiting(
                gang,
                WaitReason::Capacity,
                message,
                QueueWait::AtLimit,
            ));
            return;
        }
        let known = if self.config.skip_equivalent {
            self.classes.known_shortfall(&self.work, &e.core)
        } else {
            None
        };
        let placed = match known {
            Some(said) => Err(said),
            None => self.work.place(&e.core, holder).map_err(|shortfall| {
                if self.config.skip_equivalent {
                    self.classes.failed(&self.work, &e.core, &shortfall);
                }
                explain::shortfall(&shortfall)
            }),
        };
        match placed {
            Ok(mut assignments) => {
                let required = assignments.len();
                let mut took = e.need;
                for m in &e.extra {
                    let more = of_members(&[*m]);
                    if self
                        .usage
                        .over_limit(self.tree, leaf, add(took, more))
                        .is_some()
                    {
                        continue;
                    }
                    if let Ok(mut a) = self.work.place(&[*m], holder) {
                        took = add(took, more);
                        assignments.append(&mut a);
                    }
                }
                self.usage.charge(self.tree, leaf, took);
                self.usage_changed = true;
                self.ahead.went(leaf, ratio);
                if !assignments.is_empty() {
                    self.plan.placements.push(GangPlacement {
                        gang: gang.key.clone(),
                        required,
                        assignments,
                    });
                }
            }
            Err(said) => self.blocked(e, leaf, holder, ratio, now, said),
        }
    }

    fn blocked(
        &mut self,
        e: &Entry<'_>,
        leaf: usize,
        holder: Option<u32>,
        ratio: u64,
        now: u64,
        (reason, mut message): (WaitReason, String),
    ) {
        let gang = e.gang;
        let mut queue_wait = None;
        if !reason.unresolvable() && self.config.preemption {
            if reclaim::within_guarantee(self.tree, &self.usage, leaf, e.need)
                && (self.protected_borrowers || self.anyone_borrows(leaf))
            {
                let uniform = uniform_shape(&e.core);
                let known = uniform.and_then(|(m, n)| {
                    self.reclaim_failed[leaf]
                        .iter()
                        .find(|(f, fewer, _)| *fewer <= n && same_shape(f, m))
                        .map(|(_, _, note)| note.clone())
                });
                let o = match known {
                    // A gang of this shape, no bigger, could not get room by reclaim earlier in
                    // this round; room only shrinks within a round (the next round looks again).
                    Some(note) => Outcome::Impossible(note),
                    None => {
                        let o = reclaim::search(
                            &mut self.work,
                            self.tree,
                            &self.usage,
                            gang,
                            leaf,
                            &e.core,
                            holder,
                            &self.evicted,
                            self.config,
                        );
                        if let (Outcome::Impossible(note), Some((m, n))) = (&o, uniform) {
                            self.reclaim_failed[leaf].push((m.clone(), n, note.clone()));
                        }
                        o
                    }
                };
                if let Outcome::NotAllowed(Some(_)) = &o {
                    queue_wait = Some(QueueWait::ReclaimRefused);
                }
                if self.settle(o, gang, leaf, e.need, &mut message) {
                    return;
                }
            }
            let may_help = self.any_terminating
                || self.lowest_preemptible[leaf].is_some_and(|p| p < gang.priority);
            if may_help {
                let usage = &self.usage;
                let o = preemption::search_within(
                    &mut self.work,
                    gang,
                    &e.core,
                    holder,
                    &self.evicted,
                    self.config,
                    &|key| usage.queue_of.get(key) == Some(&leaf),
                );
                if self.settle(o, gang, leaf, e.need, &mut message) {
                    return;
                }
            }
        }
        // Fair share is the reason only if the gang could have had the room that queues ahead
        // took: no more GPUs than were free when the round began.
        if matches!(reason, WaitReason::Capacity | WaitReason::Fragmentation)
            && queue_wait.is_none()
            && e.need[0] <= self.free_gpus_at_start
            && let Some(note) = self.ahead.note(self.tree, leaf, ratio)
        {
            let mut m = String::with_capacity(note.len() + 2 + message.len());
            m.push_str(note);
            m.push_str("; ");
            m.push_str(&message);
            message = m;
            queue_wait = Some(QueueWait::FairShare);
        }
        let (mut reserved_nodes, mut reserved_until) = (Vec::new(), None);
        if !reason.unresolvable()
            && now.saturating_sub(gang.created_at) >= self.config.reserve_after_secs
            && self.reservations[leaf] < self.config.max_reservations
            && let Some(h) = holder
        {
            (reserved_nodes, reserved_until) =
                reserve_noted(&mut self.work, &e.core, h, now, &mut message);
            if !reserved_nodes.is_empty() {
                self.reservations[leaf] += 1;
            }
        }
        self.plan.waiting.push(Waiting {
            gang: gang.key.clone(),
            reason,
            message,
            reserved_nodes,
            reserved_until,
            queue: queue_wait,
        });
    }

    /// Acts on an eviction search: true when the gang's verdict is given.
    fn settle(
        &mut self,
        o: Outcome,
        gang: &Gang,
        leaf: usize,
        need: Amounts,
        message: &mut String,
    ) -> bool {
        match o {
            Outcome::Preempt(p) => {
                self.preempted(p, leaf, need);
                true
            }
            Outcome::AwaitVictims(nodes) => {
                self.plan.waiting.push(Waiting {
                    gang: gang.key.clone(),
                    reason: WaitReason::WaitingForVictims,
                    message: "waiting for preempted pods to terminate".into(),
                    reserved_nodes: nodes,
                    reserved_until: None,
                    queue: None,
                });
                true
            }
            Outcome::NotAllowed(note) | Outcome::Impossible(note) => {
                if let Some(note) = note {
                    message.push_str("; ");
                    message.push_str(&note);
                }
                false
            }
        }
    }

    /// Books a preemption or reclaim: victims leave their queues, the gang joins its own.
    fn preempted(&mut self, p: Preemption, leaf: usize, need: Amounts) {
        for v in &p.victims {
            self.evicted.insert(v.gang.clone());
            if let (Some(&q), Some(g)) = (
                self.usage.queue_of.get(&v.gang),
                self.cluster.gangs.get(&v.gang),
            ) {
                let held = usage::of_gang(g);
                for c in self.tree.chain(q) {
                    self.usage.alloc[c] = sub(self.usage.alloc[c], held);
                }
            }
        }
        self.usage.charge(self.tree, leaf, need);
        self.usage_changed = true;
        self.plan.preemptions.push(p);
    }
}

/// The members' one shape and their number, when they all share it.
fn uniform_shape<'a>(members: &[&'a PodRequest]) -> Option<(&'a PodRequest, usize)> {
    let first = *members.first()?;
    members
        .iter()
        .all(|m| same_shape(first, m))
        .then_some((first, members.len()))
}

fn waiting(gang: &Gang, reason: WaitReason, message: String, q: QueueWait) -> Waiting {
    Waiting {
        gang: gang.key.clone(),
        reason,
        message,
        reserved_nodes: Vec::new(),
        reserved_until: None,
        queue: Some(q),
    }
}
