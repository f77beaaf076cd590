//! The engine: keeps a gang plan, answers the extender verbs from it, and enforces the bind
//! barrier.
//!
//! A plan is made when a pod shows up that no live plan covers and the cache changed since the
//! last one. Every gang it places becomes a live plan: its pods are answered from it (filter
//! returns exactly the planned node) and it holds its resources in later snapshots until the
//! whole gang is bound, or its barrier times out and it is dropped to be retried whole.

mod actions;
mod status;

use crate::cache::Cache;
use crate::gang::gang_of;
use crate::metrics::Metrics;
use crate::snapshot::{self, Assumed};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use muster_core::{GangKey, PlannerConfig, Resources};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, oneshot};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub planner: PlannerConfig,
    /// How long a planned gang may take for all members to reach bind.
    pub barrier_timeout: Duration,
    /// Write PodGroup status and Events.
    pub report: bool,
}

/// What the extender tells kube-scheduler about one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The planned node for this pod.
    Node(String),
    /// Not now; `unresolvable` when preemption cannot help.
    Wait { message: String, unresolvable: bool },
}

#[derive(Clone, Debug)]
struct Slot {
    namespace: String,
    name: String,
    node: String,
    gpus: Vec<u32>,
    gpu_ids: Vec<String>,
    resources: Resources,
}

struct LivePlan {
    pods: HashMap<String, Slot>,
    priority: i32,
    queue: String,
    created_at: u64,
    made: Instant,
    arrived: HashMap<String, oneshot::Sender<Result<(), String>>>,
    /// Bindings were sent; kept (as assumed) until the cache shows the pods bound.
    released: bool,
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
}

/// Filter calls re-plan at most this often; in between, the background loop (which also runs
/// on every change) plans and nudges the pods it placed. Bounds planning CPU under bursts of
/// pod creation, which would otherwise starve the API server on small control planes.
const MIN_FILTER_REPLAN: Duration = Duration::from_millis(200);

pub struct Engine {
    cache: Cache,
    client: Client,
    config: EngineConfig,
    pub metrics: Metrics,
    state: Mutex<State>,
    reporter: status::Reporter,
}

impl Engine {
    pub fn new(
        cache: Cache,
        client: Client,
        config: EngineConfig,
        metrics: Metrics,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            reporter: status::Reporter::new(client.clone()),
            cache,
            client,
            config,
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    /// Filter: the pod's planned node, or why it waits.
    pub async fn filter(self: &Arc<Self>, pod: &Pod) -> Answer {
        let Some(uid) = pod.metadata.uid.clone() else {
            return Answer::Wait {
                message: "pod has no UID".into(),
                unresolvable: true,
            };
        };
        let gang = gang_of(pod).key;
        let mut st = self.state.lock().await;
        self.expire(&mut st);
        if let Some(answer) = planned(&st, &uid) {
            return answer;
        }
        let stale =
            self.cache.generation() != st.planned_generation || !st.seen_pods.contains(&uid);
        let due = st
            .last_replan
            .is_none_or(|t| t.elapsed() >= MIN_FILTER_REPLAN);
        if stale && due {
            self.replan(&mut st, Some(&uid));
        }
        if let Some(answer) = planned(&st, &uid) {
            return answer;
        }
        if let Some(v) = st.verdicts.get(&gang) {
            return v.clone();
        }
        Answer::Wait {
            message: if st.seen_pods.contains(&uid) {
                "waiting for the next placement round".into()
            } else {
                "Muster has not seen this pod yet; retrying".into()
            },
            unresolvable: false,
        }
    }

    /// Bind: waits at the gang barrier; all planned members are bound together or none.
    pub async fn bind(self: &Arc<Self>, uid: &str, node: &str) -> Result<(), String> {
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
            if slot.node != node {
                return Err(format!(
                    "gang plan puts this pod on {}, not {node}",
                    slot.node
                ));
            }
            if plan.released {
                return Err("gang already released; duplicate bind".into());
            }
            let (tx, rx) = oneshot::channel();
            plan.arrived.insert(uid.to_string(), tx);
            if plan.arrived.len() == plan.pods.len() {
                plan.released = true;
                let waiters = std::mem::take(&mut plan.arrived);
                let slots: Vec<(String, Slot)> = plan
                    .pods
                    .iter()
                    .map(|(u, s)| (u.clone(), s.clone()))
                    .collect();
                let waited = now_secs().saturating_sub(plan.created_at) as f64;
                self.metrics
                    .gang_wait
                    .with_label_values(&[&plan.queue])
                    .observe(waited);
                tokio::spawn(actions::release(
                    self.client.clone(),
                    gang,
                    slots,
                    waiters,
                    self.reporter.clone(),
                ));
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

    /// Prioritize: the planned node scores 10, every other 0.
    pub async fn planned_node(&self, uid: &str) -> Option<String> {
        match planned(&*self.state.lock().await, uid)? {
            Answer::Node(node) => Some(node),
            Answer::Wait { .. } => None,
        }
    }

    /// Drops plans whose barrier timed out (nothing was bound) and forgets released plans once
    /// the cache shows their pods bound.
    fn expire(&self, st: &mut State) {
        let timeout = self.config.barrier_timeout;
        let mut dropped = Vec::new();
        for (gang, plan) in &st.plans {
            let age = plan.made.elapsed();
            let done = if plan.released {
                age > timeout * 2 || plan.pods.values().all(|s| self.is_bound(s))
            } else {
                age > timeout
            };
            if done {
                dropped.push(gang.clone());
            }
        }
        for gang in dropped {
            let Some(mut plan) = st.plans.remove(&gang) else {
                continue;
            };
            for uid in plan.pods.keys() {
                st.pod_plan.remove(uid);
            }
            if !plan.released {
                self.metrics.barrier_timeouts.inc();
                let msg = format!(
                    "gang barrier timed out: {} of {} members reached bind within {timeout:?}; nothing was bound, retrying the whole gang",
                    plan.arrived.len(),
                    plan.pods.len()
                );
                tracing::warn!(%gang, "{msg}");
                for (_, tx) in plan.arrived.drain() {
                    let _ = tx.send(Err(msg.clone()));
                }
                // Force a fresh plan for the retry.
                st.planned_generation = 0;
            }
        }
    }

    fn is_bound(&self, slot: &Slot) -> bool {
        let key = kube::runtime::reflector::ObjectRef::new(&slot.name).within(&slot.namespace);
        self.cache
            .pods
            .get(&key)
            .is_some_and(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
    }

    /// Members of newly planned gangs are touched so kube-scheduler retries them now rather
    /// than after their backoff; `asking` (the pod being filtered) needs no touch.
    fn replan(self: &Arc<Self>, st: &mut State, asking: Option<&str>) {
        let generation = self.cache.generation();
        let now = now_secs();
        let started = Instant::now();
        st.last_replan = Some(started);
        let assumed: HashMap<String, Assumed> = st
            .plans
            .iter()
            .flat_map(|(gang, plan)| {
                plan.pods.iter().map(move |(uid, s)| {
                    (
                        uid.clone(),
                        Assumed {
                            gang: gang.clone(),
                            node: s.node.clone(),
                            gpus: s.gpus.clone(),
                            resources: s.resources,
                            priority: plan.priority,
                        },
                    )
                })
            })
            .collect();
        let snap = snapshot::build(&self.cache, &assumed, now);
        let built = started.elapsed();
        let plan = snap.cluster.plan(&snap.pending, now, &self.config.planner);
        self.metrics
            .plan_seconds
            .with_label_values(&["snapshot"])
            .observe(built.as_secs_f64());
        self.metrics
            .plan_seconds
            .with_label_values(&["plan"])
            .observe((started.elapsed() - built).as_secs_f64());
        st.planned_generation = generation;
        st.seen_pods = snap.pods.keys().cloned().collect();
        st.verdicts.clear();

        let gang_of_pending: HashMap<&GangKey, &muster_core::Gang> =
            snap.pending.iter().map(|g| (&g.key, g)).collect();
        for placement in &plan.placements {
            let Some(gang) = gang_of_pending.get(&placement.gang) else {
                continue;
            };
            let mut pods = HashMap::new();
            for a in &placement.assignments {
                let Some(info) = snap.pods.get(&a.pod.0) else {
                    continue;
                };
                let ids = snap.gpu_ids.get(&a.node);
                let resources = gang
                    .pending
                    .iter()
                    .find(|p| p.id == a.pod)
                    .map(|p| p.resources)
                    .unwrap_or_default();
                pods.insert(
                    a.pod.0.clone(),
                    Slot {
                        namespace: info.namespace.clone(),
                        name: info.name.clone(),
                        node: a.node.clone(),
                        gpu_ids: a
                            .gpus
                            .iter()
                            .filter_map(|&g| ids.and_then(|ids| ids.get(g as usize)).cloned())
                            .collect(),
                        gpus: a.gpus.clone(),
                        resources,
                    },
                );
            }
            for uid in pods.keys() {
                st.pod_plan.insert(uid.clone(), placement.gang.clone());
            }
            let touch: Vec<(String, String, String)> = pods
                .iter()
                .filter(|(uid, _)| Some(uid.as_str()) != asking)
                .map(|(_, s)| (s.namespace.clone(), s.name.clone(), s.node.clone()))
                .collect();
            if !touch.is_empty() {
                tokio::spawn(actions::nudge(self.client.clone(), touch));
            }
            st.plans.insert(
                placement.gang.clone(),
                LivePlan {
                    pods,
                    priority: gang.priority,
                    queue: gang.queue.clone(),
                    created_at: gang.created_at,
                    made: Instant::now(),
                    arrived: HashMap::new(),
                    released: false,
                },
            );
            self.metrics
                .gang_attempts
                .with_label_values(&["placed"])
                .inc();
        }
        for p in &plan.preemptions {
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
                        .get(&pod.0)
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(30));
                    if let (false, Some(info)) = (recent, snap.pods.get(&pod.0)) {
                        st.evicting.insert(pod.0.clone(), Instant::now());
                        victims.push((info.namespace.clone(), info.name.clone(), v.gang.clone()));
                    }
                }
            }
            tracing::info!(gang = %p.gang, victims = p.victims.len(), "{}", p.message);
            if !victims.is_empty() {
                tokio::spawn(actions::evict(
                    self.client.clone(),
                    p.gang.clone(),
                    victims,
                    self.metrics.clone(),
                    self.reporter.clone(),
                ));
            }
        }
        st.evicting
            .retain(|_, t| t.elapsed() < Duration::from_secs(300));
        let mut pending_by_queue: HashMap<String, i64> = HashMap::new();
        for w in &plan.waiting {
            st.verdicts.insert(
                w.gang.clone(),
                Answer::Wait {
                    message: w.message.clone(),
                    unresolvable: w.reason.unresolvable(),
                },
            );
            self.metrics
                .gang_attempts
                .with_label_values(&["waiting"])
                .inc();
            if let Some(g) = gang_of_pending.get(&w.gang) {
                *pending_by_queue.entry(g.queue.clone()).or_default() += 1;
            }
        }
        for (gang, info) in &snap.gangs {
            if let Some(problem) = &info.problem {
                st.verdicts.insert(
                    gang.clone(),
                    Answer::Wait {
                        message: problem.clone(),
                        unresolvable: true,
                    },
                );
            }
        }
        self.metrics.pending_gangs.reset();
        for (q, n) in pending_by_queue {
            self.metrics.pending_gangs.with_label_values(&[&q]).set(n);
        }
        if self.config.report {
            let updates = status::updates(
                &snap,
                &st.verdicts,
                &st.plans.keys().cloned().collect(),
                &mut st.reported,
                now,
            );
            if !updates.is_empty() {
                tokio::spawn(self.reporter.clone().write_status(updates));
            }
        }
        tracing::debug!(
            generation,
            placed = plan.placements.len(),
            preempting = plan.preemptions.len(),
            waiting = plan.waiting.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "planned"
        );
    }

    /// Re-plans in the background whenever the cache changes, so preemptions and statuses
    /// progress even when kube-scheduler is backing off.
    pub async fn run_background(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.cache.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            // Let bursts of events settle into one round.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut st = self.state.lock().await;
            self.expire(&mut st);
            let recent = st
                .last_replan
                .is_some_and(|t| t.elapsed() < MIN_FILTER_REPLAN);
            if self.cache.generation() != st.planned_generation && !recent {
                self.replan(&mut st, None);
            }
        }
    }
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
