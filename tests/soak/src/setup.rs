//! The environment of one run: the cluster with the `muster` profile, Muster's CRDs, the soak
//! namespace and PriorityClasses, the GPU nodes, the extender, and watch-fed stores of pods,
//! nodes and GpuNodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use muster_crds::GpuNode;
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::json;

use crate::extender::{self, Extender};
use crate::{NAMESPACE, SoakConfig};

/// PriorityClasses the workload uses: (name, value, share of gangs in percent).
pub const PRIORITIES: [(&str, i32, u32); 3] = [
    ("soak-low", 100, 50),
    ("soak-mid", 1000, 35),
    ("soak-high", 10000, 15),
];

/// KubeSchedulerConfiguration with one profile, `muster`, calling the extender (as in the
/// README and the e2e tests).
pub fn scheduler_config(port: u16) -> String {
    format!(
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 2
profiles:
- schedulerName: muster
  percentageOfNodesToScore: 100
extenders:
- urlPrefix: "http://127.0.0.1:{port}"
  filterVerb: filter
  prioritizeVerb: prioritize
  preemptVerb: preempt
  bindVerb: bind
  weight: 1
  nodeCacheCapable: true
  httpTimeout: 120s
"#
    )
}

/// Watch-fed caches shared by every loop.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub gpu_nodes: Store<GpuNode>,
}

pub type PodEvents = BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>>;

pub struct Env {
    pub cluster: Arc<TestCluster>,
    pub client: Client,
    pub extender: Arc<tokio::sync::Mutex<Extender>>,
    pub stores: Stores,
    pod_events: Mutex<Option<PodEvents>>,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr().context("reading the port")?.port())
}

impl Env {
    pub async fn start(config: &SoakConfig) -> anyhow::Result<Env> {
        let bin = match &config.extender_bin {
            Some(bin) => bin.clone(),
            None => tokio::task::spawn_blocking(extender::build_extender)
                .await
                .context("build task")??,
        };
        let port = free_port()?;
        let mut spec = ClusterSpec::default().with_scheduler_config(scheduler_config(port));
        spec.parent_dir = config.parent_dir.clone();
        spec.ready_timeout = Duration::from_secs(300);
        let cluster = Arc::new(
            TestCluster::start(spec)
                .await
                .context("starting the test cluster")?,
        );
        let client = cluster.client();
        cluster
            .install_crds(&extender::repo_root().join("charts/muster/crds"))
            .await
            .context("installing Muster's CRDs")?;
        create_namespace_and_priorities(&client).await?;
        let nodes = NodeSpec::fixture(&config.fixture, config.nodes);
        cluster
            .add_gpu_nodes(&nodes)
            .await
            .context("adding GPU nodes")?;
        let mut ext = Extender::new(
            bin,
            cluster.kubeconfig_path().to_path_buf(),
            cluster.dir().join("muster-scheduler.log"),
            port,
            free_port()?,
        );
        ext.spawn()?;
        ext.ready(Duration::from_secs(180)).await?;
        tracing::info!(dir = %cluster.dir().display(), port, "cluster and extender ready");

        let (pods, pod_events) = pod_store(&client);
        let nodes = spawn_store(Api::<Node>::all(client.clone()));
        let gpu_nodes = spawn_store(Api::<GpuNode>::all(client.clone()));
        nodes.wait_until_ready().await.context("node watch")?;
        gpu_nodes
            .wait_until_ready()
            .await
            .context("GpuNode watch")?;
        Ok(Env {
            cluster,
            client,
            extender: Arc::new(tokio::sync::Mutex::new(ext)),
            stores: Stores {
                pods,
                nodes,
                gpu_nodes,
            },
            pod_events: Mutex::new(Some(pod_events)),
        })
    }

    /// The pod watch events (after they reached the pod store), for the checker; once.
    pub fn pod_events(&self) -> PodEvents {
        self.pod_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| futures::stream::empty().boxed())
    }
}

async fn create_namespace_and_priorities(client: &Client) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the soak namespace")?;
    for (name, value, _) in PRIORITIES {
        let pc: PriorityClass = serde_json::from_value(json!({
            "metadata": {"name": name},
            "value": value,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": "muster-soak"
        }))?;
        Api::<PriorityClass>::all(client.clone())
            .create(&PostParams::default(), &pc)
            .await
            .with_context(|| format!("creating PriorityClass {name}"))?;
    }
    Ok(())
}

fn pod_store(client: &Client) -> (Store<Pod>, PodEvents) {
    let (reader, writer) = reflector::store();
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .boxed();
    (reader, events)
}

fn spawn_store<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("watch error (retrying): {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    reader
}
