//! Components can be killed and restarted by handle, several clusters run side by side, and
//! teardown leaves no process and no directory behind.

mod common;

use common::{container, namespace, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use muster_testcluster::{ClusterSpec, Component, NodeSpec, TestCluster};
use serde_json::json;

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_restart_and_teardown_leaves_nothing() {
    let cluster = TestCluster::start(ClusterSpec::default().with_default_scheduler())
        .await
        .unwrap();
    cluster
        .add_gpu_nodes(&NodeSpec::fixture("l4-pcie-2s", 1))
        .await
        .unwrap();
    let client = cluster.client();
    namespace(&client, "restart").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "restart");

    // No scheduler: the pod waits; a restarted scheduler places it and kwok runs it.
    cluster.kill_component(Component::Scheduler);
    assert!(!cluster.is_running(Component::Scheduler));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "after-restart"},
        "spec": {"containers": [container(Some(1))]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    cluster.start_component(Component::Scheduler).await.unwrap();
    wait_for(&pods, "after-restart", "the pod to run", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;

    // The API server comes back on the same port with the same data.
    let old_pid = cluster.pid(Component::ApiServer).unwrap();
    cluster
        .restart_component(Component::ApiServer)
        .await
        .unwrap();
    assert_ne!(cluster.pid(Component::ApiServer), Some(old_pid));
    assert!(pods.get("after-restart").await.is_ok());

    let pids: Vec<u32> = Component::ALL
        .iter()
        .filter_map(|c| cluster.pid(*c))
        .collect();
    assert_eq!(pids.len(), 5);
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived teardown");
    }
    assert!(!dir.exists(), "{} survived teardown", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_run_side_by_side() {
    let (a, b) = tokio::try_join!(
        TestCluster::start(ClusterSpec::default()),
        TestCluster::start(ClusterSpec::default()),
    )
    .unwrap();
    assert_ne!(a.ports().apiserver, b.ports().apiserver);
    assert_ne!(a.dir(), b.dir());
    let spec = NodeSpec {
        nodes_per_rack: Some(2),
        ..NodeSpec::fixture("gb200-nvl72", 4)
    };
    a.add_gpu_nodes(&spec).await.unwrap();
    let a_nodes: Api<Node> = Api::all(a.client());
    let b_nodes: Api<Node> = Api::all(b.client());
    assert_eq!(
        a_nodes.list(&Default::default()).await.unwrap().items.len(),
        4
    );
    assert!(
        b_nodes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Labels and capacity as a GPU Feature Discovery node would show them.
    let node = a_nodes.get("gb200-nvl72-3").await.unwrap();
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["muster.dev/rack"], "rack-1");
    assert_eq!(labels["nvidia.com/gpu.clique"], "nvl72-a.1");
    assert_eq!(labels["muster.dev/topology-fixture"], "gb200-nvl72");
    let allocatable = node.status.unwrap().allocatable.unwrap();
    assert_eq!(
        allocatable["nvidia.com/gpu"].0,
        labels["nvidia.com/gpu.count"]
    );
}
