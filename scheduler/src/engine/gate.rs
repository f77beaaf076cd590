//! Muster's scheduling gate on gang members (`muster_api::gate`): removed once a member's gang
//! is planned, and until then the gang's verdict is what the member's `PodScheduled` condition
//! says (kube-scheduler never attempts a gated pod, so it never writes one).

use super::explanations::GatedWait;
use super::{Engine, State, actions};
use crate::snapshot;
use std::time::{Duration, Instant};

/// Why a gang's gated members wait.
pub(super) enum GatedReason<'a> {
    /// The gang waits: its verdict (or why it cannot be planned).
    Gang(&'a str),
    /// The gang's minimum (this many) is placed; no node has room for these members beyond it
    /// (the core places them one by one whenever there is room, and gives no verdict for the
    /// rest).
    BeyondMinimum(u32),
}

impl GatedReason<'_> {
    fn message(&self) -> String {
        match self {
            GatedReason::Gang(verdict) => {
                format!("held by Muster until its gang can be placed whole: {verdict}")
            }
            GatedReason::BeyondMinimum(min) => format!(
                "held by Muster: beyond the gang's minimum of {min}, which is placed; bound \
                 once a node has room for it"
            ),
        }
    }
}

/// A planned member still gated this long after its gate was removed is released again (the
/// write failed, or the watch has not caught up yet).
const GATE_RETRY: Duration = Duration::from_secs(5);

/// A gated member is explained once it is this old: most gangs are complete and placed within
/// moments of their members' creation, and a write per member for a wait that ends by itself
/// cost the throughput benchmark a fifth of its pods/s (the API server's own message says the
/// pod is gated meanwhile).
const EXPLAIN_AFTER_SECS: u64 = 5;

impl Engine {
    /// Removes Muster's scheduling gate from every planned member that still carries it (once
    /// per round; `adopt` releases a new plan's members itself, nominating them first when
    /// nominations pay). Level-triggered: a member whose release failed, or that a restarted
    /// scheduler planned again, is released by the next round that finds it still gated, at
    /// most once per [`GATE_RETRY`].
    pub(super) fn release_gates(&self, st: &mut State) {
        let now = Instant::now();
        let nominate = self.config.nominate && st.nominate_now;
        let mut targets = Vec::new();
        for plan in st.plans.values() {
            for (uid, slot) in &plan.pods {
                let recent = st
                    .gate_released
                    .get(uid)
                    .is_some_and(|t| now.duration_since(*t) < GATE_RETRY);
                if recent
                    || !self
                        .cached_pod(slot)
                        .is_some_and(|p| snapshot::carries_placement_gate(&p))
                {
                    continue;
                }
                let node = nominate.then(|| slot.node.clone());
                targets.push((
                    uid.clone(),
                    (slot.namespace.clone(), slot.name.clone(), node),
                ));
            }
        }
        if targets.is_empty() {
            return;
        }
        let mut pods = Vec::with_capacity(targets.len());
        for (uid, target) in targets {
            st.gate_released.insert(uid, now);
            pods.push(target);
        }
        tokio::spawn(actions::release_gates(
            self.client.clone(),
            pods,
            self.metrics.clone(),
        ));
    }

    /// Writes each waiting gang's verdict into its gated members' `PodScheduled` condition
    /// (reason `SchedulingGated`, as the API server set it), when it changed, paced as
    /// `explanations` says: `kubectl describe pod` says why, as for ungated pods.
    pub(super) fn explain_gated(&self, st: &mut State, waits: Vec<GatedWait>) {
        let writes = st.gate_explained.due(waits, Instant::now());
        if writes.is_empty() || !self.config.report {
            return;
        }
        tokio::spawn(actions::explain_gated(self.client.clone(), writes));
    }

    /// The gated members of gangs that wait, with what their condition should say (see
    /// `explain_gated`); members a plan holds are being released, not waiting.
    pub(super) fn gated_waits<'a>(
        &self,
        st: &State,
        reasons: impl Iterator<Item = (&'a muster_core::GangKey, GatedReason<'a>)>,
    ) -> Vec<GatedWait> {
        let mut out = Vec::new();
        let now = super::now_secs();
        for (gang, reason) in reasons {
            // Written once per gang, and only for gangs with a member to explain.
            let mut message = None;
            let planned = st.plans.get(gang).map(|p| &p.pods);
            for r in self.cache.gangs.members(gang) {
                let Some(p) = self.cache.pods.get(&r) else {
                    continue;
                };
                let created = snapshot::created_secs(p.metadata.creation_timestamp.as_ref());
                let young = now.saturating_sub(created) < EXPLAIN_AFTER_SECS;
                if young || !snapshot::carries_placement_gate(&p) {
                    continue;
                }
                let (Some(uid), Some(namespace), Some(name)) = (
                    p.metadata.uid.clone(),
                    p.metadata.namespace.clone(),
                    p.metadata.name.clone(),
                ) else {
                    continue;
                };
                if planned.is_some_and(|pods| pods.contains_key(&uid)) {
                    continue;
                }
                out.push(GatedWait {
                    uid,
                    namespace,
                    name,
                    message: message.get_or_insert_with(|| reason.message()).clone(),
                });
            }
        }
        out
    }
}
