//! The scheduler → device plugin chain on a real control plane: a pod bound to a kwok GPU node
//! with the scheduler's GPU choice written on it (done here the way the scheduler does it:
//! annotations first, then a Binding), the device plugin watching that node's pods, and a fake
//! kubelet admitting the pod's container with a misleading available list. The plugin must
//! allocate exactly the annotated GPUs and mark the pod allocated. A second test runs the real
//! chain: Muster's extender chooses and binds, the plugin allocates exactly its choice.

mod common;
mod muster;

use common::{DEADLINE, container, namespace, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use muster_api::machines::builtin;
use muster_api::names::{
    ANNOTATION_GPU_ALLOCATION, ANNOTATION_GPU_IDS, ANNOTATION_GPU_NODE, GPU_ALLOCATION_DONE,
    SCHEDULER_NAME,
};
use muster_device_plugin::devices::DeviceList;
use muster_device_plugin::fake_kubelet::FakeKubelet;
use muster_device_plugin::{Plugin, PluginConfig, PluginHandle};
use muster_gpu_inventory::{Discovery, Inventory};
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FIXTURE: &str = "dgx1-v100";

/// The fake NVML of this build (a dev-dependency cdylib in `target/<profile>/deps`), copied so
/// the test owns its NVML state.
fn fake_nvml(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let src = [
        deps.join("libmuster_fake_nvml.so"),
        deps.join("../libmuster_fake_nvml.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .expect("libmuster_fake_nvml.so built as a dev-dependency");
    let lib = dir.join("libnvidia-ml.so.1");
    std::fs::copy(src, &lib).unwrap();
    lib
}

static NVML_ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The device plugin of `node` (fake NVML with the node's UUIDs, kube watch on the node's pods)
/// registered with a fake kubelet in `dir`, its device list checked against the fixture.
async fn node_plugin(dir: &Path, node: &str, client: kube::Client) -> (FakeKubelet, PluginHandle) {
    let lib = fake_nvml(dir);
    let inventory = {
        let _env = NVML_ENV.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the environment is only changed here, under NVML_ENV; NVML reads it at init.
        unsafe {
            std::env::set_var("MUSTER_FAKE_NVML_FIXTURE", FIXTURE);
            std::env::set_var("MUSTER_FAKE_NVML_NODE", node);
        }
        match Inventory::open(Some(&lib)).unwrap() {
            Discovery::Ready(inv) => inv,
            other => panic!("fake NVML: {other:?}"),
        }
    };
    let list = DeviceList::from_inventory(&inventory).unwrap();
    let machine = builtin(FIXTURE).unwrap().for_node(node);
    let uuids: Vec<&str> = list.gpus.iter().map(|g| g.uuid.as_str()).collect();
    let expected: Vec<&str> = machine.gpus.iter().map(|g| g.uuid.as_str()).collect();
    assert_eq!(
        uuids, expected,
        "NVML and the scheduler agree on the node's GPUs"
    );

    let sockets = dir.join("device-plugins");
    let kubelet = FakeKubelet::start(&sockets).await.unwrap();
    let mut config = PluginConfig::new(&sockets, node);
    // Only bounds the wait for the watch to catch up; a match returns at once.
    config.annotation_wait = Duration::from_secs(30);
    let plugin = Plugin::new(config, list)
        .unwrap()
        .with_kube(client)
        .start()
        .unwrap();
    kubelet.wait_for_registrations(1, DEADLINE).await.unwrap();
    kubelet
        .wait_for_devices(DEADLINE, |d| d.len() == 8)
        .await
        .unwrap();
    (kubelet, plugin)
}

fn annotation<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

async fn bind(pods: &Api<Pod>, pod: &str, node: &str) {
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}
    });
    pods.create_subresource::<_, serde_json::Value>(
        "binding",
        pod,
        &PostParams::default(),
        &binding,
    )
    .await
    .unwrap();
}

/// A GPU pod as the scheduler leaves it just before binding.
fn gpu_pod(name: &str, gpus: u32, ids: &[String], for_node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": {
                ANNOTATION_GPU_IDS: ids.join(","),
                ANNOTATION_GPU_NODE: for_node,
            }
        },
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "containers": [container(Some(gpus))],
            "tolerations": [{"operator": "Exists"}]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_allocates_exactly_the_gpus_the_scheduler_wrote_on_the_pod() {
    let cluster = TestCluster::start(ClusterSpec::default()).await.unwrap();
    let nodes = cluster
        .add_gpu_nodes(&NodeSpec::fixture(FIXTURE, 1))
        .await
        .unwrap();
    let node = nodes[0].clone();
    let client = cluster.client();
    namespace(&client, "dp").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "dp");

    // The scheduler's choice: not the best-linked quad, so only the annotation explains it.
    let machine = builtin(FIXTURE).unwrap().for_node(&node);
    let uuid = |i: usize| machine.gpus[i].uuid.clone();
    let chosen: Vec<String> = [1, 3, 5, 7].into_iter().map(uuid).collect();
    pods.create(
        &PostParams::default(),
        &gpu_pod("trainer-0", 4, &chosen, &node),
    )
    .await
    .unwrap();
    bind(&pods, "trainer-0", &node).await;
    // A distractor bound to the same node with a stale choice made for another node.
    let stale: Vec<String> = [0, 2, 4, 6].into_iter().map(uuid).collect();
    pods.create(
        &PostParams::default(),
        &gpu_pod("stale", 4, &stale, "some-other-node"),
    )
    .await
    .unwrap();
    bind(&pods, "stale", &node).await;

    // The plugin on that node (fake NVML with the node's UUIDs, kube watch) and a fake kubelet.
    let tmp = tempfile::Builder::new().prefix("dp-e2e").tempdir().unwrap();
    let (kubelet, plugin) = node_plugin(tmp.path(), &node, client.clone()).await;

    // The kubelet lists the node's GPUs in an order that favours anything but the choice.
    let misleading: Vec<String> = [0, 2, 4, 6, 1, 3, 5, 7].into_iter().map(uuid).collect();
    let admitted = kubelet.admit(&misleading, &[], 4).await.unwrap();
    eprintln!("Allocate answered in {:?}", admitted.allocate_time);
    assert_eq!(admitted.preferred, chosen);
    assert_eq!(
        admitted.response.envs["NVIDIA_VISIBLE_DEVICES"],
        chosen.join(",")
    );
    let dev_nodes: Vec<&str> = admitted
        .response
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .filter(|p| p.trim_start_matches("/dev/nvidia").parse::<u32>().is_ok())
        .collect();
    assert_eq!(
        dev_nodes,
        vec![
            "/dev/nvidia1",
            "/dev/nvidia3",
            "/dev/nvidia5",
            "/dev/nvidia7"
        ]
    );

    // The allocation is recorded on the pod for everyone else.
    let pod = wait_for(
        &pods,
        "trainer-0",
        "the allocation annotation",
        |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_GPU_ALLOCATION))
                .is_some_and(|v| v == GPU_ALLOCATION_DONE)
        },
    )
    .await;
    assert_eq!(
        pod.metadata.annotations.unwrap()[ANNOTATION_GPU_IDS],
        chosen.join(",")
    );
    // The stale choice was never honoured nor marked.
    let stale_pod = pods.get("stale").await.unwrap();
    assert!(
        !stale_pod
            .metadata
            .annotations
            .unwrap()
            .contains_key(ANNOTATION_GPU_ALLOCATION)
    );

    // A second admission cannot get the GPUs the live pod holds.
    let mut grpc = kubelet.plugin().await.unwrap();
    let err = kubelet
        .allocate(&mut grpc, &chosen[0..2])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("dp/trainer-0"), "{}", err.message());

    plugin.shutdown().await.unwrap();
    kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_allocates_what_the_muster_extender_chose_and_bound() {
    let (cluster, _extender) = muster::muster_cluster(&[NodeSpec::fixture(FIXTURE, 1)], &[]).await;
    let client = cluster.client();
    namespace(&client, "chain").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "chain");

    // The extender chooses and binds a 2-GPU pod, then a 4-GPU pod, on the one DGX-1.
    let mut chosen = Vec::new();
    for (name, gpus) in [("pair", 2), ("quad", 4)] {
        muster::create_pods(
            &client,
            "chain",
            vec![muster::member(name, muster::Gang::None, gpus, None)],
        )
        .await;
        let pod = wait_for(
            &pods,
            name,
            "bound with the scheduler's GPU choice",
            |p: &Pod| muster::node_of(p).is_some() && annotation(p, ANNOTATION_GPU_IDS).is_some(),
        )
        .await;
        let ids: Vec<String> = annotation(&pod, ANNOTATION_GPU_IDS)
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        assert_eq!(ids.len(), gpus as usize);
        let node = muster::node_of(&pod).unwrap();
        assert_eq!(annotation(&pod, ANNOTATION_GPU_NODE), Some(node.as_str()));
        chosen.push((name, node, ids));
    }
    let node = chosen[0].1.clone();

    let tmp = tempfile::Builder::new()
        .prefix("dp-chain")
        .tempdir()
        .unwrap();
    let (kubelet, plugin) = node_plugin(tmp.path(), &node, client.clone()).await;

    // The kubelet admits them in binding order, each time offering every GPU it still has, in
    // reverse order (a naive "first N" would pick other GPUs).
    let machine = builtin(FIXTURE).unwrap().for_node(&node);
    let mut free: Vec<String> = machine.gpus.iter().rev().map(|g| g.uuid.clone()).collect();
    for (name, _, ids) in &chosen {
        let admitted = kubelet.admit(&free, &[], ids.len()).await.unwrap();
        eprintln!("{name}: Allocate answered in {:?}", admitted.allocate_time);
        assert_eq!(
            &admitted.preferred, ids,
            "{name} gets the extender's choice"
        );
        assert_eq!(
            admitted.response.envs["NVIDIA_VISIBLE_DEVICES"],
            ids.join(",")
        );
        free.retain(|u| !ids.contains(u));
        wait_for(&pods, name, "the allocation annotation", |p: &Pod| {
            annotation(p, ANNOTATION_GPU_ALLOCATION) == Some(GPU_ALLOCATION_DONE)
        })
        .await;
    }
    plugin.shutdown().await.unwrap();
    kubelet.stop().await;
}
