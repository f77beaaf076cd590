//! Muster's extender behind a real kube-scheduler on a real control plane (kwok GPU nodes).

mod muster;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use muster::*;
use muster_api::machines;
use muster_crds::PodGroup;
use muster_testcluster::NodeSpec;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn gangs_bind_whole_or_not_at_all() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;

    // 1. Four whole-node members on four free nodes: all bound, each with its 8 GPUs.
    create_pods(
        &client,
        "ml",
        gang("a", 4, 8, Gang::Annotation("a", "4"), None),
    )
    .await;
    let pods = wait_pods(&client, "ml", "a-", "gang a bound", |p| bound_count(p) == 4).await;
    let nodes: HashSet<String> = pods.iter().filter_map(node_of).collect();
    assert_eq!(nodes.len(), 4);
    for p in &pods {
        let node = node_of(p).unwrap();
        let expected: Vec<String> = machines::builtin("dgx-a100")
            .unwrap()
            .for_node(&node)
            .gpus
            .iter()
            .map(|g| g.uuid.clone())
            .collect();
        assert_eq!(
            gpu_ids(p),
            expected,
            "pod on {node} carries the node's GPU UUIDs"
        );
    }
    assert!(ext.metric("muster_bind_barrier_timeouts_total").await == 0.0);

    // 2. Five members, room for four once a is gone: nothing binds, the PodGroup says why.
    let api: Api<Pod> = Api::namespaced(client.clone(), "ml");
    api.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
    wait_pods(&client, "ml", "a-", "gang a gone", |p| p.is_empty()).await;
    let pgs: Api<PodGroup> = Api::namespaced(client.clone(), "ml");
    let pg = serde_json::from_value(
        json!({"apiVersion": "muster.dev/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "b"}, "spec": {"minMember": 5}}),
    )
    .unwrap();
    pgs.create(&PostParams::default(), &pg).await.unwrap();
    create_pods(&client, "ml", gang("b", 5, 8, Gang::PodGroup("b"), None)).await;
    let pg = wait_podgroup(&pgs, "b", |pg| {
        pg.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("needs 40 GPUs"))
    })
    .await;
    assert_eq!(pg.status.unwrap().scheduled, 0);
    stays_unbound(&client, "ml", "b-", Duration::from_secs(3)).await;
    // The pod's own condition carries the reason too (kube-scheduler copies the extender's).
    wait_for_condition(&api, "b-0", "needs 40 GPUs").await;

    // A fifth node arrives: all five bind.
    cluster
        .add_gpu_nodes(&NodeSpec {
            name_prefix: "late".into(),
            ..NodeSpec::fixture("dgx-a100", 1)
        })
        .await
        .unwrap();
    wait_pods(&client, "ml", "b-", "gang b bound", |p| bound_count(p) == 5).await;
    wait_podgroup(&pgs, "b", |pg| {
        pg.status.as_ref().is_some_and(|s| s.scheduled == 5)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interleaved_gangs_never_half_place() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    // Interleave the two gangs' pods, as two operators racing would.
    let (a, b) = (
        gang("x", 3, 8, Gang::Annotation("x", "3"), None),
        gang("y", 3, 8, Gang::Annotation("y", "3"), None),
    );
    let mixed: Vec<Pod> = a.into_iter().zip(b).flat_map(|(p, q)| [p, q]).collect();
    create_pods(&client, "ml", mixed).await;
    let pods = wait_pods(&client, "ml", "", "one gang bound whole", |p| {
        bound_count(p) >= 3
    })
    .await;
    let x = pods
        .iter()
        .filter(|p| {
            p.metadata.name.as_deref().unwrap_or("").starts_with("x-") && node_of(p).is_some()
        })
        .count();
    let y = pods
        .iter()
        .filter(|p| {
            p.metadata.name.as_deref().unwrap_or("").starts_with("y-") && node_of(p).is_some()
        })
        .count();
    assert!(
        (x, y) == (3, 0) || (x, y) == (0, 3),
        "x={x} y={y}: a gang was half placed"
    );
    let (winner, loser) = if x == 3 { ("x-", "y-") } else { ("y-", "x-") };
    stays_unbound(&client, "ml", loser, Duration::from_secs(3)).await;
    // The winner finishes: the other gang runs whole.
    let api: Api<Pod> = Api::namespaced(client.clone(), "ml");
    for i in 0..3 {
        api.delete(
            &format!("{winner}{i}"),
            &DeleteParams::default().grace_period(0),
        )
        .await
        .unwrap();
    }
    wait_pods(&client, "ml", loser, "second gang bound", |p| {
        bound_count(p) == 3
    })
    .await;
}

async fn priority_class(client: &Client, name: &str, value: i32) {
    let api: Api<PriorityClass> = Api::all(client.clone());
    let pc = serde_json::from_value(
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value}),
    )
    .unwrap();
    api.create(&PostParams::default(), &pc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_priority_gang_preempts_whole_lower_gangs_only() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    priority_class(&client, "batch-high", 1000).await;
    create_pods(
        &client,
        "ml",
        gang("lowa", 2, 8, Gang::Annotation("lowa", "2"), None),
    )
    .await;
    create_pods(
        &client,
        "ml",
        gang("lowb", 2, 8, Gang::Annotation("lowb", "2"), None),
    )
    .await;
    wait_pods(&client, "ml", "low", "low gangs bound", |p| {
        bound_count(p) == 4
    })
    .await;

    // Same priority: waits, evicts nobody.
    create_pods(
        &client,
        "ml",
        gang("same", 1, 8, Gang::Annotation("same", "1"), None),
    )
    .await;
    stays_unbound(&client, "ml", "same", Duration::from_secs(4)).await;
    assert_eq!(
        pods_with_prefix(&client, "ml", "low").await.len(),
        4,
        "equal priority evicted someone"
    );
    assert_eq!(ext.metric("muster_evictions_total").await, 0.0);

    // Priority 1000 needing the whole cluster: both low gangs go, whole; it binds whole.
    create_pods(
        &client,
        "ml",
        gang(
            "vip",
            4,
            8,
            Gang::Annotation("vip", "4"),
            Some("batch-high"),
        ),
    )
    .await;
    wait_pods(&client, "ml", "vip", "high gang bound", |p| {
        bound_count(p) == 4
    })
    .await;
    wait_pods(&client, "ml", "low", "low gangs evicted", |p| p.is_empty()).await;
    assert_eq!(ext.metric("muster_evictions_total").await, 4.0);
    let same = pods_with_prefix(&client, "ml", "same").await;
    assert_eq!(
        (same.len(), bound_count(&same)),
        (1, 0),
        "the same-priority pod still waits"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extender_restart_mid_barrier_leaves_no_partial_gang() {
    let (cluster, mut ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    // The fourth member mounts a claim that does not exist yet: Muster plans it (volumes are
    // kube-scheduler's business), kube-scheduler cannot place it, so the other three reach
    // the barrier and wait there.
    gang_at_barrier(&client, &ext, "ml", "r", 8).await;
    assert_eq!(
        bound_count(&pods_with_prefix(&client, "ml", "r-").await),
        0,
        "bound before the barrier opened"
    );

    ext.kill();
    stays_unbound(&client, "ml", "r-", Duration::from_secs(2)).await;
    ext.restart().await;
    create_bound_claim(&client, "ml", "hold").await;
    wait_pods(&client, "ml", "r-", "whole gang bound after restart", |p| {
        bound_count(p) == 4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_choice_and_bad_input() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx1-v100", 1)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;

    // 6. A 4-GPU pod on a DGX-1 gets a fully NVLinked quad.
    create_pods(&client, "ml", vec![member("quad", Gang::None, 4, None)]).await;
    let pods = wait_pods(&client, "ml", "quad", "quad bound", |p| bound_count(p) == 1).await;
    let node = node_of(&pods[0]).unwrap();
    let spec = machines::builtin("dgx1-v100").unwrap().for_node(&node);
    let ids: Vec<usize> = gpu_ids(&pods[0])
        .iter()
        .map(|u| spec.gpus.iter().position(|g| &g.uuid == u).unwrap())
        .collect();
    assert!(ids == [0, 1, 2, 3] || ids == [4, 5, 6, 7], "{ids:?}");

    // 7. Garbage to every verb: 400 with an error body, and the extender keeps serving.
    for verb in ["filter", "prioritize", "preempt", "bind"] {
        let (status, body) = http(ext.port, "POST", &format!("/{verb}"), "{not json")
            .await
            .unwrap();
        assert_eq!(status, 400, "{verb}: {body}");
        assert!(body.contains("malformed"), "{verb}: {body}");
    }
    let (status, _) = http(ext.port, "POST", "/bind", r#"{"PodName":"x"}"#)
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        http(ext.metrics_port, "GET", "/healthz", "")
            .await
            .unwrap()
            .0,
        200
    );

    // A PodGroup with minMember 0 is refused by the API with the schema's reason.
    let pgs: Api<PodGroup> = Api::namespaced(client.clone(), "ml");
    let bad = serde_json::from_value(
        json!({"apiVersion": "muster.dev/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "zero"}, "spec": {"minMember": 0}}),
    )
    .unwrap();
    let err = pgs
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("minMember"), "{err}");

    // A pod naming a missing PodGroup, and one with a malformed gang annotation, wait with reasons.
    create_pods(
        &client,
        "ml",
        vec![member("orphan", Gang::PodGroup("nope"), 1, None)],
    )
    .await;
    create_pods(
        &client,
        "ml",
        vec![member("badmin", Gang::Annotation("bm", "zero"), 1, None)],
    )
    .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "ml");
    for (pod, want) in [
        ("orphan", "PodGroup.muster.dev ml/nope: it does not exist"),
        ("badmin", "min-available"),
    ] {
        wait_for_condition(&api, pod, want).await;
    }

    // A PodGroup still short of members after its scheduleTimeoutSeconds is reported invalid.
    let short = serde_json::from_value(json!({"apiVersion": "muster.dev/v1alpha1",
        "kind": "PodGroup", "metadata": {"name": "short"},
        "spec": {"minMember": 3, "scheduleTimeoutSeconds": 2}}))
    .unwrap();
    pgs.create(&PostParams::default(), &short).await.unwrap();
    create_pods(
        &client,
        "ml",
        vec![member("short-0", Gang::PodGroup("short"), 1, None)],
    )
    .await;
    let pg = wait_podgroup(&pgs, "short", |pg| {
        pg.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Valid" && c.status == "False")
        })
    })
    .await;
    let status = pg.status.unwrap();
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap();
    assert!(
        valid.message.contains("minMember is 3 but only 1")
            && valid.message.contains("scheduleTimeoutSeconds 2"),
        "{valid:?}"
    );
    wait_for_condition(&api, "short-0", "scheduleTimeoutSeconds").await;
}

fn nominated(p: &Pod) -> Option<String> {
    p.status
        .as_ref()
        .and_then(|s| s.nominated_node_name.clone())
}

/// Muster plans gangs before kube-scheduler gets to their pods and nominates each pod to its
/// planned node, so kube-scheduler checks only that node; gated pods are not planned at all.
#[tokio::test(flavor = "multi_thread")]
async fn planned_pods_are_nominated_and_gated_pods_hold_nothing() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "nom").await;
    // kube-scheduler is down: only Muster's background rounds see the pods.
    cluster
        .stop_component(muster_testcluster::Component::Scheduler)
        .await;
    // A gated gang that would take both nodes if it were planned, then one that needs them.
    let mut gated = gang("gated", 2, 8, Gang::Annotation("gated", "2"), None);
    for p in &mut gated {
        if let Some(spec) = p.spec.as_mut() {
            spec.scheduling_gates = Some(vec![
                serde_json::from_value(json!({"name": "example.com/queue"})).unwrap(),
            ]);
        }
    }
    create_pods(&client, "nom", gated).await;
    create_pods(
        &client,
        "nom",
        gang("n", 2, 8, Gang::Annotation("n", "2"), None),
    )
    .await;
    let pods = wait_pods(&client, "nom", "n-", "gang n nominated", |p| {
        p.len() == 2 && p.iter().all(|p| nominated(p).is_some())
    })
    .await;
    let planned: Vec<(String, String)> = pods
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap(), nominated(p).unwrap()))
        .collect();
    assert_ne!(planned[0].1, planned[1].1, "one whole node per member");
    let gated = pods_with_prefix(&client, "nom", "gated-").await;
    assert!(gated.iter().all(|p| nominated(p).is_none()));

    // kube-scheduler comes back and binds each member exactly where it was nominated.
    cluster
        .start_component(muster_testcluster::Component::Scheduler)
        .await
        .unwrap();
    let pods = wait_pods(&client, "nom", "n-", "gang n bound", |p| {
        bound_count(p) == 2
    })
    .await;
    for (name, node) in &planned {
        let pod = pods.iter().find(|p| p.metadata.name.as_ref() == Some(name));
        assert_eq!(pod.and_then(node_of).as_ref(), Some(node), "{name}");
    }
    stays_unbound(&client, "nom", "gated-", Duration::from_secs(2)).await;
}
