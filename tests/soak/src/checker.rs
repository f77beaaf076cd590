//! The invariant checker. Every pod watch event updates a mirror of the soak's pods (events
//! come in resourceVersion order, so the sequence of states seen is the API server's); the
//! GPU-exclusivity check runs on every event, the gang checks on a 250 ms tick:
//!
//! - `duplicate-gpu` (a): one GPU UUID on two live pods (bound, not finished, not deleting);
//! - `anonymous` (b, warning): a GPU pod bound without `muster.dev/gpu-ids` on a node whose
//!   GPUs Muster knows (fixture label or GpuNode); `gpu-ids-mismatch` and `unhealthy-gpu` are
//!   warnings too (wrong count/node/UUID; a UUID the soak marked unhealthy 10 s earlier);
//! - `partial-gang` (c): some but fewer than min-available members live and bound, for longer
//!   than `partial_bound`, in a gang that never had its minimum bound at once, and that the
//!   soak did not disturb (a member or node deleted) from 10 s before its first bind on;
//! - `stuck` (d): all members present, fewer than min bound, for longer than `stuck`, although
//!   the unbound members fitted the free GPUs for `fit_sustain` in a row meanwhile;
//! - `overcommit` (each second): a node whose live bound pods ask for more GPUs than it has.

pub mod capacity;
mod gangs;
mod pods;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher::Event;
use serde::Serialize;
use serde_json::json;

pub use capacity::{free_gpus_per_node, gpu_capacity};
pub use pods::{PodRec, gang_of, gpu_ids, gpu_request, is_live_bound, is_terminal, node_of};

use crate::SoakConfig;
use crate::setup::{PodEvents, Stores};
use crate::state::Shared;

/// Disturbances this long before a gang's first bind still exempt it from (c): the soak's
/// delete can race the gang's Bindings.
const DISTURB_WINDOW: Duration = Duration::from_secs(10);
/// A pod bound this long after its GPU was marked unhealthy is reported.
const UNHEALTHY_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckStats {
    pub pod_events: u64,
    pub watch_restarts: u64,
    pub watch_errors: u64,
    pub ticks: u64,
    /// Live bound pods whose GPU UUIDs were checked against every other live pod.
    pub gpu_exclusivity_checks: u64,
    pub partial_gang_checks: u64,
    pub liveness_checks: u64,
    pub pods_seen: u64,
    pub gangs_seen: u64,
    /// Gangs whose min-available members were live and bound at once.
    pub gangs_bound: u64,
    /// Partial gangs not reported because the soak had disturbed them.
    pub partial_exempted: u64,
    pub max_live_bound_pods: u64,
    pub overcommit_checks: u64,
}

#[derive(Debug)]
struct GangRec {
    min: u32,
    pods: BTreeSet<String>,
    first_bound: Option<Instant>,
    reached_min: bool,
    partial_since: Option<Instant>,
    partial_done: bool,
    pending_since: Option<Instant>,
    fits_since: Option<Instant>,
    eligible: bool,
    stuck_done: bool,
}

pub struct Checker {
    partial_bound: Duration,
    stuck: Duration,
    fit_sustain: Duration,
    fixture: String,
    stores: Stores,
    shared: Arc<Shared>,
    pods: HashMap<String, PodRec>,
    gangs: HashMap<String, GangRec>,
    owners: HashMap<String, BTreeSet<String>>,
    reported_dups: HashSet<(String, BTreeSet<String>)>,
    warned: HashSet<(String, &'static str)>,
    relist: Option<HashSet<String>>,
    overcommitted: HashSet<String>,
    live_bound: u64,
    last_liveness: Instant,
    stats: CheckStats,
}

impl Checker {
    pub fn new(config: &SoakConfig, stores: Stores, shared: Arc<Shared>) -> Checker {
        Checker {
            partial_bound: config.partial_bound,
            stuck: config.stuck,
            fit_sustain: config.fit_sustain,
            fixture: config.fixture.clone(),
            stores,
            shared,
            pods: HashMap::new(),
            gangs: HashMap::new(),
            owners: HashMap::new(),
            reported_dups: HashSet::new(),
            warned: HashSet::new(),
            relist: None,
            overcommitted: HashSet::new(),
            live_bound: 0,
            last_liveness: Instant::now(),
            stats: CheckStats::default(),
        }
    }

    pub async fn run(mut self, mut events: PodEvents, deadline: Instant) -> CheckStats {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_event(event),
                    Some(Err(e)) => {
                        self.stats.watch_errors += 1;
                        tracing::debug!("pod watch error (retrying): {e}");
                    }
                    None => {
                        tracing::error!("the pod watch ended");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                },
                _ = tick.tick() => {
                    self.on_tick();
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        self.stats.gangs_seen = self.gangs.len() as u64;
        self.stats.gangs_bound = self.gangs.values().filter(|g| g.reached_min).count() as u64;
        self.stats
    }

    fn on_event(&mut self, event: Event<k8s_openapi::api::core::v1::Pod>) {
        self.stats.pod_events += 1;
        match event {
            Event::Init => {
                self.stats.watch_restarts += 1;
                self.relist = Some(HashSet::new());
            }
            Event::InitApply(pod) => {
                let rec = PodRec::from_pod(&pod);
                if let Some(seen) = &mut self.relist {
                    seen.insert(rec.uid.clone());
                }
                self.apply(rec);
            }
            Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.remove(&uid);
                    }
                }
            }
            Event::Apply(pod) => self.apply(PodRec::from_pod(&pod)),
            Event::Delete(pod) => {
                let rec = PodRec::from_pod(&pod);
                self.remove(&rec.uid);
            }
        }
    }

    fn apply(&mut self, mut rec: PodRec) {
        let now = Instant::now();
        let old = self.pods.remove(&rec.uid);
        if old.is_none() {
            self.stats.pods_seen += 1;
        }
        rec.first_bound = old.as_ref().and_then(|o| o.first_bound);
        if rec.live_bound && rec.first_bound.is_none() {
            rec.first_bound = Some(now);
        }
        if let Some(old) = &old
            && old.live_bound
        {
            self.release(old);
        }
        if rec.live_bound {
            self.live_bound += 1;
            self.stats.max_live_bound_pods = self.stats.max_live_bound_pods.max(self.live_bound);
            self.stats.gpu_exclusivity_checks += 1;
            for uuid in &rec.uuids {
                let owners = self.owners.entry(uuid.clone()).or_default();
                owners.insert(rec.uid.clone());
                if owners.len() > 1 {
                    let owners = owners.clone();
                    self.report_duplicate(uuid, owners, &rec);
                }
            }
            if old.as_ref().is_none_or(|o| !o.live_bound) {
                self.check_binding(&rec, now);
            }
        }
        if let Some((gang, min)) = rec.gang.clone() {
            let g = self.gangs.entry(gang.clone()).or_insert_with(|| GangRec {
                min,
                pods: BTreeSet::new(),
                first_bound: None,
                reached_min: false,
                partial_since: None,
                partial_done: false,
                pending_since: None,
                fits_since: None,
                eligible: false,
                stuck_done: false,
            });
            g.pods.insert(rec.uid.clone());
            self.pods.insert(rec.uid.clone(), rec);
            self.update_gang(&gang, now);
        } else {
            self.pods.insert(rec.uid.clone(), rec);
        }
    }

    fn release(&mut self, old: &PodRec) {
        self.live_bound = self.live_bound.saturating_sub(1);
        for uuid in &old.uuids {
            if let Some(owners) = self.owners.get_mut(uuid) {
                owners.remove(&old.uid);
                if owners.is_empty() {
                    self.owners.remove(uuid);
                }
            }
        }
    }

    fn remove(&mut self, uid: &str) {
        let Some(old) = self.pods.remove(uid) else {
            return;
        };
        if old.live_bound {
            self.release(&old);
        }
        if let Some((gang, _)) = &old.gang
            && let Some(g) = self.gangs.get_mut(gang)
        {
            g.pods.remove(uid);
        }
    }

    fn live_bound_of(&self, g: &GangRec) -> u32 {
        g.pods
            .iter()
            .filter(|uid| self.pods.get(*uid).is_some_and(|p| p.live_bound))
            .count() as u32
    }

    fn update_gang(&mut self, gang: &str, now: Instant) {
        let Some(g) = self.gangs.get(gang) else {
            return;
        };
        let bound = self.live_bound_of(g);
        let Some(g) = self.gangs.get_mut(gang) else {
            return;
        };
        if bound > 0 && g.first_bound.is_none() {
            g.first_bound = Some(now);
        }
        if bound >= g.min && !g.reached_min {
            g.reached_min = true;
            self.shared.set_reached_min(gang, now);
        }
    }

    fn report_duplicate(&mut self, uuid: &str, owners: BTreeSet<String>, rec: &PodRec) {
        if !self
            .reported_dups
            .insert((uuid.to_string(), owners.clone()))
        {
            return;
        }
        let pods: Vec<_> = owners
            .iter()
            .filter_map(|uid| self.pods.get(uid).or((uid == &rec.uid).then_some(rec)))
            .map(|p| json!({"pod": p.name, "node": p.node, "gang": p.gang.as_ref().map(|g| &g.0), "gpu_ids": p.uuids}))
            .collect();
        self.shared.violation(
            "duplicate-gpu",
            json!({"uuid": uuid, "pods": pods, "at_s": self.shared.at(Instant::now())}),
        );
    }

    /// (b) and the annotation warnings, once per pod when it is first seen live and bound.
    fn check_binding(&mut self, rec: &PodRec, now: Instant) {
        if rec.gpus == 0 {
            return;
        }
        let Some(node) = rec.node.clone() else {
            return;
        };
        let known = capacity::node_uuids(&self.stores, &node, &self.fixture);
        let at = self.shared.at(now);
        if rec.uuids.is_empty() {
            if known.is_some() {
                self.warn_once(
                    rec,
                    "anonymous",
                    json!({"pod": rec.name, "node": node, "gpus": rec.gpus, "at_s": at}),
                );
            }
            return;
        }
        let mut problems = Vec::new();
        if rec.uuids.len() as u32 != rec.gpus {
            problems.push(format!("{} UUIDs for {} GPUs", rec.uuids.len(), rec.gpus));
        }
        if rec.gpu_node.as_deref().is_some_and(|n| n != node) {
            problems.push(format!("gpu-node {:?} but bound to {node}", rec.gpu_node));
        }
        if let Some(known) = &known {
            for uuid in rec.uuids.iter().filter(|u| !known.contains(*u)) {
                problems.push(format!("UUID {uuid} is not a GPU of {node}"));
            }
        }
        if !problems.is_empty() {
            self.warn_once(
                rec,
                "gpu-ids-mismatch",
                json!({"pod": rec.name, "node": node, "problems": problems, "at_s": at}),
            );
        }
        for uuid in &rec.uuids {
            if let Some(t) = self.shared.unhealthy_since(uuid)
                && now.duration_since(t) > UNHEALTHY_GRACE
            {
                let example = json!({"pod": rec.name, "node": node, "uuid": uuid,
                    "unhealthy_for_s": now.duration_since(t).as_secs(), "at_s": at});
                self.warn_once(rec, "unhealthy-gpu", example);
            }
        }
    }

    fn warn_once(&mut self, rec: &PodRec, kind: &'static str, example: serde_json::Value) {
        if self.warned.insert((rec.uid.clone(), kind)) {
            self.shared.warning(kind, example);
        }
    }

    fn on_tick(&mut self) {
        self.stats.ticks += 1;
        let now = Instant::now();
        let liveness = now.duration_since(self.last_liveness) >= Duration::from_secs(1);
        let free = if liveness {
            self.last_liveness = now;
            self.check_overcommit(now);
            Some(free_gpus_per_node(&self.stores, &self.pods, &self.fixture))
        } else {
            None
        };
        let names: Vec<String> = self.gangs.keys().cloned().collect();
        for name in names {
            if self.shared.is_retired(&name) {
                continue;
            }
            self.check_partial(&name, now);
            if let Some(free) = &free {
                self.check_liveness(&name, free, now);
            }
        }
    }

    /// More GPUs asked by live bound pods of a node than it has: `overcommit` (once per
    /// episode and node).
    fn check_overcommit(&mut self, now: Instant) {
        let mut asked: HashMap<&str, (u32, Vec<&str>)> = HashMap::new();
        for p in self.pods.values().filter(|p| p.live_bound && p.gpus > 0) {
            if let Some(node) = p.node.as_deref() {
                let e = asked.entry(node).or_default();
                e.0 += p.gpus;
                e.1.push(&p.name);
            }
        }
        let mut over = HashSet::new();
        for node in self.stores.nodes.state() {
            let Some(name) = node.metadata.name.as_deref() else {
                continue;
            };
            self.stats.overcommit_checks += 1;
            let have = capacity::allocatable_gpus(&node);
            let Some((n, pods)) = asked.get(name) else {
                continue;
            };
            if *n > have {
                over.insert(name.to_string());
                if !self.overcommitted.contains(name) {
                    self.shared.violation(
                        "overcommit",
                        json!({"node": name, "gpus": have, "asked": n, "pods": pods, "at_s": self.shared.at(now)}),
                    );
                }
            }
        }
        self.overcommitted = over;
    }
}
