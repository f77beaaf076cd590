//! KubeRay (v1.5.0) with Muster, unchanged (issue 16). KubeRay's gang integrations hard-code
//! the scheduler name they give pods: `--batch-scheduler=scheduler-plugins` sets
//! `scheduler-plugins-scheduler` (and makes a scheduler-plugins PodGroup per RayCluster
//! labelled `ray.io/gang-scheduling-enabled`), `--batch-scheduler=volcano` sets `volcano` (and
//! makes a Volcano PodGroup per RayCluster or RayJob). Muster serves those names as extra
//! profiles (`--scheduler-name`, the chart's `scheduler.additionalSchedulerNames`); the users'
//! manifests name no scheduler. kube-scheduler + the extender on kwok GPU nodes.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource};
use muster::*;
use muster_testcluster::operators::{KubeRay, KubeRayConfig};
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const NS: &str = "ray";
const DEADLINE: Duration = Duration::from_secs(120);
const SCHEDULER_PLUGINS_NAME: &str = "scheduler-plugins-scheduler";

/// Dropped in declaration order: the operator and the extender before the cluster.
struct Ray {
    op: KubeRay,
    ext: Extender,
    cluster: TestCluster,
}

impl Ray {
    fn client(&self) -> Client {
        self.cluster.client()
    }

    fn logs(&self) -> String {
        format!(
            "--- kuberay ---\n{}\n--- extender ---\n{}",
            self.op.log_tail(25),
            self.ext.log_tail()
        )
    }
}

/// `gpu_nodes` DGX A100 nodes, Muster also serving `scheduler_name`, and KubeRay with
/// `--batch-scheduler=<batch_scheduler>`; namespace `ray`.
async fn ray_cluster(gpu_nodes: u32, batch_scheduler: &str, scheduler_name: &str) -> Ray {
    let (cluster, ext) = muster_cluster_named(
        ClusterSpec::default(),
        &[NodeSpec::fixture("dgx-a100", gpu_nodes)],
        &[],
        &[scheduler_name],
    )
    .await;
    let op = KubeRay::start(
        &cluster,
        KubeRayConfig {
            batch_scheduler: batch_scheduler.into(),
            ..Default::default()
        },
    )
    .await
    .expect("kuberay");
    namespace(&cluster.client(), NS).await;
    Ray { op, ext, cluster }
}

fn ray(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("ray.io", "v1", kind), &plural)
}

async fn create(t: &Ray, obj: Value) {
    let kind = obj["kind"].as_str().expect("kind").to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(t.client(), NS, &ray(&kind));
    let obj: DynamicObject = serde_json::from_value(obj).expect("object json");
    if let Err(e) = api.create(&PostParams::default(), &obj).await {
        panic!("creating {kind}: {e}\n{}", t.logs());
    }
}

fn container(name: &str, gpus: u32) -> Value {
    let mut c = json!({"name": name, "image": "rayproject/ray:2.46.0",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}});
    if gpus > 0 {
        c["resources"]["limits"]["nvidia.com/gpu"] = json!(gpus.to_string());
    }
    c
}

/// A RayCluster spec: a CPU head and `workers` workers of `gpus` GPUs.
fn cluster_spec(workers: u32, gpus: u32) -> Value {
    json!({
        "headGroupSpec": {"rayStartParams": {},
            "template": {"spec": {"terminationGracePeriodSeconds": 0,
                "containers": [container("ray-head", 0)]}}},
        "workerGroupSpecs": [{"groupName": "gpu", "replicas": workers, "minReplicas": workers,
            "maxReplicas": workers, "rayStartParams": {},
            "template": {"spec": {"terminationGracePeriodSeconds": 0,
                "containers": [container("ray-worker", gpus)]}}}]
    })
}

fn raycluster(name: &str, workers: u32, gpus: u32) -> Value {
    json!({"apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": name, "labels": {"ray.io/gang-scheduling-enabled": "true"}},
        "spec": cluster_spec(workers, gpus)})
}

async fn pods_where(client: &Client, keep: impl Fn(&Pod) -> bool) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pods = api.list(&ListParams::default()).await.expect("list pods");
    pods.items.into_iter().filter(|p| keep(p)).collect()
}

/// The pods of RayCluster `name`.
async fn cluster_pods(client: &Client, name: &str) -> Vec<Pod> {
    pods_where(client, |p| label(p, "ray.io/cluster") == Some(name)).await
}

fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn live_bound(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && node_of(p).is_some())
        .count()
}

fn state(pods: &[Pod]) -> Vec<(String, Option<String>)> {
    let mut s: Vec<_> = pods.iter().map(|p| (name(p), node_of(p))).collect();
    s.sort();
    s
}

/// Polls until `whole` pods are listed and bound; fails if the gang is seen bound in part on
/// two polls 100 ms apart (the barrier's Bindings go out together).
async fn wait_bound_whole<F, Fut>(t: &Ray, what: &str, whole: usize, list: F) -> Vec<Pod>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<Pod>>,
{
    let started = Instant::now();
    let mut partial_before = false;
    loop {
        let pods = list().await;
        let bound = live_bound(&pods);
        if bound >= whole {
            return pods;
        }
        let partial = bound > 0;
        assert!(
            !(partial && partial_before),
            "{what} bound in part ({bound} of {whole}) on two polls: {:?}\n{}",
            state(&pods),
            t.logs()
        );
        partial_before = partial;
        assert!(
            started.elapsed() < DEADLINE,
            "{what} not bound whole ({bound} of {whole}): {:?}\n{}",
            state(&pods),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_no_gpu_shared(pods: &[Pod]) {
    let mut owner: HashMap<String, String> = HashMap::new();
    for p in pods.iter().filter(|p| node_of(p).is_some()) {
        for id in gpu_ids(p) {
            if let Some(other) = owner.insert(id.clone(), name(p)) {
                panic!("GPU {id} handed to both {other} and {}", name(p));
            }
        }
    }
}

async fn pod_group(client: &Client, group: &str, version: &str, name: &str) -> Option<Value> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, "PodGroup"),
        "podgroups",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    let pg = api.get_opt(name).await.expect("get PodGroup");
    pg.map(|pg| pg.data)
}

fn scheduler_name(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref())
}

/// examples/raycluster.yaml (1 head + 3 x 8 GPUs) binds whole through scheduler-plugins
/// PodGroups; a second RayCluster that does not fit beside it waits with no pod bound, and
/// binds whole once the first is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn the_raycluster_example_binds_whole_and_a_second_waits_whole() {
    let t = ray_cluster(4, "scheduler-plugins", SCHEDULER_PLUGINS_NAME).await;
    let text = std::fs::read_to_string(repo_root().join("examples/raycluster.yaml"))
        .expect("examples/raycluster.yaml");
    let example: Value = serde_yaml::from_str(&text).expect("example YAML");
    let first = example["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    create(&t, example).await;
    let c = t.client();
    let pods = wait_bound_whole(&t, &first, 4, || cluster_pods(&c, &first)).await;
    assert_eq!(pods.len(), 4, "{:?}", state(&pods));
    assert_no_gpu_shared(&pods);
    // What KubeRay did to make the pods a gang, and what Muster read.
    let pg = pod_group(&c, "scheduling.x-k8s.io", "v1alpha1", &first)
        .await
        .unwrap_or_else(|| panic!("no PodGroup {first}\n{}", t.logs()));
    assert_eq!(pg["spec"]["minMember"].as_i64(), Some(4), "{pg:?}");
    for p in &pods {
        assert_eq!(
            scheduler_name(p),
            Some(SCHEDULER_PLUGINS_NAME),
            "{}",
            name(p)
        );
        assert_eq!(
            label(p, "scheduling.x-k8s.io/pod-group"),
            Some(first.as_str())
        );
    }
    let workers: HashSet<_> = pods
        .iter()
        .filter(|p| !gpu_ids(p).is_empty())
        .filter_map(node_of)
        .collect();
    assert_eq!(
        workers.len(),
        3,
        "one 8-GPU worker per node: {:?}",
        state(&pods)
    );
    // kubectl muster shows the gang under KubeRay's names (told Muster's scheduler names).
    let top = kubectl_muster(&t.cluster, NS, &[SCHEDULER_PLUGINS_NAME], &["top", "jobs"]);
    let row = top
        .lines()
        .find(|l| l.starts_with(&format!("{first} ")))
        .unwrap_or_else(|| panic!("no row for {first}:\n{top}"));
    assert!(row.contains(&format!("RayCluster/{first}")), "{top}");
    assert!(row.contains("4/4/4") && row.contains("Running"), "{top}");
    let explain = kubectl_muster(
        &t.cluster,
        NS,
        &[SCHEDULER_PLUGINS_NAME],
        &["explain", &first],
    );
    assert!(
        explain.contains(&format!("RayCluster/{first}")),
        "{explain}"
    );

    // 8 GPUs are left: a cluster of 2 x 8 must not start in part.
    create(&t, raycluster("rc-second", 2, 8)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let second = cluster_pods(&c, "rc-second").await;
        assert_eq!(
            live_bound(&second),
            0,
            "rc-second bound in part beside {first}: {:?}\n{}",
            state(&second),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cluster_pods(&c, "rc-second").await.len(),
        3,
        "all pods created"
    );

    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), NS, &ray("RayCluster"));
    api.delete(&first, &DeleteParams::foreground())
        .await
        .expect("delete the first RayCluster");
    let second = wait_bound_whole(&t, "rc-second", 3, || cluster_pods(&c, "rc-second")).await;
    assert_no_gpu_shared(&second);
}

/// A RayJob through KubeRay's Volcano integration: one Volcano PodGroup for the RayJob
/// (head + workers; the submitter is left out of the minimum by design), every pod
/// `schedulerName: volcano`; Muster binds the cluster whole, then the submitter Job's pod.
#[tokio::test(flavor = "multi_thread")]
async fn a_rayjob_binds_whole_through_the_volcano_integration() {
    let t = ray_cluster(3, "volcano", "volcano").await;
    create(
        &t,
        json!({"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": "rj"},
            "spec": {"entrypoint": "python train.py", "submissionMode": "K8sJobMode",
                "rayClusterSpec": cluster_spec(2, 8)}}),
    )
    .await;
    let c = t.client();
    let group = "ray-rj-pg";
    let in_group = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("scheduling.k8s.io/group-name"))
            .map(String::as_str)
            == Some(group)
    };
    let members = || pods_where(&c, |p| in_group(p) && label(p, "job-name").is_none());
    let pods = wait_bound_whole(&t, "rj's RayCluster", 3, members).await;
    assert_no_gpu_shared(&pods);
    for p in &pods {
        assert_eq!(scheduler_name(p), Some("volcano"), "{}", name(p));
    }
    let pg = pod_group(&c, "scheduling.volcano.sh", "v1beta1", group)
        .await
        .unwrap_or_else(|| panic!("no Volcano PodGroup {group}\n{}", t.logs()));
    assert_eq!(pg["spec"]["minMember"].as_i64(), Some(3), "{pg:?}");

    // Once the cluster runs, KubeRay creates the submitter Job; its pod is a member beyond
    // the minimum and binds on its own.
    let started = Instant::now();
    loop {
        let submitter = pods_where(&c, |p| in_group(p) && label(p, "job-name").is_some()).await;
        if submitter.iter().any(|p| node_of(p).is_some()) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the submitter pod was not bound: {:?}\n{}",
            state(&submitter),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
