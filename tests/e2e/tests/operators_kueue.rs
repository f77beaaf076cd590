//! Kueue (v0.17.0) in front of Muster (issue 16, scenario 5): Kueue admits batch/v1 Jobs
//! against a ClusterQueue's GPU quota (suspending the others through its Job webhook), Muster
//! binds the admitted Jobs' pods as gangs (`muster.dev/gang` annotations on the pod template).
//! A Job Kueue holds has no pods, so Muster holds no capacity for it: a gang outside Kueue
//! takes the GPUs the quota leaves unused at once. The quota (32 GPUs) admits two Jobs of
//! 2 x 8 GPUs; the nodes hold 48. kube-scheduler + the extender on kwok GPU
//! nodes; kwok completes the Jobs' pods after `pod-complete.stage.kwok.x-k8s.io/delay`.

mod muster;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use muster::*;
use muster_testcluster::operators::{Kueue, KueueConfig};
use muster_testcluster::{NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const NS: &str = "ml";
const QUEUE: &str = "gpu-queue";

/// Dropped in declaration order: Kueue and the extender before the cluster.
struct Queued {
    kueue: Kueue,
    ext: Extender,
    cluster: TestCluster,
}

impl Queued {
    fn client(&self) -> Client {
        self.cluster.client()
    }

    fn logs(&self) -> String {
        format!(
            "--- kueue ---\n{}\n--- extender ---\n{}",
            self.kueue.log_tail(25),
            self.ext.log_tail()
        )
    }
}

fn kueue_api(client: &Client, kind: &str, namespaced: bool) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind),
        &plural,
    );
    if namespaced {
        Api::namespaced_with(client.clone(), NS, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    }
}

async fn create(t: &Queued, kind: &str, namespaced: bool, obj: Value) {
    let api = kueue_api(&t.client(), kind, namespaced);
    let obj: DynamicObject = serde_json::from_value(obj).expect("object json");
    if let Err(e) = api.create(&PostParams::default(), &obj).await {
        panic!("creating {kind}: {e}\n{}", t.logs());
    }
}

/// Six 8-GPU nodes (48 GPUs), Muster, Kueue for batch/v1 Jobs; a ResourceFlavor, a
/// ClusterQueue of 32 GPUs and a LocalQueue `gpu-queue` in namespace `ml`.
async fn kueue_cluster() -> Queued {
    kueue_cluster_with(6, 32, KueueConfig::default()).await
}

/// `nodes` 8-GPU nodes, Kueue started with `config`, a ClusterQueue of `gpu_quota` GPUs.
async fn kueue_cluster_with(nodes: u32, gpu_quota: u32, config: KueueConfig) -> Queued {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", nodes)], &[]).await;
    let kueue = Kueue::start(&cluster, config).await.expect("kueue");
    namespace(&cluster.client(), NS).await;
    let t = Queued {
        kueue,
        ext,
        cluster,
    };
    create(
        &t,
        "ResourceFlavor",
        false,
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
            "metadata": {"name": "default-flavor"}}),
    )
    .await;
    create(
        &t,
        "ClusterQueue",
        false,
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
        "metadata": {"name": "gpu-cluster-queue"},
        "spec": {"namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
            "flavors": [{"name": "default-flavor", "resources": [
                {"name": "cpu", "nominalQuota": "64"},
                {"name": "memory", "nominalQuota": "256Gi"},
                {"name": "nvidia.com/gpu", "nominalQuota": gpu_quota.to_string()},
            ]}]
        }]}}),
    )
    .await;
    create(
        &t,
        "LocalQueue",
        true,
        json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": NS},
            "spec": {"clusterQueue": "gpu-cluster-queue"}}),
    )
    .await;
    t
}

/// A Job in `gpu-queue` of `pods` pods (parallelism = completions) of 8 GPUs each, one Muster
/// gang of `pods`, completing `delay` after it runs.
fn job(name: &str, pods: u32, delay: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"kueue.x-k8s.io/queue-name": QUEUE}},
        "spec": {"parallelism": pods, "completions": pods, "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {
                    "muster.dev/gang": name,
                    "muster.dev/min-available": pods.to_string(),
                    "pod-complete.stage.kwok.x-k8s.io/delay": delay,
                }},
                "spec": {"schedulerName": "muster", "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "train", "image": "registry.example/train:1",
                        "resources": {
                            "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "8"},
                            "limits": {"nvidia.com/gpu": "8"}}}]}}}
    }))
    .expect("job json")
}

async fn submit(t: &Queued, job: Job) {
    let api: Api<Job> = Api::namespaced(t.client(), NS);
    if let Err(e) = api.create(&PostParams::default(), &job).await {
        panic!("creating Job: {e}\n{}", t.logs());
    }
}

async fn get_job(t: &Queued, name: &str) -> Job {
    let api: Api<Job> = Api::namespaced(t.client(), NS);
    api.get(name).await.expect("get job")
}

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

fn succeeded(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
        && job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
}

async fn job_pods(t: &Queued, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(t.client(), NS);
    api.list(&ListParams::default().labels(&format!("job-name={job}")))
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

fn running_bound(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
        .filter(|p| node_of(p).is_some())
        .count()
}

fn state(pods: &[Pod]) -> Vec<(String, Option<String>, String)> {
    let mut s: Vec<_> = pods
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                node_of(p),
                phase(p).to_string(),
            )
        })
        .collect();
    s.sort();
    s
}

/// Whether Kueue's Workload of `job` is admitted (its `Admitted` condition).
async fn admitted(t: &Queued, job: &str) -> Option<bool> {
    let api = kueue_api(&t.client(), "Workload", true);
    let list = api.list(&ListParams::default()).await.expect("workloads");
    let wl = list.items.into_iter().find(|w| {
        w.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Job" && o.name == job)
    })?;
    let conds = wl.data["status"]["conditions"].as_array().cloned();
    Some(
        conds
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Admitted" && c["status"] == "True"),
    )
}

/// Polls every 100 ms until `whole` pods of the Job are bound and unfinished; fails if seen
/// bound in part on two polls in a row (the bind barrier's Bindings go out together).
async fn wait_bound_whole(t: &Queued, job: &str, whole: usize) -> Vec<Pod> {
    let started = Instant::now();
    let mut partial_before = false;
    loop {
        let pods = job_pods(t, job).await;
        let bound = running_bound(&pods);
        if bound >= whole {
            return pods;
        }
        let partial = bound > 0 && bound < whole;
        assert!(
            !(partial && partial_before),
            "{job} bound in part ({bound} of {whole}) on two polls: {:?}\n{}",
            state(&pods),
            t.logs()
        );
        partial_before = partial;
        assert!(
            started.elapsed() < DEADLINE,
            "{job} not bound whole ({bound} of {whole}): {:?} admitted={:?}\n{}",
            state(&pods),
            admitted(t, job).await,
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (1) Kueue admits the first two Jobs (2 x 8 GPUs each: the quota of 32) and suspends the
/// third; Muster binds each admitted Job whole. (2) The third has no pods, or none bound, while
/// it waits, and Muster holds nothing for it: a gang outside Kueue that needs the 16 GPUs the
/// quota leaves unused binds at once. (3) When the first two complete, Kueue admits the third
/// and Muster binds it whole.
#[tokio::test(flavor = "multi_thread")]
async fn kueue_admits_jobs_by_quota_and_muster_binds_them_whole() {
    let t = kueue_cluster().await;

    // (1) The first two fill the quota; the third, submitted once they are admitted (Kueue
    // orders by creation time, one second apart at best), is suspended.
    submit(&t, job("job-a", 2, "20s")).await;
    submit(&t, job("job-b", 2, "20s")).await;
    let a = wait_bound_whole(&t, "job-a", 2).await;
    let b = wait_bound_whole(&t, "job-b", 2).await;
    assert_no_gpu_shared(&[a, b].concat());
    submit(&t, job("job-c", 2, "10m")).await;
    let started = Instant::now();
    loop {
        if admitted(&t, "job-c").await == Some(false) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no Workload for job-c (or it was admitted beyond the quota)\n{}",
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in ["job-a", "job-b"] {
        assert_eq!(admitted(&t, name).await, Some(true), "{name}\n{}", t.logs());
        assert!(!suspended(&get_job(&t, name).await), "{name} suspended");
    }
    assert!(
        suspended(&get_job(&t, "job-c").await),
        "job-c not suspended by Kueue's webhook\n{}",
        t.logs()
    );

    // (2) With the quota full, a gang outside Kueue needing the other 16 GPUs binds at once.
    let free = gang("free", 2, 8, Gang::Annotation("free", "2"), None);
    create_pods(&t.client(), NS, free).await;
    let started = Instant::now();
    loop {
        let free = pods_with_prefix(&t.client(), NS, "free-").await;
        if bound_count(&free) == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gang outside Kueue did not bind at once (Muster holds capacity for job-c?): \
             {:?} / job-c {:?}\n{}",
            state(&free),
            state(&job_pods(&t, "job-c").await),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = job_pods(&t, "job-a").await;
    let b = job_pods(&t, "job-b").await;
    assert_eq!(
        running_bound(&a) + running_bound(&b),
        4,
        "job-a/job-b finished before the gang outside Kueue bound: {:?} {:?}",
        state(&a),
        state(&b)
    );
    let all = [a, b, pods_with_prefix(&t.client(), NS, "free-").await].concat();
    assert_no_gpu_shared(&all);
    // Make room for job-c again.
    let pods: Api<Pod> = Api::namespaced(t.client(), NS);
    for i in 0..2 {
        pods.delete(&format!("free-{i}"), &DeleteParams::default())
            .await
            .expect("delete free pod");
    }

    // (2) While job-a and job-b run, job-c stays suspended with no pod bound.
    let started = Instant::now();
    loop {
        let a = get_job(&t, "job-a").await;
        let b = get_job(&t, "job-b").await;
        if succeeded(&a) && succeeded(&b) {
            break;
        }
        let c = job_pods(&t, "job-c").await;
        if admitted(&t, "job-c").await != Some(true) {
            assert_eq!(
                bound_count(&c),
                0,
                "job-c has bound pods while not admitted: {:?}\n{}",
                state(&c),
                t.logs()
            );
        }
        assert!(
            started.elapsed() < DEADLINE,
            "job-a/job-b never completed: {:?}\n{}",
            (a.status, b.status),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // (3) Kueue admits job-c, Muster binds it whole.
    let c = wait_bound_whole(&t, "job-c", 2).await;
    assert_eq!(admitted(&t, "job-c").await, Some(true));
    assert_no_gpu_shared(&c);
}

/// Kueue's `pod` integration: plain pods in a Kueue pod group get its
/// `kueue.x-k8s.io/admission` scheduling gate until admitted. With a quota of 16 GPUs on 32,
/// the first group (2 x 8 GPUs) is admitted and Muster binds it whole; the second stays gated
/// and unbound, and Muster plans nothing for it: a gang outside Kueue needing the other 16 GPUs
/// binds at once.
#[tokio::test(flavor = "multi_thread")]
async fn pods_kueue_gates_hold_no_capacity_in_musters_plans() {
    let config = KueueConfig {
        frameworks: vec!["batch/job".into(), "pod".into()],
        ..Default::default()
    };
    let t = kueue_cluster_with(4, 16, config).await;
    let group = |name: &str| {
        let mut pods = gang(name, 2, 8, Gang::Annotation(name, "2"), None);
        for p in &mut pods {
            let labels = p.metadata.labels.get_or_insert_with(Default::default);
            labels.insert("kueue.x-k8s.io/queue-name".into(), QUEUE.into());
            labels.insert("kueue.x-k8s.io/pod-group-name".into(), name.into());
            p.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert("kueue.x-k8s.io/pod-group-total-count".into(), "2".into());
        }
        pods
    };
    let gated = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| g.iter().any(|g| g.name == "kueue.x-k8s.io/admission"))
    };
    create_pods(&t.client(), NS, group("pg-a")).await;
    let a = wait_pods(&t.client(), NS, "pg-a-", "pg-a bound whole", |p| {
        bound_count(p) == 2
    })
    .await;
    assert!(!a.iter().any(gated), "{:?}", state(&a));
    create_pods(&t.client(), NS, group("pg-b")).await;
    let b = pods_with_prefix(&t.client(), NS, "pg-b-").await;
    assert!(
        b.iter().all(gated),
        "Kueue's pod webhook did not gate pg-b: {:?}\n{}",
        b.iter()
            .map(|p| p.spec.clone().and_then(|s| s.scheduling_gates))
            .collect::<Vec<_>>(),
        t.logs()
    );

    let free = gang("free", 2, 8, Gang::Annotation("free", "2"), None);
    create_pods(&t.client(), NS, free).await;
    let started = Instant::now();
    loop {
        let free = pods_with_prefix(&t.client(), NS, "free-").await;
        let b = pods_with_prefix(&t.client(), NS, "pg-b-").await;
        assert_eq!(bound_count(&b), 0, "gated pg-b bound: {:?}", state(&b));
        if bound_count(&free) == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gang outside Kueue did not bind at once (Muster plans the gated pg-b?): \
             {:?} / pg-b {:?}\n{}",
            state(&free),
            state(&b),
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = pods_with_prefix(&t.client(), NS, "pg-b-").await;
    assert!(b.iter().all(gated), "{:?}", state(&b));
    let all = [a, pods_with_prefix(&t.client(), NS, "free-").await].concat();
    assert_no_gpu_shared(&all);
}

/// No GPU UUID on two unfinished pods.
fn assert_no_gpu_shared(pods: &[Pod]) {
    let mut owner = std::collections::HashMap::new();
    for p in pods.iter().filter(|p| !finished(p) && node_of(p).is_some()) {
        for id in gpu_ids(p) {
            let name = p.metadata.name.clone().unwrap_or_default();
            if let Some(other) = owner.insert(id.clone(), name.clone()) {
                panic!("GPU {id} handed to both {other} and {name}");
            }
        }
    }
}
