//! Applying plan transitions to the engine's state: the lifecycle's verdicts each time plans
//! are checked, refusals of planned nodes, and the outcome of each release.

use super::lifecycle::{self, Timing, Transition};
use super::{
    EXCLUDE_FOR, EXPIRE_EVERY, Engine, Exclusion, NOT_LEADER, RELEASED_TIMEOUTS, State,
    UNCLAIMED_TIMEOUTS, WATCH_GRACE, release, world,
};
use muster_core::GangKey;
use std::collections::HashSet;
use std::time::Instant;

impl Engine {
    pub(super) fn timing(&self) -> Timing {
        let timeout = self.config.barrier_timeout;
        Timing {
            barrier: timeout,
            unclaimed: timeout * UNCLAIMED_TIMEOUTS,
            watch_grace: WATCH_GRACE,
            released: timeout * RELEASED_TIMEOUTS,
        }
    }

    /// Applies each plan's lifecycle transition (see `lifecycle::decide`): drops plans whose
    /// barrier timed out or that went stale (nothing was bound), forgets released plans once
    /// the cache shows their pods bound.
    pub(super) fn expire(&self, st: &mut State) {
        if st.last_expire.is_some_and(|t| t.elapsed() < EXPIRE_EVERY) {
            return;
        }
        let now = Instant::now();
        st.last_expire = Some(now);
        st.excluded.retain(|_, e| e.until > now);
        let timing = self.timing();
        let world = world::CacheWorld { cache: &self.cache };
        let decided: Vec<(GangKey, Transition)> = st
            .plans
            .iter()
            .map(|(gang, plan)| {
                (
                    gang.clone(),
                    lifecycle::decide(gang, plan, &world, now, timing),
                )
            })
            .filter(|(_, t)| *t != Transition::Keep)
            .collect();
        for (gang, transition) in decided {
            match transition {
                Transition::Keep => {}
                Transition::Forget => {
                    if let Some(plan) = st.plans.remove(&gang) {
                        for uid in plan.pods.keys() {
                            st.pod_plan.remove(uid);
                        }
                    }
                }
                Transition::Drop { reason, timed_out } => {
                    if timed_out {
                        self.metrics.barrier_timeouts.inc();
                    }
                    let cause = if timed_out { "timeout" } else { "stale" };
                    self.drop_plan(st, &gang, &reason, cause);
                }
            }
        }
    }

    /// Drops an unbound plan: its waiting binds fail with `reason` (kube-scheduler retries
    /// them), its capacity is free again and the next round re-plans the gang whole.
    pub(super) fn drop_plan(&self, st: &mut State, gang: &GangKey, reason: &str, cause: &str) {
        let Some(mut plan) = st.plans.remove(gang) else {
            return;
        };
        for uid in plan.pods.keys() {
            st.pod_plan.remove(uid);
        }
        self.metrics.dropped_plans.with_label_values(&[cause]).inc();
        tracing::warn!(%gang, cause, "gang plan dropped: {reason}");
        for (_, tx) in plan.arrived.drain() {
            let _ = tx.send(Err(reason.to_string()));
        }
        // Force a fresh plan for the retry.
        st.planned_generation = 0;
        st.base = None;
    }

    /// kube-scheduler's own filters refused the planned node for this pod (it was not among
    /// the nodes it passed to filter): something Muster does not model (inter-pod affinity,
    /// volumes, ports). The node is excluded for the pod for a while and the gang, unless its
    /// Bindings are already on the way, is re-planned whole.
    pub async fn planned_node_refused(&self, uid: &str, node: &str) {
        let mut st = self.state.lock().await;
        let Some(gang) = st.pod_plan.get(uid).cloned() else {
            return;
        };
        if st.plans.get(&gang).is_none_or(|p| p.released) {
            return;
        }
        self.exclude(&mut st, uid, node);
        let reason = format!(
            "kube-scheduler's filters refused planned node {node} for pod {uid}; re-planning the gang without it"
        );
        self.drop_plan(&mut st, &gang, &reason, "refused_node");
    }

    fn exclude(&self, st: &mut State, uid: &str, node: &str) {
        let e = st
            .excluded
            .entry(uid.to_string())
            .or_insert_with(|| Exclusion {
                nodes: HashSet::new(),
                until: Instant::now(),
            });
        e.nodes.insert(node.to_string());
        e.until = Instant::now() + EXCLUDE_FOR;
    }

    /// Acts on a finished release (see `release::Outcome`).
    pub(super) async fn release_done(&self, gang: &GangKey, outcome: release::Outcome) {
        use release::Outcome;
        let mut st = self.state.lock().await;
        match outcome {
            Outcome::Bound => {}
            Outcome::Refused { uid, node, reason } => {
                self.exclude(&mut st, &uid, &node);
                self.drop_plan(&mut st, gang, &reason, "bind_refused");
            }
            Outcome::RolledBack { reason } => self.drop_plan(&mut st, gang, &reason, "rolled_back"),
            Outcome::Stale { reason } => self.drop_plan(&mut st, gang, &reason, "stale"),
            Outcome::NotLeader => self.drop_plan(&mut st, gang, NOT_LEADER, "not_leader"),
            Outcome::ExtraFailed { uid, reason } => {
                tracing::warn!(%gang, pod = uid, error = %reason, "member beyond the minimum not bound; re-planned later");
                if let Some(plan) = st.plans.get_mut(gang) {
                    plan.pods.remove(&uid);
                    plan.sent.remove(&uid);
                }
                st.pod_plan.remove(&uid);
                st.planned_generation = 0;
            }
        }
    }
}
