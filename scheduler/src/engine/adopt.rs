//! Turning a round's decisions into actions: a placement becomes a live plan (its members
//! nominated, lifted from Muster's gate or touched so kube-scheduler gets to them), and a
//! preemption evicts its victim gangs whole.

use super::{Answer, Engine, LivePlan, Slot, State, actions};
use crate::gang::GangSource;
use crate::snapshot::{self, Snapshot};
use muster_core::{Gang, GangPlacement};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

impl Engine {
    /// Turns a placement into a live plan. Members that were told to wait are touched so
    /// kube-scheduler retries them now rather than after their backoff; the others are
    /// nominated to their planned node (if configured), so kube-scheduler checks only that
    /// node when it gets to them. A gang whose minimum is already released gets the new
    /// members added to its plan (they bind on their own); a plan still at its barrier is
    /// never replaced.
    pub(super) fn adopt(
        &self,
        st: &mut State,
        gang: &Gang,
        source: &GangSource,
        placement: &GangPlacement,
        names: Names<'_>,
        asking: Option<&str>,
    ) {
        let joining = st.plans.get(&placement.gang).map(|p| p.released);
        if joining == Some(false) {
            tracing::warn!(gang = %placement.gang, "placement for a gang whose plan holds its barrier; ignored");
            return;
        }
        let mut pods = HashMap::new();
        for (i, a) in placement.assignments.iter().enumerate() {
            let Some((namespace, name)) = (names.name_of)(&a.pod.0) else {
                continue;
            };
            let ids = names.gpu_ids.get(&*a.node);
            let resources = gang
                .pending
                .iter()
                .find(|p| p.id == a.pod)
                .map(|p| p.resources)
                .unwrap_or_default();
            pods.insert(
                a.pod.0.to_string(),
                Slot {
                    namespace,
                    name,
                    node: a.node.to_string(),
                    gpu_ids: a
                        .gpus
                        .iter()
                        .filter_map(|&g| ids.and_then(|ids| ids.get(g as usize)).cloned())
                        .collect(),
                    gpus: a.gpus.clone(),
                    resources,
                    required: joining.is_none() && i < placement.required,
                },
            );
        }
        let (mut touch, mut nominate, mut withheld) = (Vec::new(), Vec::new(), 0);
        // A single pod (no gang, or a gang of one) is never nominated: kube-scheduler binds it
        // on its own, the extender's filter naming the planned node, and a nomination is one
        // more pod status write each (1,000-node throughput, Muster alone side by side: single
        // pods 153 / 126 pods/s nominating, 204 / 164 without).
        let nominations = self.config.nominate && gang.min_member > 1;
        let mut ungate = Vec::new();
        for (uid, slot) in &pods {
            st.pod_plan.insert(uid.clone(), placement.gang.clone());
            let target = (slot.namespace.clone(), slot.name.clone(), slot.node.clone());
            if Some(uid.as_str()) == asking {
                continue;
            }
            let cached = self.cached_pod(slot);
            // Still behind Muster's gate: nominated (when that pays) and ungated at once.
            if cached
                .as_deref()
                .is_some_and(snapshot::carries_placement_gate)
            {
                st.gate_released.insert(uid.clone(), Instant::now());
                let node = (self.config.nominate && st.nominate_now).then(|| slot.node.clone());
                ungate.push((slot.namespace.clone(), slot.name.clone(), node));
                continue;
            }
            // `|` not `||`: the pod is forgotten as rejected either way.
            if st.rejected.remove(uid) | cached.as_deref().is_some_and(super::tried_by_scheduler) {
                touch.push(target);
            } else if nominations && st.nominate_now {
                nominate.push(target);
            } else if nominations {
                withheld += 1;
            }
        }
        if withheld > 0 {
            self.metrics
                .nominations
                .with_label_values(&["withheld"])
                .inc_by(withheld);
        }
        if !touch.is_empty() {
            tokio::spawn(actions::nudge(self.client.clone(), touch));
        }
        if !ungate.is_empty() {
            tokio::spawn(actions::release_gates(
                self.client.clone(),
                ungate,
                self.metrics.clone(),
            ));
        }
        if !nominate.is_empty() {
            tokio::spawn(actions::nominate(
                self.client.clone(),
                nominate,
                self.metrics.clone(),
            ));
        }
        self.metrics
            .gang_attempts
            .with_label_values(&["placed"])
            .inc();
        if let Some(plan) = st.plans.get_mut(&placement.gang) {
            plan.pods.extend(pods);
            return;
        }
        st.plans.insert(
            placement.gang.clone(),
            LivePlan {
                pods,
                priority: gang.priority,
                queue: gang.queue.clone(),
                created_at: gang.created_at,
                min_member: gang.min_member,
                source: source.clone(),
                made: Instant::now(),
                first_arrival: None,
                arrived: HashMap::new(),
                released: false,
                sent: HashSet::new(),
            },
        );
    }

    pub(super) fn start_preemptions(
        &self,
        st: &mut State,
        preemptions: &[muster_core::Preemption],
        snap: &Snapshot,
    ) {
        for p in preemptions {
            st.verdicts.insert(
                p.gang.clone(),
                Answer::Wait {
                    message: p.message.clone(),
                    unresolvable: false,
                },
            );
            self.metrics
                .gang_attempts
                .with_label_values(&["preempting"])
                .inc();
            self.metrics.preemptions.inc_by(p.victims.len() as u64);
            let mut victims = Vec::new();
            for v in &p.victims {
                for pod in &v.pods {
                    let recent = st
                        .evicting
                        .get(pod.as_str())
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(30));
                    if let (false, Some(info)) = (recent, snap.pods.get(pod.as_str())) {
                        st.evicting.insert(pod.0.to_string(), Instant::now());
                        victims.push((info.namespace.clone(), info.name.clone(), v.gang.clone()));
                    }
                }
            }
            tracing::info!(gang = %p.gang, victims = p.victims.len(), reclaim = p.reclaim, "{}", p.message);
            if p.reclaim && !victims.is_empty() {
                let queue = snap
                    .gangs
                    .get(&p.gang)
                    .map_or("default", |g| g.queue.as_str());
                self.metrics
                    .queues
                    .reclaims
                    .with_label_values(&[queue])
                    .inc();
            }
            if !victims.is_empty() {
                let leader = self.leader.get().cloned();
                tokio::spawn(actions::evict(
                    self.decisions.clone(),
                    (p.gang.clone(), p.reclaim),
                    victims,
                    self.metrics.clone(),
                    self.reporter.clone(),
                    move || {
                        leader
                            .as_ref()
                            .is_none_or(|l| l.load(std::sync::atomic::Ordering::Acquire))
                    },
                ));
            }
        }
        st.evicting
            .retain(|_, t| t.elapsed() < Duration::from_secs(300));
    }
}

/// Whether nominating this round's planned pods saves kube-scheduler more than it costs it.
///
/// A nomination lets kube-scheduler check its pod on one node, but until that pod's turn comes
/// every other pod of equal or lower priority that kube-scheduler filters is checked against
/// each nominated node twice, with the nominated pod added (`RunFilterPluginsWithNominatedPods`
/// copies the node's and the cycle's state for it). Pods that wait for room are exactly the
/// ones kube-scheduler keeps filtering against every node: it retries a pod the extender turned
/// down on any cluster event, and runs its preemption dry run over the nodes each time. In the
/// contention benchmark (1,000 nodes, 1.5x demand) nominations outstanding during those retries
/// made each failed attempt 2.7x slower (38 ms against 14 ms, Filter 11.8 ms against 4.4 ms)
/// and delayed the first bound gang from 23 s to 42 s. So planned pods are nominated only when
/// the pods still waiting (`waiting_gpus`, gangs short of members included: their members are
/// filtered too) fit in what this round leaves free, and no gang is preempting (its members are
/// retried until the victims are gone).
pub(super) fn nominations_pay(waiting_gpus: u64, free_after: u64, preempting: bool) -> bool {
    !preempting && waiting_gpus <= free_after
}

/// How a placement's pods and GPUs are named.
#[derive(Clone, Copy)]
pub(super) struct Names<'a> {
    pub name_of: &'a dyn Fn(&str) -> Option<(String, String)>,
    pub gpu_ids: &'a HashMap<String, Vec<String>>,
}
