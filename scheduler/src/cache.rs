//! The cluster cache: kube-rs reflectors for everything placement reads.
//!
//! Every event bumps a generation counter, so the engine re-plans only when something changed.
//! Kinds whose CRD may be absent (other schedulers' PodGroups, GpuNode before the agent is
//! installed) just stay empty while their watch retries with backoff.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use muster_crds::compat::{coscheduling, volcano};
use muster_crds::{GpuNode, PodGroup};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

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
    generation: Arc<AtomicU64>,
    changed: Arc<Notify>,
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
        let cache = Cache {
            nodes: w.watch(Api::<Node>::all(client.clone())),
            pods: w.watch(Api::<Pod>::all(client.clone())),
            pod_groups: w.watch(Api::<PodGroup>::all(client.clone())),
            coscheduling: w.watch(Api::<coscheduling::PodGroup>::all(client.clone())),
            volcano: w.watch(Api::<volcano::PodGroup>::all(client.clone())),
            upstream: w.watch(Api::<UpstreamPodGroup>::all(client.clone())),
            priority_classes: w.watch(Api::<PriorityClass>::all(client.clone())),
            gpu_nodes: w.watch(Api::<GpuNode>::all(client)),
            generation,
            changed,
        };
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

    /// Changes whenever any watched object changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Resolves at the next change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
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
                    Ok(_) => {
                        failing = false;
                        generation.fetch_add(1, Ordering::AcqRel);
                        changed.notify_waiters();
                    }
                    // Absent CRDs fail forever: say it once, not every backoff step.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(kind, error = %e, "watch failing; retrying with backoff");
                    }
                    Err(e) => tracing::debug!(kind, error = %e, "watch still failing"),
                }
            }
        });
        reader
    }
}
