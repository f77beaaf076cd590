//! The scheduler places from what the node agent publishes: a node with no fixture label,
//! whose GPUs and links are known only from its `GpuNode`; an XID 79 on one GPU makes the
//! scheduler pick the other fully NVLinked quad, and refuse a second quad.

mod agent_common;
mod muster;

use agent_common::{AgentProcess, build_agent, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use muster::{Gang, create_pods, member, muster_cluster, node_of, wait_pods};
use muster_api::machines::builtin;
use muster_crds::GpuNode;
use muster_testcluster::NodeSpec;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_uses_gpunode_topology_and_avoids_unhealthy_gpus() {
    let (agent_bin, fake_nvml) = build_agent();
    let (cluster, _ext) = muster_cluster(&[], &[]).await;
    let client = cluster.client();
    let node_spec = NodeSpec {
        count: 1,
        name_prefix: "v100-".into(),
        gpus: Some(8),
        ..NodeSpec::default()
    };
    let node = cluster.add_gpu_nodes(&node_spec).await.unwrap().remove(0);
    let machine = builtin("dgx1-v100").unwrap().for_node(&node);

    // The DGX-1 fixture with an XID 79 on GPU 0 shortly after start.
    let src = std::fs::read_to_string(muster::repo_root().join("fixtures/machines/dgx1-v100.json"))
        .unwrap();
    let mut fixture: serde_json::Value = serde_json::from_str(&src).unwrap();
    fixture["script"] = serde_json::json!([{"atSeconds": 2.0, "gpu": 0, "xid": 79}]);
    let fixture_path = cluster.dir().join("dgx1-xid.json");
    std::fs::write(&fixture_path, fixture.to_string()).unwrap();
    let agent = AgentProcess::start(
        &agent_bin,
        &fake_nvml,
        cluster.kubeconfig_path(),
        &node,
        fixture_path.to_str().unwrap(),
        cluster.dir().join("agent.log"),
        &["--interval", "500ms"],
    )
    .expect("spawning muster-node-agent");
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    eventually(
        "GPU 0 unhealthy in the GpuNode",
        || agent.log_text(),
        || async {
            gpu_nodes
                .get_opt(&node)
                .await
                .unwrap()
                .filter(|g| g.spec.gpus.first().is_some_and(|g| !g.healthy))
        },
    )
    .await;

    let ns = "default";
    create_pods(&client, ns, vec![member("quad-a", Gang::None, 4, None)]).await;
    let pods = wait_pods(&client, ns, "quad-a", "first quad bound", |p| {
        p.iter().any(|p| node_of(p).is_some())
    })
    .await;
    let ids = gpu_indices(&pods[0], &machine);
    assert_eq!(
        ids,
        vec![4, 5, 6, 7],
        "the quad without the unhealthy GPU 0"
    );

    // GPUs 1-3 are healthy but GPU 0 is not: no second quad fits, and the pod says so.
    create_pods(&client, ns, vec![member("quad-b", Gang::None, 4, None)]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let started = std::time::Instant::now();
    loop {
        let b = pods.get("quad-b").await.unwrap();
        assert!(
            node_of(&b).is_none(),
            "a quad was placed on an unhealthy GPU"
        );
        let reason = b
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")
            .and_then(|c| c.message)
            .unwrap_or_default();
        if reason.contains("needs 1 pod x 4 GPUs") {
            break;
        }
        assert!(
            started.elapsed() < muster::DEADLINE,
            "no capacity reason on quad-b: {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn gpu_indices(pod: &Pod, machine: &muster_api::machines::MachineSpec) -> Vec<usize> {
    let ids = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("muster.dev/gpu-ids"))
        .cloned()
        .unwrap_or_default();
    let mut idx: Vec<usize> = ids
        .split(',')
        .filter_map(|u| machine.gpus.iter().position(|g| g.uuid == u))
        .collect();
    idx.sort_unstable();
    idx
}
