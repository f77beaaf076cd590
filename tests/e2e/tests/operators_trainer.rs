//! Kubeflow Trainer v2 (v2.0.0) through JobSet (v0.8.2) with Muster, unchanged (issue 16,
//! scenario 2): a TrainJob whose runtime has `podGroupPolicy.coscheduling` gets a
//! scheduler-plugins PodGroup (minMember = all its pods) and pods labelled
//! `scheduling.x-k8s.io/pod-group: <trainjob>`; the runtime's pod template says
//! `schedulerName: muster` (Trainer sets no scheduler name). Trainer builds a JobSet, JobSet a
//! batch/v1 Job, the Job controller the pods, which kwok's default pod-complete stage completes
//! after their `pod-complete.stage.kwok.x-k8s.io/delay`. kube-scheduler + the extender on kwok
//! DGX A100 nodes.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource};
use muster::*;
use muster_testcluster::operators::{JobSet, JobSetConfig, Trainer, TrainerConfig};
use muster_testcluster::{NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const NS: &str = "ml";
/// JobSet labels every pod with its JobSet's name, which is the TrainJob's.
const JOBSET_NAME_LABEL: &str = "jobset.sigs.k8s.io/jobset-name";

/// Dropped in declaration order: the operators and the extender before the cluster.
struct Setup {
    trainer: Trainer,
    jobset: JobSet,
    ext: Extender,
    cluster: TestCluster,
}

impl Setup {
    fn client(&self) -> Client {
        self.cluster.client()
    }

    fn logs(&self) -> String {
        format!(
            "--- trainer ---\n{}\n--- jobset ---\n{}\n--- extender ---\n{}",
            self.trainer.log_tail(20),
            self.jobset.log_tail(15),
            self.ext.log_tail()
        )
    }
}

/// `gpu_nodes` DGX A100 nodes (8 GPUs each), Muster, JobSet and Trainer; namespace `ml`.
async fn trainer_cluster(gpu_nodes: u32) -> Setup {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", gpu_nodes)], &[]).await;
    // JobSet first: Trainer watches JobSets and needs their CRD.
    let jobset = JobSet::start(&cluster, JobSetConfig::default())
        .await
        .expect("jobset");
    let trainer = Trainer::start(&cluster, TrainerConfig::default())
        .await
        .expect("trainer");
    namespace(&cluster.client(), NS).await;
    Setup {
        trainer,
        jobset,
        ext,
        cluster,
    }
}

fn trainer_api(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("trainer.kubeflow.org", "v1alpha1", kind),
        &plural,
    )
}

async fn create(t: &Setup, object: Value) {
    let kind = object["kind"].as_str().expect("kind").to_string();
    let ar = trainer_api(&kind);
    let api: Api<DynamicObject> = if kind == "ClusterTrainingRuntime" {
        Api::all_with(t.client(), &ar)
    } else {
        Api::namespaced_with(t.client(), NS, &ar)
    };
    let obj: DynamicObject = serde_json::from_value(object).expect("object json");
    if let Err(e) = api.create(&PostParams::default(), &obj).await {
        panic!("creating {kind}: {e}\n{}", t.logs());
    }
}

/// A TrainingRuntime in `ml` as a user writes one for Muster (coscheduling pod-group policy,
/// `schedulerName: muster`), its pods running `delay` under kwok.
fn runtime(name: &str, delay: &str) -> Value {
    json!({
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime",
        "metadata": {"name": name},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
            "podGroupPolicy": {"coscheduling": {"scheduleTimeoutSeconds": 120}},
            "template": {"spec": {"replicatedJobs": [{
                "name": "node",
                "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    "spec": {"template": {
                        "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": delay}},
                        "spec": {
                            "schedulerName": "muster",
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{"name": "node", "image": "registry.example/train:1",
                                "command": ["torchrun", "train.py"]}]
                        }
                    }}
                }
            }]}}
        }
    })
}

/// A TrainJob of `nodes` x `gpus` on TrainingRuntime `runtime`.
fn trainjob(name: &str, runtime: &str, nodes: u32, gpus: u32) -> Value {
    json!({
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {
            "runtimeRef": {"name": runtime, "kind": "TrainingRuntime"},
            "trainer": {"numNodes": nodes, "resourcesPerNode": {
                "limits": {"nvidia.com/gpu": gpus.to_string()},
                "requests": {"cpu": "1", "memory": "1Gi"}}}
        }
    })
}

async fn job_pods(client: &Client, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("{JOBSET_NAME_LABEL}={job}")))
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

/// Polls every 100 ms until `whole` pods of the job are bound and unfinished. Fails if the job
/// is seen bound in part on two polls in a row (the bind barrier's Bindings go out together:
/// one poll may fall between two of them, a second one 100 ms later may not).
async fn wait_bound_whole(t: &Setup, job: &str, whole: usize) -> Vec<Pod> {
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

/// Waits until all `n` pods of `job` exist (the Job controller made them).
async fn wait_created(t: &Setup, job: &str, n: usize) {
    let started = Instant::now();
    loop {
        let pods = job_pods(&t.client(), job).await;
        if pods.len() >= n {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{job}: {} of {n} pods created: {:?}\n{}",
            pods.len(),
            state(&pods),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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

async fn pod_group(client: &Client, job: &str) -> Option<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup"),
        "podgroups",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
    api.get_opt(job).await.expect("get PodGroup")
}

/// What Trainer did to make the pods a gang: a PodGroup named after the TrainJob, owned by it,
/// with minMember = all pods; every pod labelled with it and scheduled by `muster`.
async fn assert_gang_form(t: &Setup, job: &str, min_member: i64, pods: &[Pod]) {
    let pg = pod_group(&t.client(), job)
        .await
        .unwrap_or_else(|| panic!("no PodGroup {job}\n{}", t.logs()));
    assert_eq!(
        pg.data["spec"]["minMember"].as_i64(),
        Some(min_member),
        "PodGroup {job}: {:?}",
        pg.data
    );
    let owner = pg.meta().owner_references.clone().unwrap_or_default();
    assert!(
        owner.iter().any(|o| o.kind == "TrainJob" && o.name == job),
        "PodGroup {job} owners: {owner:?}"
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

/// While `first` has running pods, `second` (all `n` pods created) has none bound. Returns
/// once `done(first pods)` holds.
async fn waits_unbound_while(t: &Setup, first: &str, second: &str, done: impl Fn(&[Pod]) -> bool) {
    let started = Instant::now();
    loop {
        let a = job_pods(&t.client(), first).await;
        let b = job_pods(&t.client(), second).await;
        if done(&a) {
            return;
        }
        assert_eq!(
            b.iter().filter(|p| node_of(p).is_some()).count(),
            0,
            "{second} bound while {first} runs: {:?} / {:?}\n{}",
            state(&a),
            state(&b),
            t.logs()
        );
        assert!(
            started.elapsed() < DEADLINE,
            "{first} never went: {:?}\n{}",
            state(&a),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (a) A TrainJob of 4 nodes x 8 GPUs on five 8-GPU nodes binds whole through JobSet: one
/// JobSet, four pods on four nodes, a PodGroup of minimum four, no GPU twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_trainjob_binds_whole_through_jobset() {
    let t = trainer_cluster(5).await;
    create(&t, runtime("torch-muster", "10m")).await;
    create(&t, trainjob("tj-a", "torch-muster", 4, 8)).await;
    let pods = wait_bound_whole(&t, "tj-a", 4).await;
    assert_eq!(pods.len(), 4, "{:?}", state(&pods));
    assert_gang_form(&t, "tj-a", 4, &pods).await;
    assert_no_gpu_shared(&pods);
    let nodes: HashSet<_> = pods.iter().filter_map(node_of).collect();
    assert_eq!(nodes.len(), 4, "{:?}", state(&pods));
    for p in &pods {
        assert_eq!(gpu_ids(p).len(), 8, "{}: {:?}", name(p), gpu_ids(p));
    }
    // The pods are JobSet's (through a batch/v1 Job), the JobSet the TrainJob's.
    let jobsets: Api<DynamicObject> = Api::namespaced_with(
        t.client(),
        NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("jobset.x-k8s.io", "v1alpha2", "JobSet"),
            "jobsets",
        ),
    );
    let js = jobsets.get("tj-a").await.expect("JobSet tj-a");
    let owners = js.meta().owner_references.clone().unwrap_or_default();
    assert!(
        owners.iter().any(|o| o.kind == "TrainJob"),
        "JobSet owners: {owners:?}"
    );
    for p in &pods {
        let owners = p.meta().owner_references.clone().unwrap_or_default();
        assert!(owners.iter().any(|o| o.kind == "Job"), "{}", name(p));
    }
}

/// (b) A second TrainJob (2 x 8 GPUs) while the first (4 x 8) holds four of five nodes: one
/// of its pods would fit, none binds; it binds whole once the first completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_trainjob_that_does_not_fit_waits_unbound_and_binds_whole_after_the_first_completes() {
    let t = trainer_cluster(5).await;
    create(&t, runtime("torch-short", "25s")).await;
    create(&t, runtime("torch-long", "10m")).await;
    create(&t, trainjob("tj-first", "torch-short", 4, 8)).await;
    let first = wait_bound_whole(&t, "tj-first", 4).await;
    assert_no_gpu_shared(&first);

    create(&t, trainjob("tj-second", "torch-long", 2, 8)).await;
    wait_created(&t, "tj-second", 2).await;
    waits_unbound_while(&t, "tj-first", "tj-second", |a| {
        a.len() == 4 && a.iter().all(finished)
    })
    .await;
    let second = wait_bound_whole(&t, "tj-second", 2).await;
    assert_gang_form(&t, "tj-second", 2, &second).await;
    assert_no_gpu_shared(&second);
}

/// (c) A TrainJob of 4 x 8 GPUs on four nodes the first one fills waits with no pod bound for
/// as long as the first runs, and binds whole once the first TrainJob is deleted (its JobSet,
/// Job and pods go with it).
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_trainjob_binds_whole_once_the_first_is_deleted() {
    let t = trainer_cluster(4).await;
    create(&t, runtime("torch-long", "10m")).await;
    create(&t, trainjob("tj-first", "torch-long", 4, 8)).await;
    wait_bound_whole(&t, "tj-first", 4).await;
    create(&t, trainjob("tj-second", "torch-long", 4, 8)).await;
    wait_created(&t, "tj-second", 4).await;
    // Nothing of it binds while the first runs (a few seconds of quiet).
    let quiet = Instant::now();
    waits_unbound_while(&t, "tj-first", "tj-second", |_| {
        quiet.elapsed() > Duration::from_secs(8)
    })
    .await;
    let pg = pod_group(&t.client(), "tj-second").await;
    assert!(pg.is_some(), "no PodGroup tj-second");

    let trainjobs: Api<DynamicObject> =
        Api::namespaced_with(t.client(), NS, &trainer_api("TrainJob"));
    trainjobs
        .delete("tj-first", &DeleteParams::foreground())
        .await
        .expect("deleting tj-first");
    waits_unbound_while(&t, "tj-first", "tj-second", |a| running_bound(a) == 0).await;
    let second = wait_bound_whole(&t, "tj-second", 4).await;
    assert_gang_form(&t, "tj-second", 4, &second).await;
    assert_no_gpu_shared(&second);
}

/// examples/trainjob.yaml (a ClusterTrainingRuntime and a TrainJob of 4 x 8 GPUs) binds whole
/// (the test only adds kwok's completion delay to the runtime's pod template).
#[tokio::test(flavor = "multi_thread")]
async fn the_trainjob_example_binds_whole() {
    let t = trainer_cluster(4).await;
    let text = std::fs::read_to_string(repo_root().join("examples/trainjob.yaml"))
        .expect("examples/trainjob.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("example YAML"))
        .collect();
    let mut job_name = None;
    for mut doc in docs {
        if doc["kind"] == "ClusterTrainingRuntime" {
            for rj in doc["spec"]["template"]["spec"]["replicatedJobs"]
                .as_array_mut()
                .expect("replicatedJobs")
            {
                rj["template"]["spec"]["template"]["metadata"] =
                    json!({"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "10m"}});
            }
        } else {
            job_name = doc["metadata"]["name"].as_str().map(str::to_string);
        }
        create(&t, doc).await;
    }
    let name = job_name.expect("a TrainJob in the example");
    let pods = wait_bound_whole(&t, &name, 4).await;
    assert_gang_form(&t, &name, 4, &pods).await;
    assert_no_gpu_shared(&pods);
}
