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
    training_cluster_for(gpu_nodes, "muster").await
}

/// [`training_cluster`] with the operator's `--gang-scheduler-name=<gang_scheduler>`; Muster
/// also serves that scheduler name when it is not `muster`.
async fn training_cluster_for(gpu_nodes: u32, gang_scheduler: &str) -> Training {
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
    let extra: Vec<&str> = (gang_scheduler != "muster")
        .then_some(gang_scheduler)
        .into_iter()
        .collect();
    let nodes = [NodeSpec::fixture("dgx-a100", gpu_nodes)];
    let (cluster, ext) = muster_cluster_named(spec, &nodes, &[], &extra).await;
    let op = TrainingOperator::start(
        &cluster,
        TrainingOperatorConfig {
            gang_scheduler_name: gang_scheduler.into(),
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
    wait_bound(t, job, whole, whole).await
}

/// [`wait_bound_whole`] for a gang whose minimum `min` is below `want`: fewer than `min` bound
/// is a gang in part, `min` up to `want` is not.
async fn wait_bound(t: &Training, job: &str, min: usize, want: usize) -> Vec<Pod> {
    let whole = want;
    let started = Instant::now();
    let mut partial_before = false;
    loop {
        let pods = job_pods(&t.client(), job).await;
        let bound = running_bound(&pods);
        if bound >= whole {
            return pods;
        }
        let partial = bound > 0 && bound < min;
        assert!(
            !(partial && partial_before),
            "{job} bound in part ({bound}, minimum {min}) on two polls: {:?}\n{}",
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
    // Muster writes the operator's PodGroup status in scheduler-plugins' shape.
    wait_group_phase(&t, "scheduling.x-k8s.io", "v1alpha1", "pt-a", "Running").await;
}

/// Waits until the PodGroup's `status.phase` is `want`.
async fn wait_group_phase(t: &Training, group: &str, version: &str, name: &str, want: &str) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, "PodGroup"),
        "podgroups",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(t.client(), NS, &ar);
    let started = Instant::now();
    loop {
        let pg = api.get_opt(name).await.expect("get PodGroup");
        let phase = pg
            .as_ref()
            .and_then(|g| g.data["status"]["phase"].as_str().map(String::from));
        if phase.as_deref() == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "PodGroup {group} {name}: phase {phase:?}, want {want}: {:?}\n{}",
            pg.map(|g| g.data),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// training-operator's Volcano mode (`--gang-scheduler-name=volcano`) creates a job's pods only
/// once its Volcano PodGroup is `Inqueue`: Muster, serving the name `volcano`, admits the group
/// at once, the PyTorchJob's pods are created and bind whole, and the group turns `Running`.
#[tokio::test(flavor = "multi_thread")]
async fn a_pytorchjob_through_the_volcano_mode_binds_whole() {
    let t = training_cluster_for(4, "volcano").await;
    create_job(&t, pytorchjob("pt-v", 3, 8, "10m")).await;
    let pods = wait_bound_whole(&t, "pt-v", 4).await;
    assert_no_gpu_shared(&pods);
    for p in &pods {
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()),
            Some("volcano"),
            "{}",
            name(p)
        );
    }
    wait_group_phase(&t, "scheduling.volcano.sh", "v1beta1", "pt-v", "Running").await;
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

async fn priority_class(client: &Client, name: &str, value: i32) {
    let api: Api<PriorityClass> = Api::all(client.clone());
    let pc = serde_json::from_value(json!({"metadata": {"name": name}, "value": value})).unwrap();
    api.create(&PostParams::default(), &pc).await.unwrap();
}

/// Pods of `job` waiting for a node (not deleted).
fn pending(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && node_of(p).is_none())
        .count()
}

/// Asserts for `quiet` that exactly `bound` of the job's pods stay bound and `waiting` wait.
async fn stays(t: &Training, job: &str, bound: usize, waiting: usize, quiet: Duration) {
    let started = Instant::now();
    while started.elapsed() < quiet {
        let pods = job_pods(&t.client(), job).await;
        assert_eq!(
            (running_bound(&pods), pending(&pods)),
            (bound, waiting),
            "{job}: {:?}\n{}",
            state(&pods),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (c) A TFJob with two CPU-only parameter servers and four 8-GPU workers is one gang of six:
/// all six bind together.
#[tokio::test(flavor = "multi_thread")]
async fn a_tfjob_with_cpu_parameter_servers_binds_whole() {
    let t = training_cluster(4).await;
    create_job(
        &t,
        json!({
            "apiVersion": "kubeflow.org/v1", "kind": "TFJob",
            "metadata": {"name": "tf"},
            "spec": {"tfReplicaSpecs": {
                "PS": replica(2, template("tensorflow", 0, "10m", None)),
                "Worker": replica(4, template("tensorflow", 8, "10m", None)),
            }}
        }),
    )
    .await;
    let pods = wait_bound_whole(&t, "tf", 6).await;
    assert_gang_form(&t, "tf", 6, &pods).await;
    assert_no_gpu_shared(&pods);
    let ps_gpus: usize = pods
        .iter()
        .filter(|p| name(p).starts_with("tf-ps-"))
        .map(|p| gpu_ids(p).len())
        .sum();
    assert_eq!(
        ps_gpus,
        0,
        "a parameter server got GPUs: {:?}",
        state(&pods)
    );
}

/// (d) An MPIJob (kubeflow.org/v1): a CPU launcher and two 8-GPU workers bind as one gang.
#[tokio::test(flavor = "multi_thread")]
async fn an_mpijob_launcher_and_workers_bind_whole() {
    let t = training_cluster(2).await;
    create_job(
        &t,
        json!({
            "apiVersion": "kubeflow.org/v1", "kind": "MPIJob",
            "metadata": {"name": "mpi"},
            "spec": {"slotsPerWorker": 8, "mpiReplicaSpecs": {
                "Launcher": replica(1, template("launcher", 0, "10m", None)),
                "Worker": replica(2, template("worker", 8, "10m", None)),
            }}
        }),
    )
    .await;
    let pods = wait_bound_whole(&t, "mpi", 3).await;
    assert_gang_form(&t, "mpi", 3, &pods).await;
    assert_no_gpu_shared(&pods);
}

/// (e) `runPolicy.schedulingPolicy.minAvailable: 4` on a PyTorchJob of six 8-GPU pods with room
/// for four: the minimum binds, the other two wait; nothing below four is ever bound.
#[tokio::test(flavor = "multi_thread")]
async fn min_available_below_the_replica_count_binds_the_minimum() {
    let t = training_cluster(4).await;
    let mut job = pytorchjob("pt-min", 5, 8, "10m");
    job["spec"]["runPolicy"] = json!({"schedulingPolicy": {"minAvailable": 4}});
    create_job(&t, job).await;
    let pods = wait_bound_whole(&t, "pt-min", 4).await;
    assert_gang_form(&t, "pt-min", 4, &pods).await;
    assert_no_gpu_shared(&pods);
    stays(&t, "pt-min", 4, 2, Duration::from_secs(5)).await;
}

/// (f) A PyTorchJob whose pods carry a higher priority class preempts a lower one whole: every
/// pod of the victim is evicted, none keeps running beside the preemptor, and the preemptor
/// binds whole. (`runPolicy.schedulingPolicy.priorityClass` is set too, as users do; with
/// scheduler-plugins PodGroups the operator does not copy it anywhere, the pods' own
/// `priorityClassName` is what counts.)
#[tokio::test(flavor = "multi_thread")]
async fn a_higher_priority_pytorchjob_preempts_a_lower_one_whole() {
    let t = training_cluster(4).await;
    priority_class(&t.client(), "train-low", 100).await;
    priority_class(&t.client(), "train-high", 1000).await;
    let job = |name: &str, pc: &str| {
        json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name},
            "spec": {
                "runPolicy": {"schedulingPolicy": {"priorityClass": pc}},
                "pytorchReplicaSpecs": {
                    "Master": replica(1, template("pytorch", 8, "10m", Some(pc))),
                    "Worker": replica(3, template("pytorch", 8, "10m", Some(pc))),
                }}
        })
    };
    create_job(&t, job("pt-low", "train-low")).await;
    let low = wait_bound_whole(&t, "pt-low", 4).await;
    let low_uids: Vec<_> = low.iter().filter_map(|p| p.metadata.uid.clone()).collect();

    create_job(&t, job("pt-high", "train-high")).await;
    let started = Instant::now();
    let mut partial_before = false;
    loop {
        let low = job_pods(&t.client(), "pt-low").await;
        let high = job_pods(&t.client(), "pt-high").await;
        // The first generation of the victim: some of it running while some of it is gone
        // is a gang left in part (tolerated for one poll: deletions go out together).
        let alive = low
            .iter()
            .filter(|p| {
                p.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| low_uids.contains(u))
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        let partial = alive > 0 && alive < 4;
        assert!(
            !(partial && partial_before),
            "pt-low left running in part ({alive} of 4): {:?} / {:?}\n{}",
            state(&low),
            state(&high),
            t.logs()
        );
        partial_before = partial;
        if running_bound(&high) == 4 {
            assert_eq!(
                alive,
                0,
                "pt-low still running beside pt-high: {:?}",
                state(&low)
            );
            assert_eq!(
                running_bound(&low),
                0,
                "a recreated pt-low pod bound beside pt-high: {:?}",
                state(&low)
            );
            assert_no_gpu_shared(&high);
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "pt-high never bound whole: {:?} / {:?}\n{}",
            state(&low),
            state(&high),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_gang_form(&t, "pt-high", 4, &job_pods(&t.client(), "pt-high").await).await;
    assert!(
        t.ext.metric("muster_evictions_total").await >= 4.0,
        "evictions: {}",
        t.ext.metric("muster_evictions_total").await
    );
    // The operator recreates the victim's pods; they wait, whole, for room.
    stays(&t, "pt-low", 0, 4, Duration::from_secs(4)).await;
}

/// (g) An elastic PyTorchJob (`elasticPolicy` 2..4 workers, `minAvailable: 2`) on a cluster
/// with room for two: two workers bind, two wait; when the job beside it completes, the other
/// two bind.
#[tokio::test(flavor = "multi_thread")]
async fn an_elastic_pytorchjob_starts_at_its_minimum_and_grows() {
    let t = training_cluster(4).await;
    create_job(&t, pytorchjob("pt-beside", 1, 8, "20s")).await;
    wait_bound_whole(&t, "pt-beside", 2).await;
    create_job(
        &t,
        json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": "pt-elastic"},
            "spec": {
                "elasticPolicy": {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"},
                "runPolicy": {"schedulingPolicy": {"minAvailable": 2}},
                "pytorchReplicaSpecs": {
                    "Worker": replica(4, template("pytorch", 8, "10m", None)),
                }}
        }),
    )
    .await;
    let pods = wait_bound(&t, "pt-elastic", 2, 2).await;
    assert_gang_form(&t, "pt-elastic", 2, &pods).await;
    let beside = job_pods(&t.client(), "pt-beside").await;
    if running_bound(&beside) == 2 {
        assert_eq!(running_bound(&pods), 2, "{:?}", state(&pods));
    }
    let pods = wait_bound(&t, "pt-elastic", 2, 4).await;
    assert_no_gpu_shared(&pods);
}

/// examples/pytorchjob.yaml binds whole (the test only adds kwok's completion delay to its
/// pod templates, so the pods stay Running).
#[tokio::test(flavor = "multi_thread")]
async fn the_pytorchjob_example_binds_whole() {
    let t = training_cluster(4).await;
    let text = std::fs::read_to_string(repo_root().join("examples/pytorchjob.yaml"))
        .expect("examples/pytorchjob.yaml");
    let mut job: Value = serde_yaml::from_str(&text).expect("example YAML");
    let name = job["metadata"]["name"].as_str().expect("name").to_string();
    let replicas = job["spec"]["pytorchReplicaSpecs"]
        .as_object_mut()
        .expect("pytorchReplicaSpecs");
    for spec in replicas.values_mut() {
        spec["template"]["metadata"] =
            json!({"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "10m"}});
    }
    create_job(&t, job).await;
    let pods = wait_bound_whole(&t, &name, 4).await;
    assert_gang_form(&t, &name, 4, &pods).await;
    assert_no_gpu_shared(&pods);
    // kubectl muster shows the gang under the operator's names.
    let top = kubectl_muster(&t.cluster, NS, &[], &["top", "jobs"]);
    let row = top
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name}:\n{top}"));
    assert!(row.contains(&format!("PyTorchJob/{name}")), "{top}");
    assert!(row.contains("4/4/4"), "{top}");
    let explain = kubectl_muster(&t.cluster, NS, &[], &["explain", &name]);
    assert!(
        explain.contains(&format!("Owner:         PyTorchJob/{name}")),
        "{explain}"
    );
}
