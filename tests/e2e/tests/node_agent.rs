//! The node agent against a real control plane: it publishes a `GpuNode` and GFD labels for a
//! kwok node (fake NVML with the node's GPU identities), a scripted XID 79 turns that GPU
//! unhealthy in the `GpuNode`, and restarting the agent rebuilds the same single object.

mod agent_common;

use agent_common::{AgentProcess, build_agent, eventually, install_crds};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use muster_api::machines::builtin;
use muster_api::names::gfd;
use muster_crds::GpuNode;
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_publishes_gpunode_and_labels_and_reports_xid_79() {
    let (agent_bin, fake_nvml) = build_agent();
    let cluster = TestCluster::start(ClusterSpec::default()).await.unwrap();
    let client = cluster.client();
    install_crds(&cluster).await;
    // A GPU node without any GFD labels: whatever GFD labels it ends with come from the agent.
    let node_spec = NodeSpec {
        count: 1,
        name_prefix: "v100-".into(),
        gpus: Some(8),
        ..NodeSpec::default()
    };
    let node = cluster.add_gpu_nodes(&node_spec).await.unwrap().remove(0);
    let machine = builtin("dgx1-v100").unwrap().for_node(&node);
    let nodes: Api<Node> = Api::all(client.clone());
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();
    let dmi = cluster.dir().join("product_name");
    std::fs::write(&dmi, "DGX-1\n").unwrap();
    let dmi_arg = dmi.to_str().unwrap().to_string();
    let agent_args = [
        "--machine-type-file",
        dmi_arg.as_str(),
        "--interval",
        "500ms",
    ];

    // 1. A plain dgx1-v100: the GpuNode mirrors the fixture, the Node gets GFD labels.
    let agent = AgentProcess::start(
        &agent_bin,
        &fake_nvml,
        &kubeconfig,
        &node,
        "dgx1-v100",
        cluster.dir().join("agent-1.log"),
        &agent_args,
    )
    .expect("spawning muster-node-agent");
    let published = eventually(
        "the GpuNode",
        || agent.log_text(),
        || async { gpu_nodes.get_opt(&node).await.unwrap() },
    )
    .await;
    let spec = &published.spec;
    assert_eq!(spec.node_name, node);
    assert_eq!(spec.model, machine.model);
    assert_eq!(spec.driver_version, machine.driver_version);
    assert_eq!(spec.gpu_count, 8);
    assert_eq!(spec.healthy_count, 8);
    assert_eq!(spec.topology, machine.topology.to_rows());
    assert_eq!(spec.link_matrix().unwrap(), machine.topology);
    let uuids: Vec<&str> = spec.gpus.iter().map(|g| g.uuid.as_str()).collect();
    let want: Vec<&str> = machine.gpus.iter().map(|g| g.uuid.as_str()).collect();
    assert_eq!(uuids, want, "UUIDs are the node's (MachineSpec::for_node)");
    assert!(!spec.last_seen.is_empty());

    let labels = eventually(
        "GFD labels on the Node",
        || agent.log_text(),
        || async {
            let n = nodes.get(&node).await.unwrap();
            let labels = n.metadata.labels.unwrap_or_default();
            labels.contains_key(gfd::PRODUCT).then_some(labels)
        },
    )
    .await;
    let expect = BTreeMap::from([
        (gfd::PRODUCT, machine.product.clone()),
        (gfd::COUNT, "8".to_string()),
        (gfd::MEMORY, machine.memory_mib.to_string()),
        (gfd::FAMILY, machine.family.clone()),
        (gfd::MACHINE, machine.machine.clone()),
        (gfd::MIG_STRATEGY, "none".to_string()),
    ]);
    for (k, v) in &expect {
        assert_eq!(labels.get(*k), Some(v), "label {k}: {labels:?}");
    }
    // The kwok/harness labels are untouched: the agent applies only its own.
    assert_eq!(labels.get("type").map(String::as_str), Some("kwok"));
    agent.stop();

    // 2. The agent is gone, so is the object; a restarted agent with a scripted XID 79 on
    //    GPU 5 rebuilds it, then reports the XID.
    gpu_nodes
        .delete(&node, &DeleteParams::default())
        .await
        .unwrap();
    let fixture = cluster.dir().join("dgx1-xid79.json");
    let mut fixture_json = serde_json::to_value(builtin("dgx1-v100").unwrap()).unwrap();
    fixture_json["script"] = json!([{"atSeconds": 4.0, "gpu": 5, "xid": 79}]);
    std::fs::write(&fixture, fixture_json.to_string()).unwrap();
    let mut agent = AgentProcess::start(
        &agent_bin,
        &fake_nvml,
        &kubeconfig,
        &node,
        fixture.to_str().unwrap(),
        cluster.dir().join("agent-2.log"),
        &agent_args,
    )
    .expect("spawning muster-node-agent");
    let unhealthy = eventually(
        "GPU 5 unhealthy in the GpuNode",
        || agent.log_text(),
        || async {
            let gn = gpu_nodes.get_opt(&node).await.unwrap()?;
            (!gn.spec.gpus.get(5)?.healthy).then_some(gn)
        },
    )
    .await;
    let gpu5 = &unhealthy.spec.gpus[5];
    assert_eq!(gpu5.uuid, machine.gpus[5].uuid);
    assert_eq!(gpu5.unhealthy_reason.as_deref(), Some("XID 79"));
    assert_eq!(unhealthy.spec.healthy_count, 7);
    assert!(
        unhealthy
            .spec
            .gpus
            .iter()
            .filter(|g| g.index != 5)
            .all(|g| g.healthy)
    );
    assert_eq!(unhealthy.spec.topology, machine.topology.to_rows());
    assert!(agent.is_running(), "{}", agent.log_text());
    // For the record (not asserted): from the XID event to the GpuNode write, in the agent's log.
    if let Some(latency) = event_to_write(&agent.log_text()) {
        eprintln!("XID 79 event to GpuNode applied: {latency:?}");
    }

    // One object per node, owned by the agent's field manager.
    let all = gpu_nodes.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 1, "{all:#?}");
    let managers: Vec<String> = unhealthy
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert_eq!(managers, vec!["muster-node-agent".to_string()]);
    agent.stop();

    // 3. A restart on the healthy fixture republishes current truth over the same object.
    let agent = AgentProcess::start(
        &agent_bin,
        &fake_nvml,
        &kubeconfig,
        &node,
        "dgx1-v100",
        cluster.dir().join("agent-3.log"),
        &agent_args,
    )
    .expect("spawning muster-node-agent");
    eventually(
        "the GpuNode healthy again",
        || agent.log_text(),
        || async {
            let gn = gpu_nodes.get_opt(&node).await.unwrap()?;
            (gn.spec.healthy_count == 8).then_some(())
        },
    )
    .await;
    let all = gpu_nodes.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].metadata.name.as_deref(), Some(node.as_str()));
}

/// Time between the agent's "GPU health event" log line and the next "GpuNode published".
fn event_to_write(log: &str) -> Option<std::time::Duration> {
    use k8s_openapi::jiff::Timestamp;
    let at = |line: &str| line.split_whitespace().next()?.parse::<Timestamp>().ok();
    let mut lines = log.lines();
    let event = lines
        .find(|l| l.contains("GPU health event"))
        .and_then(at)?;
    let write = lines
        .find(|l| l.contains("GpuNode published"))
        .and_then(at)?;
    let span = write.duration_since(event);
    std::time::Duration::try_from(span).ok()
}
