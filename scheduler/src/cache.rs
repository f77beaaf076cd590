//! The cluster cache: kube-rs reflectors for everything placement reads.
//!
//! Every event bumps a generation counter, so the engine re-plans only when something changed.
//! Kinds whose CRD may be absent (other schedulers' PodGroups and Queues, GpuNode before the
//! agent is installed) just stay empty while their watch retries with backoff.

use crate::gang_index::GangIndex;
use crate::pod_signals::PodSignals;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use muster_api::SchedulerNames;
use muster_core::NodeInfo;
use muster_crds::compat::{coscheduling, volcano};
use muster_crds::{GpuNode, PodGroup, Queue};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A pod's requests, or why they cannot be counted.
pub(crate) type Requests = Result<muster_core::Resources, String>;

#[derive(Clone)]
pub struct Cache {
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub pod_groups: Store<PodGroup>,
    pub coscheduling: Store<coscheduling::PodGroup>,
    pub volcano: Store<volcano::PodGroup>,
    pub upstream: Store<UpstreamPodGroup>,
    pub priority_classes: Store<PriorityClass>,
    pub gpu_nodes: Store<GpuNode>,
    /// Muster's Queues (the CRD may be absent: empty).
    pub queues: Store<Queue>,
    /// Volcano's Queues (usually absent: empty).
    pub volcano_queues: Store<volcano::Queue>,
    /// Namespaces, for their `muster.dev/queue` annotation.
    pub namespaces: Store<Namespace>,
    /// Pods by gang, from the same pod watch.
    pub gangs: GangIndex,
    /// Gated arrivals and freed capacity, from the same pod watch (see `pod_signals`).
    pub signals: PodSignals,
    /// Nodes as the core sees them, by name, with the resourceVersions they were made from.
    pub(crate) node_infos: NodeInfoMemo,
    /// Pod requests by UID, with the resourceVersion they were read from.
    pub(crate) pod_requests:
        Arc<std::sync::Mutex<std::collections::HashMap<String, (String, Requests)>>>,
    /// Pods (UID) whose GPU annotation was ignored and said so: one warning per pod.
    pub(crate) annotation_warnings: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    generation: Arc<AtomicU64>,
    /// Bumped when what placement reads of a Node changes (not on heartbeats), and on every
    /// GpuNode event: capacity, health, links.
    node_generation: Arc<AtomicU64>,
    changed: Arc<Notify>,
    /// GpuNodes have been listed once: until then a node without a fixture label may only
    /// look GPU-less (its GPUs' identities are not known yet).
    gpu_nodes_listed: Arc<AtomicBool>,
    /// Which pods are Muster's (kube-scheduler runs a profile per name).
    scheduler_names: Arc<SchedulerNames>,
    /// Per kind that decides queues (Muster's and Volcano's Queues, Namespaces): listed, or
    /// its CRD is absent. Until all are, no round plans: planning without a limit that exists
    /// could place gangs above it.
    queue_kinds_known: [Arc<AtomicBool>; 3],
}

impl Cache {
    /// Starts every watch; returns once Nodes and Pods are listed (or `timeout` passes).
    pub async fn start(client: Client, timeout: Duration) -> anyhow::Result<Cache> {
        let generation = Arc::new(AtomicU64::new(1));
        let changed = Arc::new(Notify::new());
        let w = Watches {
            generation: generation.clone(),
            changed: changed.clone(),
        };
        let gangs = GangIndex::default();
        let index = gangs.clone();
        let signals = PodSignals::default();
        let observe_pods = signals.clone();
        let node_generation = Arc::new(AtomicU64::new(1));
        let mut on_node = NodeChanges {
            generation: node_generation.clone(),
            fingerprints: Default::default(),
        };
        let on_gpu_node = node_generation.clone();
        let known: [Arc<AtomicBool>; 3] = Default::default();
        let cache = Cache {
            nodes: w.watch_with(Api::<Node>::all(client.clone()), move |e| on_node.apply(e)),
            pods: w.watch_with(Api::<Pod>::all(client.clone()), move |e| {
                index.apply(e);
                observe_pods.observe(e);
            }),
            pod_groups: w.watch(Api::<PodGroup>::all(client.clone())),
            coscheduling: w.watch(Api::<coscheduling::PodGroup>::all(client.clone())),
            volcano: w.watch(Api::<volcano::PodGroup>::all(client.clone())),
            upstream: w.watch(Api::<UpstreamPodGroup>::all(client.clone())),
            priority_classes: w.watch(Api::<PriorityClass>::all(client.clone())),
            gpu_nodes: w.watch_with(Api::<GpuNode>::all(client.clone()), move |_| {
                on_gpu_node.fetch_add(1, Ordering::AcqRel);
            }),
            queues: w.watch_known(Api::<Queue>::all(client.clone()), known[0].clone()),
            volcano_queues: w
                .watch_known(Api::<volcano::Queue>::all(client.clone()), known[1].clone()),
            namespaces: w.watch_known(Api::<Namespace>::all(client), known[2].clone()),
            gangs,
            signals,
            node_infos: NodeInfoMemo::default(),
            pod_requests: Arc::default(),
            annotation_warnings: Arc::default(),
            generation,
            node_generation,
            changed,
            gpu_nodes_listed: Arc::default(),
            scheduler_names: Arc::default(),
            queue_kinds_known: known,
        };
        {
            let (store, listed) = (cache.gpu_nodes.clone(), cache.gpu_nodes_listed.clone());
            let (generation, changed) = (cache.generation.clone(), cache.changed.clone());
            let nodes = cache.node_generation.clone();
            tokio::spawn(async move {
                if store.wait_until_ready().await.is_ok() {
                    listed.store(true, Ordering::Release);
                    nodes.fetch_add(1, Ordering::AcqRel);
                    generation.fetch_add(1, Ordering::AcqRel);
                    changed.notify_waiters();
                    tracing::info!("GpuNodes listed: GPU identities known");
                }
            });
        }
        let ready = async {
            cache.nodes.wait_until_ready().await?;
            cache.pods.wait_until_ready().await
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(())) => Ok(cache),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "cluster cache stopped before it was ready: {e}"
            )),
            Err(_) => Err(anyhow::anyhow!(
                "cluster cache: nodes and pods not listed within {timeout:?}; is the API server reachable?"
            )),
        }
    }

    /// A cache filled once from listed objects, without watches: for tools (`kubectl muster`)
    /// and tests that want the engine's view of a cluster at one instant.
    pub fn from_objects(objects: CacheObjects) -> Cache {
        let gangs = GangIndex::default();
        gangs.apply(&watcher::Event::Init);
        for p in &objects.pods {
            gangs.apply(&watcher::Event::InitApply(p.clone()));
        }
        gangs.apply(&watcher::Event::InitDone);
        Cache {
            nodes: filled(objects.nodes),
            pods: filled(objects.pods),
            pod_groups: filled(objects.pod_groups),
            coscheduling: filled(objects.coscheduling),
            volcano: filled(objects.volcano),
            upstream: filled(objects.upstream),
            priority_classes: filled(objects.priority_classes),
            gpu_nodes: filled(objects.gpu_nodes),
            queues: filled(Vec::new()),
            volcano_queues: filled(Vec::new()),
            namespaces: filled(Vec::new()),
            gangs,
            signals: PodSignals::default(),
            node_infos: NodeInfoMemo::default(),
            pod_requests: Arc::default(),
            annotation_warnings: Arc::default(),
            generation: Arc::new(AtomicU64::new(1)),
            node_generation: Arc::new(AtomicU64::new(1)),
            changed: Arc::new(Notify::new()),
            gpu_nodes_listed: Arc::new(AtomicBool::new(true)),
            scheduler_names: Arc::new(objects.scheduler_names),
            queue_kinds_known: std::array::from_fn(|_| Arc::new(AtomicBool::new(true))),
        }
    }

    /// The same cache with these queue objects and namespaces (kept out of [`CacheObjects`] so
    /// that its users' struct literals stay valid).
    pub fn with_queue_objects(
        mut self,
        queues: Vec<Queue>,
        volcano_queues: Vec<volcano::Queue>,
        namespaces: Vec<Namespace>,
    ) -> Cache {
        self.queues = filled(queues);
        self.volcano_queues = filled(volcano_queues);
        self.namespaces = filled(namespaces);
        self
    }

    /// Pods with one of these `spec.schedulerName`s are Muster's (default: `muster`).
    pub fn with_scheduler_names(mut self, names: SchedulerNames) -> Cache {
        self.scheduler_names = Arc::new(names);
        self
    }

    /// Whether the pod opted into Muster by one of its scheduler names.
    pub fn is_ours(&self, pod: &Pod) -> bool {
        self.scheduler_names
            .contains(pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()))
    }

    pub fn scheduler_names(&self) -> &SchedulerNames {
        &self.scheduler_names
    }

    /// The same cache as if its GpuNode list had not arrived yet (tests of startup).
    pub fn with_gpu_nodes_unlisted(mut self) -> Cache {
        self.gpu_nodes_listed = Arc::new(AtomicBool::new(false));
        self
    }

    /// Whether GpuNodes have been listed (see the field).
    pub fn gpu_nodes_listed(&self) -> bool {
        self.gpu_nodes_listed.load(Ordering::Acquire)
    }

    /// The same cache as if its Queues had not been listed yet (tests of startup).
    pub fn with_queues_unlisted(mut self) -> Cache {
        self.queue_kinds_known[0] = Arc::new(AtomicBool::new(false));
        self
    }

    /// Whether every kind that decides queues is listed (or its CRD absent): see the field.
    pub fn queues_known(&self) -> bool {
        self.queue_kinds_known
            .iter()
            .all(|k| k.load(Ordering::Acquire))
    }

    /// Changes whenever any watched object changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Changes whenever a Node or GpuNode changes.
    pub fn node_generation(&self) -> u64 {
        self.node_generation.load(Ordering::Acquire)
    }

    /// Resolves at the next change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

pub(crate) type NodeInfoMemo =
    Arc<std::sync::Mutex<std::collections::HashMap<String, ((u64, String), Option<NodeInfo>)>>>;

/// Keeps node fingerprints from the Node watch and bumps the node generation only when one
/// changes: kubelets (and kwok) rewrite every Node's status for heartbeats, which would
/// otherwise look like a capacity change every few milliseconds on a large cluster.
struct NodeChanges {
    generation: Arc<AtomicU64>,
    fingerprints: std::collections::HashMap<String, u64>,
}

impl NodeChanges {
    fn apply(&mut self, event: &watcher::Event<Node>) {
        let prints = &mut self.fingerprints;
        let changed = match event {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                let Some(name) = &n.metadata.name else {
                    return;
                };
                let print = node_fingerprint(n);
                prints.insert(name.clone(), print) != Some(print)
            }
            watcher::Event::Delete(n) => {
                if let Some(name) = &n.metadata.name {
                    prints.remove(name);
                }
                true
            }
            // A relist may have missed deletions; InitDone marks the new list complete.
            watcher::Event::Init => false,
            watcher::Event::InitDone => true,
        };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A hash of everything `snapshot::node_info` reads of a Node: labels, taints, cordon,
/// allocatable, readiness, deletion. Heartbeat times and images are left out on purpose.
pub(crate) fn node_fingerprint(node: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    node.metadata.labels.hash(&mut h);
    node.metadata.deletion_timestamp.is_some().hash(&mut h);
    spec.and_then(|s| s.unschedulable).hash(&mut h);
    for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        (&t.key, &t.value, &t.effect).hash(&mut h);
    }
    for (k, q) in status
        .and_then(|s| s.allocatable.as_ref())
        .into_iter()
        .flatten()
    {
        (k, &q.0).hash(&mut h);
    }
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        .hash(&mut h);
    h.finish()
}

/// Objects for [`Cache::from_objects`]; kinds left empty are simply absent.
#[derive(Default)]
pub struct CacheObjects {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub pod_groups: Vec<PodGroup>,
    pub coscheduling: Vec<coscheduling::PodGroup>,
    pub volcano: Vec<volcano::PodGroup>,
    pub upstream: Vec<UpstreamPodGroup>,
    pub priority_classes: Vec<PriorityClass>,
    pub gpu_nodes: Vec<GpuNode>,
    /// Which pods are Muster's (default: `muster`).
    pub scheduler_names: SchedulerNames,
}

fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

struct Watches {
    generation: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl Watches {
    fn watch<K>(&self, api: Api<K>) -> Store<K>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        self.watch_with(api, |_| {})
    }

    /// Like `watch`; `known` turns true once the kind is listed, or its list says the CRD is
    /// absent (404: there is nothing to know).
    fn watch_known<K>(&self, api: Api<K>, known: Arc<AtomicBool>) -> Store<K>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let listed = known.clone();
        self.spawn_watch(
            api,
            move |e| {
                if matches!(e, watcher::Event::InitDone) {
                    listed.store(true, Ordering::Release);
                }
            },
            move |e| {
                use watcher::Error::{InitialListFailed, WatchStartFailed};
                if let InitialListFailed(kube::Error::Api(s))
                | WatchStartFailed(kube::Error::Api(s)) = e
                    && s.code == 404
                {
                    known.store(true, Ordering::Release);
                }
            },
        )
    }

    /// Like `watch`, also handing every event to `observe` once the store has applied it.
    fn watch_with<K>(
        &self,
        api: Api<K>,
        observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
    ) -> Store<K>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        self.spawn_watch(api, observe, |_| {})
    }

    /// The reflector task: events to the store and `observe`, errors to `on_error`.
    fn spawn_watch<K>(
        &self,
        api: Api<K>,
        mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
        on_error: impl Fn(&watcher::Error) + Send + 'static,
    ) -> Store<K>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (reader, writer) = reflector::store();
        let generation = self.generation.clone();
        let changed = self.changed.clone();
        let kind = K::kind(&K::DynamicType::default()).to_string();
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().any_semantic()),
        )
        .default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut failing = false;
            while let Some(event) = stream.next().await {
                match event {
                    // A relist starts with `Init` even when the list then fails (an absent
                    // CRD): it changes nothing yet, so it neither ends a failing streak nor
                    // wakes the planner.
                    Ok(event @ watcher::Event::Init) => observe(&event),
                    Ok(event) => {
                        observe(&event);
                        failing = false;
                        generation.fetch_add(1, Ordering::AcqRel);
                        changed.notify_waiters();
                    }
                    // Absent CRDs fail forever: say it once, not every backoff step.
                    Err(e) if !failing => {
                        on_error(&e);
                        failing = true;
                        tracing::warn!(kind, error = %e, "watch failing; retrying with backoff");
                    }
                    Err(e) => {
                        on_error(&e);
                        tracing::debug!(kind, error = %e, "watch still failing");
                    }
                }
            }
        });
        reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, Taint};

    fn node(heartbeat: &str, taint: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("gpu-1".into());
        n.spec = Some(NodeSpec {
            taints: taint.map(|k| {
                vec![Taint {
                    key: k.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                message: Some(heartbeat.into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    #[test]
    fn heartbeats_do_not_change_the_node_generation_but_taints_do() {
        let generation = Arc::new(AtomicU64::new(1));
        let mut changes = NodeChanges {
            generation: generation.clone(),
            fingerprints: Default::default(),
        };
        changes.apply(&watcher::Event::Apply(node("beat 1", None)));
        let after_add = generation.load(Ordering::Acquire);
        assert_eq!(after_add, 2, "a new node is a change");
        changes.apply(&watcher::Event::Apply(node("beat 2", None)));
        assert_eq!(generation.load(Ordering::Acquire), after_add);
        changes.apply(&watcher::Event::Apply(node("beat 3", Some("maintenance"))));
        assert_eq!(generation.load(Ordering::Acquire), after_add + 1);
        changes.apply(&watcher::Event::Delete(node("beat 3", Some("maintenance"))));
        assert_eq!(generation.load(Ordering::Acquire), after_add + 2);
    }
}
