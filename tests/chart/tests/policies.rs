//! The chart's ValidatingAdmissionPolicies on the real API server (issue 15): a tenant cannot
//! write the annotations the scheduler and the device plugin trust, Muster's ServiceAccounts
//! can; a node agent's token (bound to a pod on node A, so it carries the
//! `authentication.kubernetes.io/node-name` claim) writes only node A's GPU labels, node A's
//! GpuNode and the allocation mark of node A's pods.

mod common;
use common::*;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use muster_crds::{GpuNode, GpuNodeSpec};
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::json;
use std::time::{Duration, Instant};

const NS: &str = "muster-system";

async fn client_as(cluster: &TestCluster, user: &str, groups: &[&str]) -> Client {
    let mut config = cluster_config(cluster).await;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).expect("impersonating client")
}

async fn cluster_config(cluster: &TestCluster) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config")
}

/// A client presenting only `token` (no client certificate).
async fn client_with_token(cluster: &TestCluster, token: &str) -> Client {
    let mut config = cluster_config(cluster).await;
    config.auth_info = serde_json::from_value(json!({ "token": token })).expect("auth info");
    Client::try_from(config).expect("token client")
}

fn sa_user(ns: &str, sa: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{ns}:{sa}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    )
}

async fn as_sa(cluster: &TestCluster, ns: &str, sa: &str) -> Client {
    let (user, groups) = sa_user(ns, sa);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    client_as(cluster, &user, &groups).await
}

fn pod(name: &str, node: Option<&str>, annotations: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "main", "image": "registry.example/train:1"}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }))
    .expect("pod")
}

fn annotate(key: &str, value: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {key: value}}}))
}

/// The error of a refused write; panics if it was allowed.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e)) => {
            assert!(
                e.message.contains("ValidatingAdmissionPolicy"),
                "{what}: refused, but not by the policy: {e:?}"
            );
            // A policy whose expression fails also refuses: that would prove nothing.
            assert!(
                !e.message.contains("resulted in error"),
                "{what}: the policy failed to evaluate: {}",
                e.message
            );
            e.message
        }
        other => panic!("{what}: must be refused by the policy, got {other:?}"),
    }
}

fn allowed<T>(what: &str, result: Result<T, kube::Error>) {
    if let Err(e) = result {
        panic!("{what}: must be allowed: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_muster_writes_what_muster_trusts() {
    let cluster = TestCluster::start(ClusterSpec::default())
        .await
        .expect("control plane");
    let admin = cluster.client();
    let nodes = cluster
        .add_gpu_nodes(&NodeSpec::fixture("dgx-a100", 2))
        .await
        .expect("GPU nodes");
    let (node_a, node_b) = (nodes[0].clone(), nodes[1].clone());
    let kubeconfig = cluster.kubeconfig_path().to_str().unwrap().to_string();
    let out = helm(&[
        "install",
        "muster",
        chart_dir().to_str().unwrap(),
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        NS,
        "--create-namespace",
    ]);
    assert!(out.status.success(), "helm install: {}", text(&out.stderr));

    // A tenant with the usual namespace-scoped edit rights.
    let tenant_ns = "team-a";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": tenant_ns}})).unwrap(),
        )
        .await
        .expect("tenant namespace");
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), tenant_ns);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "tenant-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": tenant_ns}],
            }))
            .unwrap(),
        )
        .await
        .expect("tenant RoleBinding");
    let tenant = as_sa(&cluster, tenant_ns, "tenant").await;
    let tenant_pods: Api<Pod> = Api::namespaced(tenant.clone(), tenant_ns);

    // Policies take effect once the API server has loaded them.
    let forged = pod(
        "forged",
        None,
        json!({"muster.dev/gpu-ids": "GPU-00000000-0000-0000-0000-000000000000"}),
    );
    let started = Instant::now();
    let message = loop {
        match tenant_pods.create(&PostParams::default(), &forged).await {
            Err(kube::Error::Api(e)) if e.message.contains("ValidatingAdmissionPolicy") => {
                break e.message;
            }
            Ok(_) => {
                // Not enforced yet: remove it and try again.
                let _ = Api::<Pod>::namespaced(admin.clone(), tenant_ns)
                    .delete("forged", &Default::default())
                    .await;
            }
            Err(e) => panic!("tenant pod create: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pod-annotation policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        message.contains("only by the Muster scheduler"),
        "{message}"
    );

    // The tenant's own pods: created and annotated freely, but not with Muster's keys.
    allowed(
        "tenant creates a plain pod",
        tenant_pods
            .create(
                &PostParams::default(),
                &pod("job-0", None, json!({"team": "a"})),
            )
            .await,
    );
    let pp = PatchParams::default();
    allowed(
        "tenant annotates its pod",
        tenant_pods
            .patch("job-0", &pp, &annotate("team", "b"))
            .await,
    );
    for key in [
        "muster.dev/gpu-ids",
        "muster.dev/gpu-node",
        "muster.dev/planned-node",
        "muster.dev/gpu-allocation",
    ] {
        refused(
            &format!("tenant sets {key}"),
            tenant_pods.patch("job-0", &pp, &annotate(key, "x")).await,
        );
    }
    // Muster's scheduler may (it writes them in Bindings; the install test binds through it).
    let scheduler = as_sa(&cluster, NS, "muster-scheduler").await;
    let scheduler_pods: Api<Pod> = Api::namespaced(scheduler, tenant_ns);
    let patch = annotate("muster.dev/planned-node", &node_a);
    allowed(
        "the scheduler's ServiceAccount annotates",
        scheduler_pods.patch("job-0", &pp, &patch).await,
    );
    // ... and once set, the tenant can neither change nor remove it.
    let remove =
        Patch::Merge(json!({"metadata": {"annotations": {"muster.dev/planned-node": null}}}));
    refused(
        "tenant removes muster.dev/planned-node",
        tenant_pods.patch("job-0", &pp, &remove).await,
    );

    // A node agent's token, bound to a pod on node A: the API server adds the node-name claim.
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let mut agent_pod = pod("muster-node-a", Some(&node_a), json!({}));
    agent_pod.spec.as_mut().unwrap().service_account_name = Some("muster-node".into());
    let agent_pod = admin_pods
        .create(&PostParams::default(), &agent_pod)
        .await
        .expect("agent pod");
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [],
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": "muster-node-a", "uid": agent_pod.metadata.uid},
        }
    }))
    .unwrap();
    let token: TokenRequest = Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create_subresource("token", "muster-node", &PostParams::default(), &request)
        .await
        .expect("token for the agent");
    let token = token.status.expect("token status").token;
    let token = token.as_deref().expect("a token");
    let agent = client_with_token(&cluster, token).await;

    let agent_nodes: Api<Node> = Api::all(agent.clone());
    let gpu_label =
        |v: &str| Patch::Merge(json!({"metadata": {"labels": {"nvidia.com/gpu.product": v}}}));
    allowed(
        "agent labels its own node",
        agent_nodes
            .patch(&node_a, &pp, &gpu_label("NVIDIA-A100"))
            .await,
    );
    let m = refused(
        "agent labels node B",
        agent_nodes
            .patch(&node_b, &pp, &gpu_label("NVIDIA-A100"))
            .await,
    );
    assert!(m.contains("only its own node"), "{m}");
    let other_label = Patch::Merge(json!({"metadata": {"labels": {"muster.dev/rack": "r9"}}}));
    refused(
        "agent writes a non-GPU label on its own node",
        agent_nodes.patch(&node_a, &pp, &other_label).await,
    );
    let taint = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    refused(
        "agent cordons its own node",
        agent_nodes.patch(&node_a, &pp, &taint).await,
    );

    let gpu_nodes: Api<GpuNode> = Api::all(agent.clone());
    let apply = PatchParams::apply("muster-node-agent").force();
    for (node, ok) in [(&node_a, true), (&node_b, false)] {
        let object = GpuNode::new(
            node,
            GpuNodeSpec {
                node_name: node.to_string(),
                driver_version: "580.65.06".into(),
                cuda_version: None,
                model: "NVIDIA A100-SXM4-80GB".into(),
                gpu_count: 0,
                healthy_count: 0,
                clique: None,
                gpus: Vec::new(),
                topology: Vec::new(),
                last_seen: "2026-12-02T00:00:00Z".into(),
            },
        );
        let result = gpu_nodes.patch(node, &apply, &Patch::Apply(&object)).await;
        if ok {
            allowed("agent applies its own GpuNode", result);
        } else {
            refused("agent applies node B's GpuNode", result);
        }
    }

    // The device plugin (same token) marks allocations only on its own node's pods.
    let admin_tenant_pods: Api<Pod> = Api::namespaced(admin.clone(), tenant_ns);
    for (name, node) in [("on-a", &node_a), ("on-b", &node_b)] {
        admin_tenant_pods
            .create(&PostParams::default(), &pod(name, Some(node), json!({})))
            .await
            .expect("bound pod");
    }
    let plugin_pods: Api<Pod> = Api::namespaced(agent, tenant_ns);
    let mark = annotate("muster.dev/gpu-allocation", "allocated");
    allowed(
        "device plugin marks a pod on its node",
        plugin_pods.patch("on-a", &pp, &mark).await,
    );
    refused(
        "device plugin marks a pod on node B",
        plugin_pods.patch("on-b", &pp, &mark).await,
    );
    let ids = annotate("muster.dev/gpu-ids", "GPU-x");
    refused(
        "device plugin writes the scheduler's GPU choice",
        plugin_pods.patch("on-a", &pp, &ids).await,
    );
}

/// The chart's gang gate is `muster_api::gate`'s, for every scheduler name the chart sets up
/// (the harness and the benchmark install that one).
#[test]
fn the_gang_gate_is_the_schedulers_definition() {
    let objs = objects(&["scheduler.additionalSchedulerNames={scheduler-plugins-scheduler}"]);
    let policy = one(&objs, "MutatingAdmissionPolicy", "muster-gang-gate");
    let names = muster_api::SchedulerNames::new(["muster", "scheduler-plugins-scheduler"]).unwrap();
    let want: serde_yaml::Value =
        serde_json::from_value(muster_api::gate::policy_spec(&names)).unwrap();
    assert_eq!(policy["spec"], want);
    let binding = one(&objs, "MutatingAdmissionPolicyBinding", "muster-gang-gate");
    assert_eq!(binding["spec"]["policyName"], "muster-gang-gate");
    let off = objects(&["gangGate.enabled=false"]);
    assert!(of_kind(&off, "MutatingAdmissionPolicy").is_empty());
}
