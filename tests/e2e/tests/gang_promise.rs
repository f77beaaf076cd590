//! The gang promise under the conditions users create (issue 14): members beyond the minimum,
//! gangs restarted whole, Bindings refused by admission, nodes deleted at the barrier, planned
//! nodes kube-scheduler will not accept. Each test runs kube-scheduler + the extender on kwok.

mod muster;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use muster::*;
use muster_testcluster::NodeSpec;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// No GPU UUID on two live pods, and no node holding more GPUs than it has.
fn assert_no_gpu_shared(pods: &[Pod], gpus_per_node: usize) {
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter().filter(|p| live(p)) {
        let Some(node) = node_of(p) else { continue };
        let name = p.metadata.name.clone().unwrap_or_default();
        let ids = gpu_ids(p);
        *per_node.entry(node.clone()).or_default() += ids.len();
        for id in ids {
            if let Some(other) = owner.insert(id.clone(), name.clone()) {
                panic!("GPU {id} handed to both {other} and {name}");
            }
        }
    }
    for (node, n) in per_node {
        assert!(n <= gpus_per_node, "{node} holds {n} GPUs' worth of pods");
    }
}

/// Case 1: a member beyond the minimum that appears while the minimum waits at the barrier
/// neither binds alone nor breaks the minimum's plan.
#[tokio::test(flavor = "multi_thread")]
async fn an_extra_member_waits_for_the_minimum() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    gang_at_barrier(&client, &ext, "ml", "lx", 4).await;

    create_pods(
        &client,
        "ml",
        vec![member("lx-4", Gang::Annotation("lx", "4"), 4, None)],
    )
    .await;
    stays_unbound(&client, "ml", "lx-", Duration::from_secs(6)).await;
    assert!(
        ext.metric("muster_bind_barrier_waiting_pods").await >= 3.0,
        "the minimum's members were dropped from the barrier: {}",
        ext.log_tail()
    );

    create_bound_claim(&client, "ml", "hold").await;
    let pods = wait_pods(&client, "ml", "lx-", "all five bound", |p| {
        bound_count(p) == 5
    })
    .await;
    assert_no_gpu_shared(&pods, 8);
}

/// Case 1: an Indexed Job whose parallelism is twice its gang minimum (the Job controller
/// creates pods in slow-start batches): all bind, no GPU goes to two pods, twice over.
#[tokio::test(flavor = "multi_thread")]
async fn an_indexed_job_above_its_minimum_never_shares_a_gpu() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "ml");
    for round in 0..2 {
        let name = format!("ij{round}");
        let job = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"completions": 8, "parallelism": 8, "completionMode": "Indexed",
                "backoffLimit": 0,
                "template": {
                    // kwok completes Job pods at once unless told to wait.
                    "metadata": {"annotations": {"muster.dev/gang": name, "muster.dev/min-available": "4",
                        "pod-complete.stage.kwok.x-k8s.io/delay": "10m"}},
                    "spec": {"schedulerName": "muster", "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "main", "image": "registry.example/train:1",
                            "resources": {"limits": {"nvidia.com/gpu": "4"},
                                "requests": {"cpu": "1", "memory": "1Gi"}}}]}}}
        }))
        .unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
        let pods = wait_pods(&client, "ml", &name, "all eight bound", |p| {
            p.iter().filter(|p| live(p) && node_of(p).is_some()).count() == 8
        })
        .await;
        assert_no_gpu_shared(&pods, 8);
        jobs.delete(&name, &DeleteParams::background().grace_period(0))
            .await
            .unwrap();
        wait_pods(&client, "ml", &name, "job's pods gone", |p| p.is_empty()).await;
    }
}

/// Case 2: a gang restarted whole while its old pods still terminate waits for its new
/// minimum; the terminating pods are not members.
#[tokio::test(flavor = "multi_thread")]
async fn a_gang_restarted_while_old_pods_terminate_binds_whole() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 8)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "ml");
    let mut old = gang("old", 4, 8, Gang::Annotation("rs", "4"), None);
    for p in &mut old {
        p.metadata.finalizers = Some(vec!["muster.dev/e2e-hold".into()]);
    }
    create_pods(&client, "ml", old).await;
    wait_pods(&client, "ml", "old-", "first generation bound", |p| {
        bound_count(p) == 4
    })
    .await;
    for i in 0..4 {
        api.delete(&format!("old-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_pods(&client, "ml", "old-", "first generation terminating", |p| {
        p.iter().all(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;

    create_pods(
        &client,
        "ml",
        gang("new", 2, 8, Gang::Annotation("rs", "4"), None),
    )
    .await;
    stays_unbound(&client, "ml", "new-", Duration::from_secs(6)).await;
    create_pods(
        &client,
        "ml",
        (2..4)
            .map(|i| member(&format!("new-{i}"), Gang::Annotation("rs", "4"), 8, None))
            .collect(),
    )
    .await;
    wait_pods(
        &client,
        "ml",
        "new-",
        "second generation bound whole",
        |p| bound_count(p) == 4,
    )
    .await;
    for i in 0..4 {
        let patch = json!({"metadata": {"finalizers": null}});
        api.patch(
            &format!("old-{i}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    }
}

/// Case 3: an admission policy refuses one member's Binding. The barrier validates every
/// member first (dry run), so nobody is bound; once the policy goes, the gang binds whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_binding_refused_by_admission_binds_nobody() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    let policies: Api<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy> =
        Api::all(client.clone());
    let bindings: Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    > = Api::all(client.clone());
    let policy = serde_json::from_value(json!({
        "metadata": {"name": "deny-v2-binding"},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pods/binding"]}]},
            "validations": [{"expression": "object.metadata.name != 'v-2'",
                "message": "e2e policy refuses to bind v-2"}]}
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let binding = serde_json::from_value(json!({
        "metadata": {"name": "deny-v2-binding"},
        "spec": {"policyName": "deny-v2-binding", "validationActions": ["Deny"]}
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The API server loads policies asynchronously.
    tokio::time::sleep(Duration::from_secs(3)).await;

    create_pods(
        &client,
        "ml",
        gang("v", 4, 8, Gang::Annotation("v", "4"), None),
    )
    .await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let pods = pods_with_prefix(&client, "ml", "v-").await;
        assert_eq!(
            bound_count(&pods),
            0,
            "part of the gang was bound although v-2's Binding is refused: {}",
            ext.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bindings
        .delete("deny-v2-binding", &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete("deny-v2-binding", &DeleteParams::default())
        .await
        .unwrap();
    wait_pods(
        &client,
        "ml",
        "v-",
        "gang bound whole after the policy went",
        |p| bound_count(p) == 4,
    )
    .await;
}

/// What happens to one of a waiting gang's planned nodes.
#[derive(Clone, Copy, Debug)]
enum NodeChange {
    Deleted,
    Cordoned,
}

/// A planned node is deleted or cordoned while its gang waits at the barrier: the plan is
/// dropped and the gang binds whole elsewhere, never on that node.
async fn planned_node_changes_at_the_barrier(change: NodeChange) {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    gang_at_barrier(&client, &ext, "ml", "nd", 8).await;

    // Each member needs a whole node: the four planned nodes are all the nodes there were.
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names.len(), 4);
    cluster
        .add_gpu_nodes(&NodeSpec {
            name_prefix: "spare".into(),
            ..NodeSpec::fixture("dgx-a100", 1)
        })
        .await
        .unwrap();
    let changed = names[0].clone();
    match change {
        NodeChange::Deleted => {
            nodes
                .delete(&changed, &DeleteParams::default())
                .await
                .unwrap();
        }
        NodeChange::Cordoned => {
            let patch = json!({"spec": {"unschedulable": true}});
            nodes
                .patch(&changed, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    }

    create_bound_claim(&client, "ml", "hold").await;
    let pods = wait_pods(&client, "ml", "nd-", "gang bound whole", |p| {
        bound_count(p) == 4
    })
    .await;
    let used: HashSet<String> = pods.iter().filter_map(node_of).collect();
    assert!(
        !used.contains(&changed),
        "a member was bound to the {change:?} node {changed}: {used:?}"
    );
    assert_eq!(used.len(), 4, "one member per node: {used:?}");
}

/// Cases 3/4: a planned node deleted at the barrier.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_deleted_at_the_barrier_replans_the_gang_whole() {
    planned_node_changes_at_the_barrier(NodeChange::Deleted).await;
}

/// Case 4: a planned node cordoned at the barrier.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_cordoned_at_the_barrier_replans_the_gang_whole() {
    planned_node_changes_at_the_barrier(NodeChange::Cordoned).await;
}

/// Case 5: kube-scheduler rejects the planned node for a reason Muster does not model
/// (required pod anti-affinity): the node is excluded for that pod and the pod re-planned,
/// instead of waiting out the barrier and being planned on the same node again.
#[tokio::test(flavor = "multi_thread")]
async fn a_planned_node_kube_scheduler_refuses_is_excluded_and_replanned() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    let nodes: Vec<String> = {
        let api: Api<Node> = Api::all(client.clone());
        let mut n: Vec<String> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        n.sort();
        n
    };
    // A foreign pod (bound directly, no scheduler) takes 4 GPUs of the second node, so
    // Muster's best fit for a 4-GPU pod is that node; the pod below refuses to share a node
    // with it, which kube-scheduler checks and Muster does not.
    let blocker: Pod = serde_json::from_value(json!({
        "metadata": {"name": "blocker", "labels": {"app": "blocker"}},
        "spec": {"nodeName": nodes[1], "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "registry.example/serve:1",
                "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}
    }))
    .unwrap();
    create_pods(&client, "ml", vec![blocker]).await;
    let mut pod = member("aa", Gang::None, 4, None);
    pod.spec.as_mut().unwrap().affinity = Some(
        serde_json::from_value(json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "blocker"}},
                "topologyKey": "kubernetes.io/hostname"}]}}))
        .unwrap(),
    );
    create_pods(&client, "ml", vec![pod]).await;
    // Well inside the barrier timeout (60 s) and the unclaimed-plan timeout (180 s).
    let started = Instant::now();
    let api: Api<Pod> = Api::namespaced(client.clone(), "ml");
    loop {
        let p = api.get("aa").await.unwrap();
        if let Some(node) = node_of(&p) {
            assert_eq!(node, nodes[0], "bound beside the pod it must avoid");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "pod was not re-planned off the node kube-scheduler refuses"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Case 3: the API server restarts while a gang waits at the barrier: whatever the
/// extender's watches and in-flight calls see, the gang ends bound whole, never in part.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_restart_at_the_barrier_leaves_no_partial_gang() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    gang_at_barrier(&client, &ext, "ml", "ar", 8).await;

    cluster
        .restart_component(muster_testcluster::Component::ApiServer)
        .await
        .expect("API server restarted");
    let client = cluster.client();
    assert_eq!(
        bound_count(&pods_with_prefix(&client, "ml", "ar-").await),
        0
    );
    create_bound_claim(&client, "ml", "hold").await;
    let started = Instant::now();
    let mut partial_since = None;
    loop {
        let pods = pods_with_prefix(&client, "ml", "ar-").await;
        let bound = bound_count(&pods);
        // The README's bound: a gang below its minimum is rolled back within about 15 s.
        if bound > 0 && bound < 4 {
            let since = *partial_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "gang stayed bound in part ({bound} of 4): {}",
                ext.log_tail()
            );
        } else {
            partial_since = None;
        }
        if bound == 4 {
            assert_no_gpu_shared(&pods, 8);
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gang not bound whole after the restart ({bound} of 4): {}",
            ext.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Case 10: a pod whose requests do not add up (two containers asking 2^31 GPUs each) waits
/// with a reason instead of wrapping to a small number or panicking the extender, and the
/// gangs beside it are placed as usual.
#[tokio::test(flavor = "multi_thread")]
async fn absurd_requests_wait_with_a_reason_and_harm_nobody() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    let absurd: Pod = serde_json::from_value(json!({
        "metadata": {"name": "absurd"},
        "spec": {"schedulerName": "muster", "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "a", "image": "registry.example/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": "2147483648"}}},
                {"name": "b", "image": "registry.example/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": "2147483648"}}}]}
    }))
    .unwrap();
    create_pods(&client, "ml", vec![absurd]).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "ml");
    // kube-scheduler's own filters refuse the pod, so only Muster's rounds read it.
    tokio::time::sleep(Duration::from_secs(3)).await;

    create_pods(
        &client,
        "ml",
        gang("fine", 2, 8, Gang::Annotation("fine", "2"), None),
    )
    .await;
    wait_pods(&client, "ml", "fine-", "the gang beside it bound", |p| {
        bound_count(p) == 2
    })
    .await;
    assert!(node_of(&api.get("absurd").await.unwrap()).is_none());
    for bad in ["panicked", "planning round failed"] {
        assert!(
            !ext.log_contains(bad),
            "extender log has {bad:?}: {}",
            ext.log_tail()
        );
    }
}
