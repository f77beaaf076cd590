//! The engine: keeps a gang plan, answers the extender verbs from it, and enforces the bind
//! barrier.
//!
//! A plan is made when a pod shows up that no live plan covers and the cache changed since the
//! last one. Every gang it places becomes a live plan: its pods are answered from it (filter
//! returns exactly the planned node) and it holds its resources in later snapshots until the
//! whole gang is bound, or it is dropped (barrier timeout, stale) to be retried whole.
//!
//! - `plan`: full rounds; `fast`: single gangs between rounds; `background`: when rounds run;
//!   `adopt`: a round's placements and preemptions turned into live plans and evictions.
//! - `lifecycle`: what a live plan is and its transitions (pure); `transitions` applies them.
//! - `release`: the barrier's Bindings (validate, bind, retry, roll back).
//! - `actions`: evictions, nudges, nominations; `status`: PodGroup status and Events.
//! - `gate`: Muster's scheduling gate on gang members: released when planned, explained till then.
//! - `queues`: the queue tree each round plans with, queue metrics and Queue status.

mod actions;
mod adopt;
mod background;
mod explanations;
mod fast;
mod gate;
mod lifecycle;
#[cfg(test)]
mod nominate_tests;
mod plan;
mod queues;
#[cfg(test)]
mod queues_tests;
mod release;
mod status;
mod transitions;
mod verify;
mod world;

use crate::cache::Cache;
use crate::gang::gang_of;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use lifecycle::{LivePlan, Slot, Transition};
use muster_core::{Cluster, GangKey, PlannerConfig};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, oneshot};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub planner: PlannerConfig,
    /// How long a planned gang may take for all members to reach bind.
    pub barrier_timeout: Duration,
    /// Write PodGroup status and Events.
    pub report: bool,
    /// Set planned pods' `status.nominatedNodeName` (see `actions::nominate`).
    pub nominate: bool,
}

/// The pod a bind request names (kube-scheduler sends its namespace, name and UID).
#[derive(Clone, Copy, Debug)]
pub struct BindTarget<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// What the extender tells kube-scheduler about one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The planned node for this pod.
    Node(String),
    /// Not now; `unresolvable` when preemption cannot help.
    Wait { message: String, unresolvable: bool },
}

/// The last full round's cluster plus every plan made since.
struct Base {
    cluster: Cluster,
    gpu_ids: HashMap<String, Vec<String>>,
    /// False while the round holds capacity for a reservation or a preemption.
    open: bool,
    /// The cache's node generation the round saw: once nodes or GPUs change (a GPU turns
    /// unhealthy, a node is cordoned), the base is stale and only a new round may place.
    node_generation: u64,
    /// The queues the round planned with: single gangs are held to the same limits.
    queues: Arc<muster_core::QueueTree>,
}

#[derive(Default)]
struct State {
    plans: HashMap<GangKey, LivePlan>,
    pod_plan: HashMap<String, GangKey>,
    verdicts: HashMap<GangKey, Answer>,
    planned_generation: u64,
    seen_pods: HashSet<String>,
    evicting: HashMap<String, Instant>,
    reported: HashMap<GangKey, String>,
    last_replan: Option<Instant>,
    /// Wall time of the last round: background rounds are spaced by a multiple of it.
    last_round_took: Duration,
    last_expire: Option<Instant>,
    /// A round is computing outside the lock: the fast path waits, as its base is about to be
    /// replaced.
    round_running: bool,
    base: Option<Base>,
    /// The last round has a gang preempting or waiting for its victims to terminate: the
    /// background loop answers cache changes at once (see `run_background`).
    awaiting_victims: bool,
    /// The last round left gangs waiting for room (capacity or its shape), not only for
    /// members: capacity coming back is worth a prompt round (see `run_background`).
    waiting_for_room: bool,
    /// The cache's count of bound pods gone when the last round took its snapshot.
    planned_freed: u64,
    /// A gang arrived behind the gate since the last round that only a round can place (it
    /// needs room the base lacks, or preemption): that round comes sooner.
    arrival_unplaced: bool,
    /// Whether the last round found nominations worth their cost (see
    /// `adopt::nominations_pay`); the fast path follows it until the next round.
    nominate_now: bool,
    /// Planned members whose Muster gate was last removed, and when (see
    /// `plan::release_gates`).
    gate_released: HashMap<String, Instant>,
    /// What each gated member's condition last said, and when (see `gate::explain_gated`).
    gate_explained: explanations::Explanations,
    /// Pods told to wait: touched when their gang is planned so they retry at once.
    rejected: HashSet<String>,
    /// Gangs the last round left waiting only for members: the fast path may place them as
    /// soon as the rest appear, instead of at the next round.
    short_of_members: HashSet<GangKey>,
    /// Nodes a pod may not be planned on for a while, by pod UID: kube-scheduler's own
    /// filters refused them, or admission refused the pod's Binding there.
    excluded: HashMap<String, Exclusion>,
    /// Queue problems as last logged (logged again only when they change).
    queue_problems: std::collections::BTreeMap<String, Vec<String>>,
    /// Queue statuses as last written, by queue name.
    queue_reported: HashMap<String, String>,
}

struct Exclusion {
    nodes: HashSet<String>,
    until: Instant,
}

/// How long a node refused for a pod stays excluded for it (kube-scheduler's view may have
/// been briefly behind, e.g. a pod still terminating there).
const EXCLUDE_FOR: Duration = Duration::from_secs(30);

/// The answer for a member beyond the minimum while the minimum waits at its barrier.
const EXTRA_WAITS: &str = "this gang's minimum is planned and waiting at the bind barrier; members beyond it are planned once it is bound";

/// Filter calls re-plan at most this often; in between, the background loop (which also runs
/// on every change) plans and nudges the pods it placed. Bounds planning CPU under bursts of
/// pod creation, which would otherwise starve the API server on small control planes.
const NOT_LEADER: &str = "this Muster replica is not the leader; the leading replica decides";

const MIN_FILTER_REPLAN: Duration = Duration::from_millis(200);

/// Background rounds (statuses, preemptions, refreshing the base) at most this often while
/// the cluster keeps changing; gangs in between are placed by the fast path.
const MIN_BACKGROUND_REPLAN: Duration = Duration::from_millis(500);

/// Under churn, background rounds are at least this many times their own duration apart:
/// on a large, busy cluster a round costs ~100 ms of a core the API server also needs, and
/// gangs completing in between are placed by the fast path.
const ROUND_SPACING_FACTOR: u32 = 5;

/// While a gang waits for its victims to go, background rounds at most this often.
const MIN_VICTIM_REPLAN: Duration = Duration::from_millis(50);

/// When capacity came back while gangs wait for room, or a gang arrived that only a round can
/// place, background rounds are at least this many times their own duration apart (and
/// `MIN_VICTIM_REPLAN`): gangs behind Muster's gate are placed only by rounds then, so freed
/// GPUs stay idle, and a high-priority gang's preemption waits, until the next one.
const PROMPT_SPACING_FACTOR: u32 = 2;

/// A burst of cache events settles into one round: the loop waits until none came for this
/// long, or `SETTLE_AT_MOST` passed.
const SETTLE_QUIET: Duration = Duration::from_millis(30);
const SETTLE_AT_MOST: Duration = Duration::from_millis(200);

/// While gangs wait, a round runs at least this often even if nothing changed.
const TIMED_REPLAN: Duration = Duration::from_secs(5);

/// A plan none of whose members reached bind is dropped after this many barrier timeouts
/// (kube-scheduler may be far behind in a burst, so it gets longer than the barrier itself).
const UNCLAIMED_TIMEOUTS: u32 = 3;

/// A released plan whose pods never show up bound is forgotten after this many barrier
/// timeouts (its members beyond the minimum may never reach bind).
const RELEASED_TIMEOUTS: u32 = 2;

/// A planned pod missing from the cache this long after planning was deleted (the pod asking
/// in filter may be planned before the watch delivers it).
const WATCH_GRACE: Duration = Duration::from_secs(5);

/// Plan expiry checks every plan; in a burst of filter calls once per this is enough.
const EXPIRE_EVERY: Duration = Duration::from_millis(100);

pub struct Engine {
    cache: Cache,
    client: Client,
    /// Binds and evicts: no client-side retries (see `release` and `actions::evict`).
    decisions: Client,
    config: EngineConfig,
    pub metrics: Metrics,
    state: Mutex<State>,
    /// Rounds never overlap.
    round_lock: Mutex<()>,
    reporter: status::Reporter,
    /// Decisions and side effects only while this is true (see `leader`).
    leader: std::sync::OnceLock<Arc<AtomicBool>>,
}

impl Engine {
    pub fn new(
        cache: Cache,
        client: Client,
        decisions: Client,
        config: EngineConfig,
        metrics: Metrics,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            reporter: status::Reporter::new(client.clone()),
            cache,
            client,
            decisions,
            config,
            metrics,
            state: Mutex::new(State::default()),
            round_lock: Mutex::new(()),
            leader: std::sync::OnceLock::new(),
        })
    }

    /// Makes the engine decide only while `leader` is true. Without it, the engine always
    /// leads (a single replica).
    pub fn follow_leadership(&self, leader: Arc<AtomicBool>) {
        let _ = self.leader.set(leader);
    }

    fn is_leader(&self) -> bool {
        let leading = self.leader.get().is_none_or(|l| l.load(Ordering::Acquire));
        self.metrics.leader.set(i64::from(leading));
        leading
    }

    /// Filter: the pod's planned node, or why it waits.
    pub async fn filter(self: &Arc<Self>, requested: &Pod) -> Answer {
        let pod = match verify::cached_pod_waiting(&self.cache, requested).await {
            Ok(pod) => pod,
            Err(refusal) => {
                if let verify::Refusal::Forged(reason) = &refusal {
                    self.metrics
                        .extender_errors
                        .with_label_values(&["filter", "forged"])
                        .inc();
                    tracing::warn!(%reason, "filter refused: forged request, or a pod not in Muster's cache with this UID");
                }
                return Answer::Wait {
                    message: refusal.message(),
                    unresolvable: false,
                };
            }
        };
        let pod = pod.as_ref();
        let Some(uid) = pod.metadata.uid.clone() else {
            return Answer::Wait {
                message: "pod has no UID".into(),
                unresolvable: true,
            };
        };
        let mut st = self.state.lock().await;
        if !self.is_leader() {
            // Remembered so that, once leading, planning this pod touches it to retry at once.
            st.rejected.insert(uid);
            return Answer::Wait {
                message: NOT_LEADER.into(),
                unresolvable: false,
            };
        }
        let gang = gang_of(pod).key;
        self.expire(&mut st);
        if let Some(answer) = planned(&st, &uid) {
            return answer;
        }
        if st.plans.get(&gang).is_some_and(|p| !p.released) {
            st.rejected.insert(uid);
            return Answer::Wait {
                message: EXTRA_WAITS.into(),
                unresolvable: false,
            };
        }
        if !st.round_running
            && let Some(answer) = self.try_fast(&mut st, pod, &uid)
        {
            if matches!(answer, Answer::Wait { .. }) {
                st.rejected.insert(uid);
            }
            return answer;
        }
        // A pod no round has seen, whose gang the fast path could not place: a round now,
        // unless one is running or just ran (it will be touched when a later round plans it).
        let unseen = !st.seen_pods.contains(&uid);
        let due = st
            .last_replan
            .is_none_or(|t| t.elapsed() >= MIN_FILTER_REPLAN);
        if unseen && due && !st.round_running {
            drop(st);
            self.round(Some(&uid)).await;
            st = self.state.lock().await;
            if let Some(answer) = planned(&st, &uid) {
                return answer;
            }
        }
        let answer = st
            .verdicts
            .get(&gang)
            .cloned()
            .unwrap_or_else(|| Answer::Wait {
                message: if st.seen_pods.contains(&uid) {
                    "waiting for the next placement round".into()
                } else {
                    "Muster has not seen this pod yet; retrying".into()
                },
                unresolvable: false,
            });
        st.rejected.insert(uid);
        answer
    }

    /// Bind: waits at the gang barrier; all planned members are bound together or none.
    pub async fn bind(self: &Arc<Self>, pod: &BindTarget<'_>, node: &str) -> Result<(), String> {
        let uid = pod.uid;
        if !self.is_leader() {
            return Err(NOT_LEADER.into());
        }
        let rx = {
            let mut st = self.state.lock().await;
            self.expire(&mut st);
            let Some(gang) = st.pod_plan.get(uid).cloned() else {
                return Err("no gang plan covers this pod (Muster restarted or the plan expired); it will be retried".into());
            };
            let Some(plan) = st.plans.get_mut(&gang) else {
                return Err("gang plan vanished; it will be retried".into());
            };
            let Some(slot) = plan.pods.get(uid) else {
                return Err("pod is not part of its gang's plan".into());
            };
            // The plan was made from the cache: a request naming another pod with this UID is
            // forged (kube-scheduler always sends the pod's own name).
            if slot.namespace != pod.namespace || slot.name != pod.name {
                self.metrics
                    .extender_errors
                    .with_label_values(&["bind", "forged"])
                    .inc();
                tracing::warn!(
                    uid,
                    namespace = pod.namespace,
                    name = pod.name,
                    "bind refused: forged request"
                );
                return Err(format!(
                    "pod UID {uid} is {}/{}, not {}/{}",
                    slot.namespace, slot.name, pod.namespace, pod.name
                ));
            }
            if slot.node != node {
                return Err(format!(
                    "gang plan puts this pod on {}, not {node}",
                    slot.node
                ));
            }
            if plan.sent.contains(uid) {
                return Err("this pod's Binding was already sent; duplicate bind".into());
            }
            let (tx, rx) = oneshot::channel();
            if plan.released {
                // A member beyond the minimum joining its bound gang: on its own.
                let joining = vec![(uid.to_string(), slot.clone())];
                plan.sent.insert(uid.to_string());
                let waiters = HashMap::from([(uid.to_string(), tx)]);
                tokio::spawn(self.clone().release(gang.clone(), joining, waiters, false));
            } else {
                plan.first_arrival.get_or_insert_with(Instant::now);
                plan.arrived.insert(uid.to_string(), tx);
            }
            if !plan.released && plan.barrier_complete() {
                // Judged now, not at the last throttled check: a node deleted a moment ago
                // must not receive Bindings (the API server accepts them for any name).
                let world = world::CacheWorld { cache: &self.cache };
                let verdict = lifecycle::decide(&gang, plan, &world, Instant::now(), self.timing());
                if let Transition::Drop { reason, timed_out } = verdict {
                    let cause = if timed_out { "timeout" } else { "stale" };
                    self.drop_plan(&mut st, &gang, &reason, cause);
                } else {
                    self.release_barrier(plan, gang);
                }
            }
            rx
        };
        self.metrics.barrier_waiting.inc();
        let _waiting = scopeguard(&self.metrics.barrier_waiting);
        match tokio::time::timeout(self.config.barrier_timeout + Duration::from_secs(5), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("gang barrier abandoned; the gang will be retried whole".into()),
            Err(_) => Err("gang barrier timed out; the gang will be retried whole".into()),
        }
    }

    /// Every required member is at the barrier: its Bindings go out (see `release`).
    fn release_barrier(self: &Arc<Self>, plan: &mut LivePlan, gang: GangKey) {
        plan.released = true;
        let waiters = std::mem::take(&mut plan.arrived);
        let slots: Vec<(String, Slot)> = waiters
            .keys()
            .filter_map(|u| Some((u.clone(), plan.pods.get(u)?.clone())))
            .collect();
        plan.sent.extend(waiters.keys().cloned());
        let waited = now_secs().saturating_sub(plan.created_at) as f64;
        self.metrics
            .gang_wait
            .with_label_values(&[&plan.queue])
            .observe(waited);
        tokio::spawn(self.clone().release(gang, slots, waiters, true));
    }

    /// Prioritize: the planned node scores 10, every other 0.
    pub async fn planned_node(&self, uid: &str) -> Option<String> {
        match planned(&*self.state.lock().await, uid)? {
            Answer::Node(node) => Some(node),
            Answer::Wait { .. } => None,
        }
    }

    /// The planned pod as the cache has it now.
    fn cached_pod(&self, slot: &Slot) -> Option<Arc<Pod>> {
        let key = kube::runtime::reflector::ObjectRef::new(&slot.name).within(&slot.namespace);
        self.cache.pods.get(&key)
    }
}

/// kube-scheduler already failed this pod (its PodScheduled condition is False), possibly in
/// its own filters without asking the extender: it sits in the unschedulable queue, which a
/// status-only change (a nomination) does not wake, so it is touched instead.
fn tried_by_scheduler(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
}

/// Decrements the barrier gauge however the bind call ends (answer, timeout, cancellation).
struct GaugeGuard<'a>(&'a prometheus::IntGauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn scopeguard(g: &prometheus::IntGauge) -> GaugeGuard<'_> {
    GaugeGuard(g)
}

fn planned(st: &State, uid: &str) -> Option<Answer> {
    let gang = st.pod_plan.get(uid)?;
    let slot = st.plans.get(gang)?.pods.get(uid)?;
    Some(Answer::Node(slot.node.clone()))
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
