//! Kubeflow training-operator (v1.8.1) with Muster, unchanged (issue 16): the operator runs with
//! `--gang-scheduler-name=muster`, so it creates a scheduler-plugins PodGroup per job, labels
//! the job's pods `scheduling.x-k8s.io/pod-group: <job>` and gives them `schedulerName: muster`;
//! the users' job manifests name no scheduler and no gang. kube-scheduler + the extender on
//! kwok GPU nodes; kwok completes the operator's pods after their
//! `pod-complete.stage.kwok.x-k8s.io/delay` as it does Job pods.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource};
use muster::*;
use muster_testcluster::operators::{self, TrainingOperator, TrainingOperatorConfig};
use muster_testcluster::{ClusterSpec, Component, NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The kinds whose pods kwok completes (besides Job's).
const OWNER_KINDS: &[&str] = &["PyTorchJob", "TFJob", "MPIJob"];
const JOB_NAME_LABEL: &str = "training.kubeflow.org/job-name";
const NS: &str = "ml";

/// Dropped in declaration order: the operator and the extender before the cluster.
struct Training {
    op: TrainingOperator,
    ext: Extender,
    cluster: TestCluster,
    _stage: tempfile::TempDir,
}

impl Training {
    fn client(&self) -> Client {
        self.cluster.client()
    }

    /// Logs for a failed assertion.
    fn logs(&self) -> String {
        format!(
            "--- training-operator ---\n{}\n--- extender ---\n{}",
            self.op.log_tail(25),
            self.ext.log_tail()
        )
    }
}

/// `gpu_nodes` DGX A100 nodes (8 GPUs each), Muster, and training-operator for gang scheduler
/// `muster`; namespace `ml`.
async fn training_cluster(gpu_nodes: u32) -> Training {
    let stage_dir = tempfile::tempdir().expect("temp dir");
    let stage = stage_dir.path().join("pod-complete-operators.yaml");
    std::fs::write(
        &stage,
        operators::kwok_completion_stage(OWNER_KINDS).expect("kwok stage"),
    )
    .expect("writing the kwok stage");
    let mut spec = ClusterSpec::default();
    spec.extra_args.insert(
        Component::Kwok,
        vec![format!("--config={}", stage.display())],
    );
    let (cluster, ext) =
        muster_cluster_from(spec, &[NodeSpec::fixture("dgx-a100", gpu_nodes)], &[]).await;
    let op = TrainingOperator::start(
        &cluster,
        TrainingOperatorConfig {
            gang_scheduler_name: "muster".into(),
            ..Default::default()
        },
    )
    .await
    .expect("training-operator");
    namespace(&cluster.client(), NS).await;
    Training {
        op,
        ext,
        cluster,
        _stage: stage_dir,
    }
}

fn kubeflow(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubeflow.org", "v1", kind), &plural)
}

async fn create_job(t: &Training, job: Value) {
    let kind = job["kind"].as_str().expect("kind").to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(t.client(), NS, &kubeflow(&kind));
    let obj: DynamicObject = serde_json::from_value(job).expect("job json");
    if let Err(e) = api.create(&PostParams::default(), &obj).await {
        panic!("creating {kind}: {e}\n{}", t.logs());
    }
}

/// A replica's pod template: no scheduler, no gang, only what a user writes (plus kwok's
/// completion delay).
fn template(container: &str, gpus: u32, delay: &str, priority_class: Option<&str>) -> Value {
    let mut t = json!({
        "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": delay}},
        "spec": {"terminationGracePeriodSeconds": 0,
            "containers": [{"name": container, "image": "registry.example/train:1",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
    });
    if gpus > 0 {
        t["spec"]["containers"][0]["resources"]["limits"] =
            json!({"nvidia.com/gpu": gpus.to_string()});
    }
    if let Some(pc) = priority_class {
        t["spec"]["priorityClassName"] = json!(pc);
    }
    t
}

fn replica(replicas: u32, template: Value) -> Value {
    json!({"replicas": replicas, "restartPolicy": "OnFailure", "template": template})
}

/// A PyTorchJob of one master and `workers` workers, `gpus` GPUs each.
fn pytorchjob(name: &str, workers: u32, gpus: u32, delay: &str) -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {
            "Master": replica(1, template("pytorch", gpus, delay, None)),
            "Worker": replica(workers, template("pytorch", gpus, delay, None)),
        }}
    })
}

async fn job_pods(client: &Client, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
        .await
        .expect("list pods")
        .items
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn finished(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Pods (not finished, not deleted) with a node.
fn running_bound(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
        .filter(|p| node_of(p).is_some())
        .count()
}

fn state(pods: &[Pod]) -> Vec<(String, Option<String>, String)> {
    let mut s: Vec<_> = pods
        .iter()
        .map(|p| (name(p), node_of(p), phase(p).to_string()))
        .collect();
    s.sort();
    s
}

/// Polls the job's pods every 100 ms until `whole` of them are bound and unfinished. Fails if
/// the job is seen bound in part (some, but fewer than `whole`) on two polls in a row: the
/// bind barrier's Bindings go out together, so one poll may fall between two of them, a
/// second one 100 ms later may not.
async fn wait_bound_whole(t: &Training, job: &str, whole: usize) -> Vec<Pod> {
    let started = Instant::now();
    let mut partial_before = false;
    loop {
        let pods = job_pods(&t.client(), job).await;
        let bound = running_bound(&pods);
        if bound >= whole {
            return pods;
        }
        let partial = bound > 0;
        assert!(
            !(partial && partial_before),
            "{job} bound in part ({bound} of {whole}) on two polls: {:?}\n{}",
            state(&pods),
            t.logs()
        );
        partial_before = partial;
        assert!(
            started.elapsed() < DEADLINE,
            "{job} not bound whole ({bound} of {whole}): {:?}\n{}",
            state(&pods),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No GPU UUID on two unfinished pods.
fn assert_no_gpu_shared(pods: &[Pod]) {
    let mut owner: HashMap<String, String> = HashMap::new();
    for p in pods.iter().filter(|p| !finished(p) && node_of(p).is_some()) {
        for id in gpu_ids(p) {
            if let Some(other) = owner.insert(id.clone(), name(p)) {
                panic!("GPU {id} handed to both {other} and {}", name(p));
            }
        }
    }
}

/// The scheduler-plugins PodGroup the operator made for `job`.
async fn pod_group(client: &Client, job: &str) -> Option<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup"),
        "podgroups",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    api.get_opt(job).await.expect("get PodGroup")
}

/// What the operator did to make the pods a gang: label, scheduler name, PodGroup minimum.
async fn assert_gang_form(t: &Training, job: &str, min_member: i64, pods: &[Pod]) {
    let pg = pod_group(&t.client(), job)
        .await
        .unwrap_or_else(|| panic!("no PodGroup {job}\n{}", t.logs()));
    assert_eq!(
        pg.data["spec"]["minMember"].as_i64(),
        Some(min_member),
        "PodGroup {job}: {:?}",
        pg.data
    );
    for p in pods {
        let labels = p.meta().labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("scheduling.x-k8s.io/pod-group")
                .map(String::as_str),
            Some(job),
            "{}",
            name(p)
        );
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()),
            Some("muster"),
            "{}",
            name(p)
        );
    }
}

/// (a) A PyTorchJob of one master and three workers, 8 GPUs each, on four 8-GPU nodes binds
/// whole, one pod per node, no GPU twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_pytorchjob_binds_whole() {
    let t = training_cluster(4).await;
    create_job(&t, pytorchjob("pt-a", 3, 8, "10m")).await;
    let pods = wait_bound_whole(&t, "pt-a", 4).await;
    assert_eq!(pods.len(), 4, "{:?}", state(&pods));
    assert_gang_form(&t, "pt-a", 4, &pods).await;
    assert_no_gpu_shared(&pods);
    let nodes: std::collections::HashSet<_> = pods.iter().filter_map(node_of).collect();
    assert_eq!(nodes.len(), 4, "{:?}", state(&pods));
}

/// (b) A second PyTorchJob on a cluster the first fills waits whole (none of its pods bound
/// while the first runs) and binds whole once the first completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_pytorchjob_waits_whole_and_binds_whole_after_the_first() {
    let t = training_cluster(4).await;
    create_job(&t, pytorchjob("pt-first", 3, 8, "25s")).await;
    let first = wait_bound_whole(&t, "pt-first", 4).await;
    assert_no_gpu_shared(&first);

    create_job(&t, pytorchjob("pt-second", 3, 8, "10m")).await;
    // While the first runs, the second is created (all four pods) and none of them binds.
    let started = Instant::now();
    loop {
        let first = job_pods(&t.client(), "pt-first").await;
        let second = job_pods(&t.client(), "pt-second").await;
        if first.iter().all(finished) && first.len() == 4 {
            break;
        }
        assert_eq!(
            second.iter().filter(|p| node_of(p).is_some()).count(),
            0,
            "pt-second bound while pt-first runs: {:?} / {:?}\n{}",
            state(&first),
            state(&second),
            t.logs()
        );
        assert!(
            started.elapsed() < DEADLINE,
            "pt-first never completed: {:?}\n{}",
            state(&first),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(job_pods(&t.client(), "pt-second").await.len(), 4);
    let second = wait_bound_whole(&t, "pt-second", 4).await;
    assert_gang_form(&t, "pt-second", 4, &second).await;
    assert_no_gpu_shared(&second);
}

#[allow(dead_code)]
async fn priority_class(client: &Client, name: &str, value: i32) {
    let api: Api<PriorityClass> = Api::all(client.clone());
    let pc = serde_json::from_value(json!({"metadata": {"name": name}, "value": value})).unwrap();
    api.create(&PostParams::default(), &pc).await.unwrap();
}
