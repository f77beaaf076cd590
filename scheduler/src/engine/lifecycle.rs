//! A gang plan's lifecycle: what a live plan is, and what becomes of it.
//!
//! ```text
//! planned ──members reach bind──► at barrier ──every required member arrived──► releasing
//!    │                                │                                            │
//!    └── stale / unclaimed ───────────┴── barrier timeout ──► dropped (re-planned) │
//!                                                                                  ▼
//!                                       a member cannot be bound ──► rolled back ◄─┤
//!                                                                                  ▼
//!                                                                      bound (forgotten)
//! ```
//!
//! [`decide`] is the one transition function: a pure function of the plan, what the API
//! server shows now (through [`World`]) and the clock. Each call derives the plan's fate from
//! that state alone (level-triggered), so a missed watch event or a restart converges.

use crate::gang::GangSource;
use muster_core::{GangKey, NodeInfo, Resources, TaintEffect, Toleration};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One planned pod.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub gpus: Vec<u32>,
    pub gpu_ids: Vec<String>,
    pub resources: Resources,
    /// Part of the gang's minimum: the barrier waits for every required slot. Members beyond
    /// the minimum are not required: they bind with the minimum if they arrived by then, and
    /// alone afterwards.
    pub required: bool,
}

pub(crate) type Waiter = oneshot::Sender<Result<(), String>>;

/// A gang's plan between planning and binding. Slots are keyed by pod UID.
pub(crate) struct LivePlan {
    pub pods: HashMap<String, Slot>,
    pub priority: i32,
    pub queue: String,
    pub created_at: u64,
    /// The gang's minimum when the plan was made: an edited PodGroup makes the plan stale.
    pub min_member: u32,
    /// Where the gang is defined (to see whether its group was deleted or edited).
    pub source: GangSource,
    pub made: Instant,
    /// When the first member reached bind: the barrier timeout counts from here.
    pub first_arrival: Option<Instant>,
    pub arrived: HashMap<String, Waiter>,
    /// The minimum's Bindings were sent; the plan is kept (its pods as assumed) until the
    /// cache shows them bound.
    pub released: bool,
    /// Slots whose Binding was sent (or is being sent).
    pub sent: HashSet<String>,
}

impl LivePlan {
    /// Every required member is waiting at the barrier.
    pub fn barrier_complete(&self) -> bool {
        self.pods
            .iter()
            .filter(|(_, s)| s.required)
            .all(|(uid, _)| self.arrived.contains_key(uid))
    }
}

/// A pod as the API server shows it now.
#[derive(Clone, Debug, Default)]
pub(crate) struct PodFacts {
    pub uid: String,
    pub terminating: bool,
    pub node: Option<String>,
    pub tolerations: Vec<Toleration>,
}

/// What [`decide`] reads of the cluster.
pub(crate) trait World {
    fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts>;
    /// The node as placement sees it (taints, GPUs and their health); `schedulable` false
    /// when it is cordoned.
    fn node(&self, name: &str) -> Option<NodeInfo>;
    /// The gang's minimum now, or why it cannot be planned (group deleted, invalid).
    fn gang_min(&self, gang: &GangKey, source: &GangSource) -> Result<u32, String>;
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// From the first arrival at the barrier until the plan is dropped.
    pub barrier: Duration,
    /// A plan no member reached bind for is dropped after this long.
    pub unclaimed: Duration,
    /// A planned pod absent from the cache for this long after planning was deleted (the pod
    /// asking in filter may be planned before the watch delivers it).
    pub watch_grace: Duration,
    /// A released plan whose pods never show up bound is forgotten after this long.
    pub released: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Transition {
    Keep,
    /// Released and every sent member shows bound (or the plan outlived its release): the
    /// pods now hold their resources as bound pods.
    Forget,
    /// Nothing was bound: drop the plan, answer waiting binds with `reason`, re-plan whole.
    Drop {
        reason: String,
        timed_out: bool,
    },
}

/// The plan's next step given the cluster now.
pub(crate) fn decide(
    gang: &GangKey,
    plan: &LivePlan,
    world: &dyn World,
    now: Instant,
    timing: Timing,
) -> Transition {
    let age = now.saturating_duration_since(plan.made);
    if plan.released {
        let all_bound = plan.sent.iter().all(|uid| {
            plan.pods.get(uid).is_none_or(|s| {
                world
                    .pod(&s.namespace, &s.name)
                    .is_none_or(|p| p.uid != *uid || p.node.is_some())
            })
        });
        let unsent_waiting = plan.pods.len() > plan.sent.len();
        return if (all_bound && !unsent_waiting) || age > timing.released {
            Transition::Forget
        } else {
            Transition::Keep
        };
    }
    if let Some(reason) = stale(gang, plan, world, age > timing.watch_grace) {
        return Transition::Drop {
            reason,
            timed_out: false,
        };
    }
    match plan.first_arrival {
        Some(t) if now.saturating_duration_since(t) > timing.barrier => Transition::Drop {
            reason: format!(
                "gang barrier timed out: {} of {} members reached bind within {:?}; nothing was bound, retrying the whole gang",
                plan.arrived.len(),
                plan.pods.len(),
                timing.barrier
            ),
            timed_out: true,
        },
        None if age > timing.unclaimed => Transition::Drop {
            reason: format!(
                "no member of the gang reached bind within {:?} of planning; re-planning",
                timing.unclaimed
            ),
            timed_out: true,
        },
        _ => Transition::Keep,
    }
}

/// Why an unreleased plan can no longer be bound as planned, if it cannot.
fn stale(gang: &GangKey, plan: &LivePlan, world: &dyn World, settled: bool) -> Option<String> {
    match world.gang_min(gang, &plan.source) {
        Err(problem) => return Some(format!("gang changed: {problem}")),
        Ok(min) if min != plan.min_member => {
            return Some(format!(
                "gang minimum changed from {} to {min}",
                plan.min_member
            ));
        }
        Ok(_) => {}
    }
    let mut nodes: HashMap<&str, Option<NodeInfo>> = HashMap::new();
    for (uid, slot) in &plan.pods {
        let who = format!("{}/{}", slot.namespace, slot.name);
        match world.pod(&slot.namespace, &slot.name) {
            None if settled => return Some(format!("member {who} was deleted")),
            None => {}
            Some(p) if p.uid != *uid => {
                return Some(format!("member {who} was replaced (new UID {})", p.uid));
            }
            Some(p) if p.terminating => return Some(format!("member {who} is being deleted")),
            Some(p) if p.node.as_deref().is_some_and(|n| n != slot.node) => {
                return Some(format!(
                    "member {who} was bound to {} by someone else",
                    p.node.unwrap_or_default()
                ));
            }
            Some(p) => {
                let node = nodes
                    .entry(slot.node.as_str())
                    .or_insert_with(|| world.node(&slot.node));
                if let Some(reason) = node_refuses(slot, node.as_ref(), &p.tolerations) {
                    return Some(reason);
                }
            }
        }
    }
    None
}

fn node_refuses(
    slot: &Slot,
    node: Option<&NodeInfo>,
    tolerations: &[Toleration],
) -> Option<String> {
    let name = &slot.node;
    let Some(node) = node else {
        return Some(format!("planned node {name} was deleted"));
    };
    if !node.schedulable {
        return Some(format!("planned node {name} is cordoned"));
    }
    if let Some(t) = node.taints.iter().find(|t| {
        t.effect != TaintEffect::PreferNoSchedule && !tolerations.iter().any(|tol| tol.tolerates(t))
    }) {
        return Some(format!(
            "planned node {name} has taint {}={} that {}/{} does not tolerate",
            t.key, t.value, slot.namespace, slot.name
        ));
    }
    for id in &slot.gpu_ids {
        match node.gpus.iter().find(|g| g.id == *id) {
            None => return Some(format!("planned GPU {id} is no longer on {name}")),
            Some(g) if !g.healthy => {
                return Some(format!("planned GPU {id} on {name} is unhealthy"));
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
