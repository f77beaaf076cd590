//! Full planning rounds: every pending gang against a fresh snapshot, in priority order, with
//! preemption, reservations and explanations. The result becomes the base that single gangs
//! are placed on between rounds (see `fast`).

use super::adopt::{Names, nominations_pay};
use super::gate::GatedReason;
use super::{Answer, Base, Engine, State, now_secs, queues, status};
use crate::queues::QueueBuild;
use crate::snapshot::{self, Assumed, Planning, Snapshot};
use muster_core::{Gang, GangKey, WaitReason};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Engine {
    /// Plans every pending gang; `asking` is the pod being filtered, if any. The snapshot and
    /// the plan are computed without the state lock, so filter calls keep being answered from
    /// live plans meanwhile; nothing else adds plans while a round runs (the fast path pauses
    /// and rounds never overlap), so the result applies as computed.
    pub(super) async fn round(self: &Arc<Self>, asking: Option<&str>) {
        let _one_at_a_time = self.round_lock.lock().await;
        // Planning before the Queues are listed would ignore their limits (a startup race).
        if !self.cache.queues_known() {
            tracing::debug!("queues not listed yet: no round");
            return;
        }
        let started = Instant::now();
        let (planning, generation, node_generation) = {
            let mut st = self.state.lock().await;
            st.round_running = true;
            st.last_replan = Some(started);
            st.planned_freed = self.cache.signals.freed();
            st.arrival_unplaced = false;
            let node_generation = self.cache.node_generation();
            (
                planning_inputs(&st),
                self.cache.generation(),
                node_generation,
            )
        };
        let now = now_secs();
        let cache = self.cache.clone();
        let planner = self.config.planner.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let snap = snapshot::build(&cache, &planning, now);
            let queues = queues::from_cache(&cache);
            let built = t.elapsed();
            let plan = snap
                .cluster
                .plan_with_queues(&snap.pending, now, &planner, &queues.tree);
            (snap, plan, queues, built, t.elapsed() - built)
        })
        .await;
        let mut st = self.state.lock().await;
        st.round_running = false;
        st.last_round_took = started.elapsed();
        match computed {
            Ok((snap, plan, queues, built, planned)) => {
                for (phase, took) in [("snapshot", built), ("plan", planned)] {
                    self.metrics
                        .plan_seconds
                        .with_label_values(&[phase])
                        .observe(took.as_secs_f64());
                }
                self.apply_round(
                    &mut st,
                    snap,
                    (plan, queues),
                    (generation, node_generation),
                    now,
                    asking,
                );
            }
            Err(e) => tracing::error!(error = %e, "planning round failed"),
        }
    }

    fn apply_round(
        self: &Arc<Self>,
        st: &mut State,
        snap: Snapshot,
        (plan, queue_build): (muster_core::Plan, QueueBuild),
        (generation, node_generation): (u64, u64),
        now: u64,
        asking: Option<&str>,
    ) {
        let started = Instant::now();
        st.planned_generation = generation;
        st.seen_pods = snap.pods.keys().cloned().collect();
        st.rejected.retain(|uid| st.seen_pods.contains(uid));
        st.gate_released.retain(|uid, _| st.seen_pods.contains(uid));
        st.gate_explained.retain(&st.seen_pods);
        st.verdicts.clear();
        st.short_of_members.clear();

        let gang_of_pending: HashMap<&GangKey, &Gang> =
            snap.pending.iter().map(|g| (&g.key, g)).collect();
        let name_of = |uid: &str| {
            snap.pods
                .get(uid)
                .map(|p| (p.namespace.clone(), p.name.clone()))
        };
        let placed_gpus: u64 = plan
            .placements
            .iter()
            .flat_map(|p| &p.assignments)
            .map(|a| a.gpus.len() as u64)
            .sum();
        let waiting_gpus: u64 = plan
            .waiting
            .iter()
            .filter_map(|w| gang_of_pending.get(&w.gang))
            .flat_map(|g| &g.pending)
            .map(|m| u64::from(m.resources.gpus))
            .sum();
        // Victims of Muster's own evictions only: pods deleted by others (a finished job)
        // also count as terminating for the planner, and those need no hurry.
        let evicted_lately = st
            .evicting
            .values()
            .any(|t| t.elapsed() < Duration::from_secs(30));
        st.awaiting_victims = !plan.preemptions.is_empty()
            || (evicted_lately
                && plan
                    .waiting
                    .iter()
                    .any(|w| w.reason == WaitReason::WaitingForVictims));
        st.waiting_for_room = plan
            .waiting
            .iter()
            .any(|w| matches!(w.reason, WaitReason::Capacity | WaitReason::Fragmentation));
        st.nominate_now = nominations_pay(
            waiting_gpus,
            snap.cluster.free_gpu_total().saturating_sub(placed_gpus),
            !plan.preemptions.is_empty(),
        );
        for placement in &plan.placements {
            if let (Some(gang), Some(info)) = (
                gang_of_pending.get(&placement.gang),
                snap.gangs.get(&placement.gang),
            ) {
                let names = Names {
                    name_of: &name_of,
                    gpu_ids: &snap.gpu_ids,
                };
                self.adopt(st, gang, &info.source, placement, names, asking);
            }
        }
        // Planned members a failed write or a restart left gated (once per round).
        self.release_gates(st);
        self.start_preemptions(st, &plan.preemptions, &snap);
        let mut pending_by_queue: HashMap<String, i64> = HashMap::new();
        for w in &plan.waiting {
            if w.reason == WaitReason::MissingMembers {
                st.short_of_members.insert(w.gang.clone());
            }
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
        // Gangs that wait, and gangs that cannot be planned (a missing PodGroup, a bad
        // annotation): their gated members say why. So do members beyond a gang's minimum that
        // found no room: only gangs this round did not place whole have any (their members are
        // not walked every round).
        let decided: HashSet<&GangKey> = (plan.waiting.iter().map(|w| &w.gang))
            .chain(plan.preemptions.iter().map(|p| &p.gang))
            .collect();
        let placed: HashMap<&GangKey, usize> = (plan.placements.iter())
            .map(|p| (&p.gang, p.assignments.len()))
            .collect();
        let beyond_minimum = snap
            .pending
            .iter()
            .filter(|g| {
                let problem = snap.gangs.get(&g.key).is_some_and(|i| i.problem.is_some());
                let whole = placed.get(&g.key).is_some_and(|&n| n >= g.pending.len());
                !decided.contains(&g.key) && !problem && !whole
            })
            .map(|g| (&g.key, GatedReason::BeyondMinimum(g.min_member)));
        let gated =
            self.gated_waits(
                st,
                (plan.waiting.iter())
                    .map(|w| (&w.gang, GatedReason::Gang(&w.message)))
                    .chain(snap.gangs.iter().filter_map(|(k, info)| {
                        Some((k, GatedReason::Gang(info.problem.as_deref()?)))
                    }))
                    .chain(beyond_minimum),
            );
        self.explain_gated(st, gated);
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
        // Queues with nothing waiting report 0 (not no series), so the dashboard's pending
        // gangs per queue shows every queue.
        for q in &plan.queues {
            pending_by_queue.entry(q.name.clone()).or_default();
        }
        self.metrics.pending_gangs.reset();
        for (q, n) in pending_by_queue {
            self.metrics.pending_gangs.with_label_values(&[&q]).set(n);
        }
        queues::log_problems(&mut st.queue_problems, &queue_build.problems);
        queues::record_metrics(&self.metrics, &plan.queues);
        // The leader's alone: a round that outlived leadership writes nothing.
        if self.config.report && self.is_leader() {
            let names: Vec<String> = self
                .cache
                .queues
                .state()
                .iter()
                .filter_map(|q| q.metadata.name.clone())
                .collect();
            let updates = queues::status_updates(
                &names,
                &plan.queues,
                &queue_build.problems,
                &mut st.queue_reported,
                now,
            );
            if !updates.is_empty() {
                let engine = self.clone();
                tokio::spawn(async move {
                    let failed = queues::write_status(engine.client.clone(), updates).await;
                    // Forgotten as written, so the next round writes them again.
                    if !failed.is_empty() {
                        let mut st = engine.state.lock().await;
                        for q in failed {
                            st.queue_reported.remove(&q);
                        }
                    }
                });
            }
        }
        if self.config.report {
            let volcano_groups: Vec<GangKey> = self
                .cache
                .volcano
                .state()
                .iter()
                .filter_map(|g| {
                    Some(GangKey::new(
                        g.metadata.namespace.clone()?,
                        g.metadata.name.clone()?,
                    ))
                })
                .collect();
            let updates = status::updates(
                &snap.gangs,
                &volcano_groups,
                &st.verdicts,
                &st.plans.keys().cloned().collect(),
                &mut st.reported,
                now,
            );
            if !updates.is_empty() {
                tokio::spawn(self.reporter.clone().write_status(updates));
            }
        }
        // Single gangs may be placed on this round's result until the next round, unless it
        // holds capacity for someone: a reservation or victims still terminating.
        let open =
            plan.preemptions.is_empty() && plan.waiting.iter().all(|w| w.reserved_nodes.is_empty());
        let mut cluster = snap.cluster;
        for placement in &plan.placements {
            if let Some(gang) = gang_of_pending.get(&placement.gang)
                && let Err(e) = cluster.commit(gang, &placement.assignments, now)
            {
                tracing::warn!(gang = %placement.gang, error = %e, "planned gang does not fit its own plan");
            }
        }
        st.base = Some(Base {
            cluster,
            gpu_ids: snap.gpu_ids,
            open,
            node_generation,
            queues: Arc::new(queue_build.tree),
        });
        tracing::debug!(
            generation,
            placed = plan.placements.len(),
            preempting = plan.preemptions.len(),
            waiting = plan.waiting.len(),
            apply_ms = started.elapsed().as_millis() as u64,
            "planned"
        );
    }
}

/// What the engine's plans add to the next snapshot: every planned, unbound pod holds its
/// place; gangs at their barrier hold their other members back; refused nodes stay excluded.
fn planning_inputs(st: &State) -> Planning {
    let assumed = st
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
    let held = st
        .plans
        .iter()
        .filter(|(_, p)| !p.released)
        .map(|(g, _)| g.clone())
        .collect();
    let excluded = st
        .excluded
        .iter()
        .map(|(uid, e)| (uid.clone(), e.nodes.iter().cloned().collect()))
        .collect();
    Planning {
        assumed,
        held,
        excluded,
    }
}
