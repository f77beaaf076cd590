//! The fault injector: on a seeded random schedule, one fault at a time, cycling through every
//! kind in a shuffled order (so a short run sees each). Undo actions (uncordon, a fresh node
//! for a deleted one, a GPU healthy again) come due later on an agenda.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use muster_testcluster::{Component, NodeSpec, TestCluster};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::checker::{self, gang_of, is_live_bound, node_of};
use crate::extender::Extender;
use crate::setup::{Env, Stores};
use crate::state::Shared;
use crate::{NAMESPACE, SoakConfig, gpunode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    DeletePendingMember,
    DeleteRunningMember,
    Cordon,
    DeleteNode,
    UnhealthyGpu,
    RestartExtender,
    RestartScheduler,
    KillScheduler,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::DeletePendingMember,
        Fault::DeleteRunningMember,
        Fault::Cordon,
        Fault::DeleteNode,
        Fault::UnhealthyGpu,
        Fault::RestartExtender,
        Fault::RestartScheduler,
        Fault::KillScheduler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::DeletePendingMember => "delete-pending-member",
            Fault::DeleteRunningMember => "delete-running-member",
            Fault::Cordon => "cordon-node",
            Fault::DeleteNode => "delete-node",
            Fault::UnhealthyGpu => "unhealthy-gpu",
            Fault::RestartExtender => "restart-extender",
            Fault::RestartScheduler => "restart-kube-scheduler",
            Fault::KillScheduler => "kill-kube-scheduler",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultStats {
    /// Faults injected, by kind.
    pub injected: BTreeMap<String, u64>,
    /// Follow-ups: uncordon, node-added, gpu-healthy-again.
    pub undone: BTreeMap<String, u64>,
    /// A fault was due but had nothing to act on (e.g. no pending member).
    pub skipped: u64,
    pub errors: u64,
}

enum Undo {
    Uncordon(String),
    AddNode,
    Heal(String, u32),
}

pub struct Injector {
    cluster: Arc<TestCluster>,
    client: Client,
    stores: Stores,
    shared: Arc<Shared>,
    extender: Arc<tokio::sync::Mutex<Extender>>,
    rng: SmallRng,
    fixture: String,
    interval: Duration,
    min_nodes: usize,
    node_generation: u32,
    unhealthy: HashMap<String, BTreeSet<u32>>,
    agenda: Vec<(Instant, Undo)>,
    stats: FaultStats,
}

impl Injector {
    pub fn new(config: &SoakConfig, env: &Env, shared: Arc<Shared>) -> Injector {
        Injector {
            cluster: env.cluster.clone(),
            client: env.client.clone(),
            stores: env.stores.clone(),
            shared,
            extender: env.extender.clone(),
            // A stream of its own: the workload's choices do not shift the fault schedule.
            rng: SmallRng::seed_from_u64(config.seed ^ 0x5eed_fa17),
            fixture: config.fixture.clone(),
            interval: config.fault_interval,
            min_nodes: (config.nodes as usize * 3).div_ceil(4).max(1),
            node_generation: 0,
            unhealthy: HashMap::new(),
            agenda: Vec::new(),
            stats: FaultStats::default(),
        }
    }

    pub async fn run(mut self, deadline: Instant) -> FaultStats {
        if self.interval.is_zero() {
            return self.stats;
        }
        let mut order: Vec<Fault> = Vec::new();
        // Let the first gangs arrive before disturbing them.
        let mut next = Instant::now() + self.interval;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.run_agenda().await;
            if Instant::now() < next {
                continue;
            }
            let ms = self.interval.as_millis() as u64;
            next =
                Instant::now() + Duration::from_millis(self.rng.random_range(ms / 2..=ms * 3 / 2));
            // Up to one full cycle of kinds until one finds something to act on.
            for _ in 0..Fault::ALL.len() {
                if order.is_empty() {
                    order = Fault::ALL.to_vec();
                    order.shuffle(&mut self.rng);
                }
                let fault = order.remove(0);
                match self.inject(fault).await {
                    Ok(true) => {
                        *self.stats.injected.entry(fault.name().into()).or_default() += 1;
                        break;
                    }
                    Ok(false) => self.stats.skipped += 1,
                    Err(e) => {
                        self.stats.errors += 1;
                        tracing::warn!(fault = fault.name(), "fault failed: {e:#}");
                        break;
                    }
                }
            }
        }
        self.stats
    }

    async fn run_agenda(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.agenda)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.agenda = later;
        for (_, undo) in due {
            let (kind, result) = match undo {
                Undo::Uncordon(node) => ("uncordon", self.set_unschedulable(&node, false).await),
                Undo::AddNode => ("node-added", self.add_node()),
                Undo::Heal(node, index) => ("gpu-healthy-again", self.heal(&node, index).await),
            };
            match result {
                Ok(()) => *self.stats.undone.entry(kind.into()).or_default() += 1,
                Err(e) => {
                    self.stats.errors += 1;
                    tracing::warn!(kind, "undo failed: {e:#}");
                }
            }
        }
    }

    fn later(&mut self, min_s: u64, max_s: u64, undo: Undo) {
        let after = Duration::from_millis(self.rng.random_range(min_s * 1000..=max_s * 1000));
        self.agenda.push((Instant::now() + after, undo));
    }

    fn live_nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<Arc<Node>> = self
            .stores
            .nodes
            .state()
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .collect();
        nodes.sort_by_key(|n| n.name_any());
        nodes
    }

    /// Ok(false): nothing to act on.
    async fn inject(&mut self, fault: Fault) -> anyhow::Result<bool> {
        tracing::info!(fault = fault.name(), "injecting");
        match fault {
            Fault::DeletePendingMember | Fault::DeleteRunningMember => {
                let running = fault == Fault::DeleteRunningMember;
                let mut pods: Vec<Arc<Pod>> = self
                    .stores
                    .pods
                    .state()
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        gang_of(p).is_some_and(|(g, _)| {
                            !self.shared.is_retired(&g)
                                && if running {
                                    is_live_bound(p) && self.shared.reached_min(&g).is_some()
                                } else {
                                    node_of(p).is_none()
                                }
                        })
                    })
                    .collect();
                pods.sort_by_key(|p| p.name_any());
                let Some(pod) = pods
                    .get(self.rng.random_range(0..pods.len().max(1)))
                    .cloned()
                else {
                    return Ok(false);
                };
                if let Some((gang, _)) = gang_of(&pod) {
                    self.shared.disturb(&gang);
                }
                let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
                match api
                    .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(pod = %pod.name_any(), "deleted member");
                Ok(true)
            }
            Fault::Cordon => {
                let nodes: Vec<String> = self
                    .live_nodes()
                    .iter()
                    .filter(|n| checker::capacity::schedulable(n))
                    .map(|n| n.name_any())
                    .collect();
                if nodes.len() <= self.min_nodes {
                    return Ok(false);
                }
                let node = nodes[self.rng.random_range(0..nodes.len())].clone();
                self.set_unschedulable(&node, true).await?;
                tracing::info!(%node, "cordoned");
                self.later(5, 30, Undo::Uncordon(node));
                Ok(true)
            }
            Fault::DeleteNode => {
                let nodes = self.live_nodes();
                if nodes.len() <= self.min_nodes {
                    return Ok(false);
                }
                let node = nodes[self.rng.random_range(0..nodes.len())].name_any();
                self.delete_node(&node).await?;
                self.later(5, 20, Undo::AddNode);
                Ok(true)
            }
            Fault::UnhealthyGpu => {
                let nodes = self.live_nodes();
                if nodes.is_empty() {
                    return Ok(false);
                }
                let node = nodes[self.rng.random_range(0..nodes.len())].name_any();
                let count = muster_api::machines::builtin(&self.fixture)?.gpu_count() as u32;
                let set = self.unhealthy.entry(node.clone()).or_default();
                let free: Vec<u32> = (0..count).filter(|i| !set.contains(i)).collect();
                if free.is_empty() {
                    return Ok(false);
                }
                let index = free[self.rng.random_range(0..free.len())];
                set.insert(index);
                let set = set.clone();
                let uuid = gpunode::uuid_of(&node, &self.fixture, index);
                self.shared.mark_unhealthy(&uuid);
                gpunode::apply(&self.client, gpunode::spec_for(&node, &self.fixture, &set)?)
                    .await?;
                tracing::info!(%node, index, %uuid, "GPU marked unhealthy");
                self.later(20, 60, Undo::Heal(node, index));
                Ok(true)
            }
            Fault::RestartExtender => {
                self.shared.set_extender_restarting(true);
                let result = self.extender.lock().await.restart().await;
                self.shared.set_extender_restarting(false);
                result.map(|()| true)
            }
            Fault::RestartScheduler => {
                self.cluster.restart_component(Component::Scheduler).await?;
                Ok(true)
            }
            Fault::KillScheduler => {
                self.cluster.kill_component(Component::Scheduler);
                tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..3000))).await;
                self.cluster.start_component(Component::Scheduler).await?;
                Ok(true)
            }
        }
    }

    async fn set_unschedulable(&self, node: &str, on: bool) -> anyhow::Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"spec": {"unschedulable": on}});
        match api
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_node(&mut self, node: &str) -> anyhow::Result<()> {
        // Gangs with a member on it or headed for it: their loss is the soak's doing.
        for pod in self.stores.pods.state() {
            let nominated = pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref());
            if (node_of(&pod) == Some(node) || nominated == Some(node))
                && let Some((gang, _)) = gang_of(&pod)
            {
                self.shared.disturb(&gang);
            }
        }
        if let Some(set) = self.unhealthy.remove(node) {
            for index in set {
                self.shared
                    .mark_healthy(&gpunode::uuid_of(node, &self.fixture, index));
            }
        }
        Api::<Node>::all(self.client.clone())
            .delete(node, &DeleteParams::default())
            .await?;
        gpunode::delete(&self.client, node).await?;
        tracing::info!(%node, "node deleted");
        Ok(())
    }

    /// A fresh node under a new name (new GPU UUIDs), added in the background.
    fn add_node(&mut self) -> anyhow::Result<()> {
        self.node_generation += 1;
        let mut spec = NodeSpec::fixture(&self.fixture, 1);
        spec.name_prefix = format!("{}-r{}-", self.fixture, self.node_generation);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            match cluster.add_gpu_nodes(&spec).await {
                Ok(names) => tracing::info!(?names, "node added"),
                Err(e) => tracing::warn!("adding a node: {e}"),
            }
        });
        Ok(())
    }

    async fn heal(&mut self, node: &str, index: u32) -> anyhow::Result<()> {
        let Some(set) = self.unhealthy.get_mut(node) else {
            // The node was deleted meanwhile.
            return Ok(());
        };
        set.remove(&index);
        let set = set.clone();
        gpunode::apply(&self.client, gpunode::spec_for(node, &self.fixture, &set)?).await?;
        self.shared
            .mark_healthy(&gpunode::uuid_of(node, &self.fixture, index));
        Ok(())
    }
}
