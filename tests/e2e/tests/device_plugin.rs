//! The scheduler → device plugin chain on a real control plane: a pod bound to a kwok GPU node
//! with the scheduler's GPU choice written on it (done here the way the scheduler does it:
//! annotations first, then a Binding), the device plugin watching that node's pods, and a fake
//! kubelet admitting the pod's container with a misleading available list. The plugin must
//! allocate exactly the annotated GPUs and mark the pod allocated.

mod common;

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
use muster_device_plugin::{Plugin, PluginConfig};
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

    // The plugin on that node: fake NVML for the node (same UUIDs as the fixture), the kube watch
    // on the node's pods, and a fake kubelet.
    let tmp = tempfile::Builder::new().prefix("dp-e2e").tempdir().unwrap();
    let lib = fake_nvml(tmp.path());
    // SAFETY: this test binary runs one test; NVML reads these at init, just below.
    unsafe {
        std::env::set_var("MUSTER_FAKE_NVML_FIXTURE", FIXTURE);
        std::env::set_var("MUSTER_FAKE_NVML_NODE", &node);
    }
    let inventory = match Inventory::open(Some(&lib)).unwrap() {
        Discovery::Ready(inv) => inv,
        other => panic!("fake NVML: {other:?}"),
    };
    let list = DeviceList::from_inventory(&inventory).unwrap();
    let uuids: Vec<String> = list.gpus.iter().map(|g| g.uuid.clone()).collect();
    let expected: Vec<String> = (0..8).map(uuid).collect();
    assert_eq!(
        uuids, expected,
        "NVML and the scheduler agree on the node's GPUs"
    );

    let dir = tmp.path().join("device-plugins");
    let kubelet = FakeKubelet::start(&dir).await.unwrap();
    let mut config = PluginConfig::new(&dir, &node);
    // Only bounds the wait for the watch to catch up; a match returns at once.
    config.annotation_wait = Duration::from_secs(30);
    let plugin = Plugin::new(config, list)
        .unwrap()
        .with_kube(client.clone())
        .start()
        .unwrap();
    kubelet.wait_for_registrations(1, DEADLINE).await.unwrap();
    kubelet
        .wait_for_devices(DEADLINE, |d| d.len() == 8)
        .await
        .unwrap();

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
