//! Between full rounds, a gang whose members all exist is placed on its own against the last
//! round's result (plus every plan made since), so kube-scheduler gets an answer on the first
//! try instead of waiting for the next round; a gang behind Muster's gate, which kube-scheduler
//! never asks about, is placed so as soon as its members arrive. The base only fills up between rounds (pods
//! leaving are noticed at the next round), so this never over-commits; it is closed while the
//! last round holds capacity for somebody (a reservation or a preemption in progress) or when a
//! Node or GpuNode changed since (health, capacity, links), and a gang the last round could
//! not place is left to the next one (unless all it lacked was members).

use super::{Answer, Engine, State, now_secs};
use crate::gang::gang_of;
use crate::snapshot::{self, PendingMember};
use k8s_openapi::api::core::v1::Pod;
use muster_core::PlannerConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether a gang's members can be planned now, from the gang index alone.
enum Members {
    /// All waiting, at least the minimum: plan them.
    Ready(Vec<PendingMember>, HashMap<String, (String, String)>, u64),
    /// Fewer than the minimum exist.
    Missing { have: u32, min: u32 },
    /// Some are bound, running or finished (elastic growth, restarts): a full round decides.
    Mixed,
}

/// What placing one gang between rounds came to.
enum Fast {
    Placed,
    /// Fewer members than the minimum exist: the answer for them.
    MissingMembers(Answer),
    /// The current base has no room for it: a round may preempt, or room may come.
    NoRoom,
    /// Only a full round can decide (the base is stale or closed, some members are bound, a
    /// round already decided the gang, ...).
    RoundDecides,
}

impl Engine {
    /// The answer for `pod` if its gang could be decided without a full round.
    pub(super) fn try_fast(
        self: &Arc<Self>,
        st: &mut State,
        pod: &Pod,
        uid: &str,
    ) -> Option<Answer> {
        match self.place_fast(st, pod, Some(uid)) {
            Fast::Placed => super::planned(st, uid),
            Fast::MissingMembers(wait) => Some(wait),
            Fast::NoRoom | Fast::RoundDecides => None,
        }
    }

    /// Places, each on its own as the filter's fast path does, the gangs whose members
    /// arrived behind Muster's gate since the last call: kube-scheduler never asks about gated
    /// pods, so without this a complete gang would wait for the next spaced round. A new gang
    /// the current base has no room for (a round may preempt for it) brings that round forward
    /// (`State::arrival_unplaced`); one the base cannot judge (stale after a node change, say)
    /// waits for the round the change itself brings. Arrivals stay queued while a round runs
    /// (its snapshot may predate them).
    pub(super) fn place_gated_arrivals(self: &Arc<Self>, st: &mut State) {
        if st.round_running || !self.is_leader() {
            return;
        }
        for gang in self.cache.signals.take_gated_arrivals() {
            let member = self.cache.gangs.members(&gang).into_iter().find_map(|r| {
                let p = self.cache.pods.get(&r)?;
                (snapshot::carries_placement_gate(&p) && p.metadata.deletion_timestamp.is_none())
                    .then_some(p)
            });
            let Some(pod) = member else { continue };
            // A gang already planned or decided (its gated members' explained conditions are
            // rewritten) comes back as `RoundDecides`: no news.
            if matches!(self.place_fast(st, &pod, None), Fast::NoRoom) {
                st.arrival_unplaced = true;
            }
        }
    }

    /// Places `pod`'s gang against the base (see [`Fast`]). `asking` is the pod kube-scheduler
    /// is filtering, if any (it gets its node in the answer, not a nomination).
    fn place_fast(self: &Arc<Self>, st: &mut State, pod: &Pod, asking: Option<&str>) -> Fast {
        let gref = gang_of(pod);
        let decided =
            st.verdicts.contains_key(&gref.key) && !st.short_of_members.contains(&gref.key);
        if st.plans.contains_key(&gref.key) || decided {
            return Fast::RoundDecides;
        }
        let mut info = snapshot::gang_info(&self.cache, &gref.key, &gref.source, Some(pod));
        if info.problem.is_some() {
            return Fast::RoundDecides;
        }
        let (members, names, oldest) = match self.members(pod, asking, info.min_member) {
            Members::Ready(m, n, oldest) => (m, n, oldest),
            Members::Missing { have, min } => {
                return Fast::MissingMembers(Answer::Wait {
                    message: muster_core::explain::missing_members(have, min),
                    unresolvable: true,
                });
            }
            Members::Mixed => return Fast::RoundDecides,
        };
        let nodes_now = self.cache.node_generation();
        let Some(base) = st
            .base
            .as_mut()
            .filter(|b| b.open && b.node_generation == nodes_now)
        else {
            return Fast::RoundDecides;
        };
        if info.created_at == 0 {
            info.created_at = oldest;
        }
        let gang = snapshot::pending_gang(gref.key.clone(), &info, members);
        let now = now_secs();
        let config = PlannerConfig {
            preemption: false,
            ..self.config.planner.clone()
        };
        // With the round's queues: a gang placed between rounds stays within its queue's and
        // its ancestors' limits like one placed by a round (no preemption, so no reclaim).
        let plan =
            base.cluster
                .plan_with_queues(std::slice::from_ref(&gang), now, &config, &base.queues);
        let Some(placement) = plan.placements.into_iter().next() else {
            return Fast::NoRoom;
        };
        if let Err(e) = base.cluster.commit(&gang, &placement.assignments, now) {
            // The base no longer matches what was planned; rebuild it at the next round.
            tracing::warn!(gang = %gang.key, error = %e, "fast placement did not fit its base");
            st.base = None;
            return Fast::RoundDecides;
        }
        let gpu_ids = std::mem::take(&mut base.gpu_ids);
        let name_of = |u: &str| names.get(u).cloned();
        let naming = super::adopt::Names {
            name_of: &name_of,
            gpu_ids: &gpu_ids,
        };
        self.adopt(st, &gang, &gref.source, &placement, naming, asking);
        if let Some(base) = st.base.as_mut() {
            base.gpu_ids = gpu_ids;
        }
        st.seen_pods.extend(names.into_keys());
        st.verdicts.remove(&gang.key);
        st.short_of_members.remove(&gang.key);
        self.metrics.fast_placements.inc();
        Fast::Placed
    }

    fn members(&self, pod: &Pod, asking: Option<&str>, min: u32) -> Members {
        let mut members = Vec::new();
        let mut names = HashMap::new();
        let mut oldest = u64::MAX;
        let mut push = |p: &Pod, u: String, members: &mut Vec<PendingMember>| {
            oldest = oldest.min(snapshot::created_secs(
                p.metadata.creation_timestamp.as_ref(),
            ));
            names.insert(
                u.clone(),
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
            );
            members.push(snapshot::pending_member(&self.cache, p, u));
        };
        let mut asking_seen = false;
        for r in self.cache.gangs.members(&gang_of(pod).key) {
            let Some(p) = self.cache.pods.get(&r) else {
                continue;
            };
            let Some(u) = p.metadata.uid.clone() else {
                continue;
            };
            let spec = p.spec.as_ref();
            if !self.cache.is_ours(&p) {
                continue;
            }
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            let bound = spec.and_then(|s| s.node_name.as_ref()).is_some();
            if bound || matches!(phase, Some("Succeeded" | "Failed")) {
                return Members::Mixed;
            }
            if p.metadata.deletion_timestamp.is_some() || snapshot::is_gated(&p) {
                continue;
            }
            asking_seen |= asking.is_none_or(|a| a == u);
            push(&p, u, &mut members);
            // A member whose requests cannot be counted: a full round reports the gang.
            if members.last().is_some_and(|m| m.invalid.is_some()) {
                return Members::Mixed;
            }
        }
        // The asking pod is verified to be in the cache (`verify`); skipped there, it is
        // deleting or gated and no round would plan it either.
        if !asking_seen {
            return Members::Mixed;
        }
        let have = members.len() as u32;
        if have < min {
            return Members::Missing { have, min };
        }
        Members::Ready(members, names, oldest)
    }
}
