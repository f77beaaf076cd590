//! Katib v0.19.0 with Muster, unchanged (issue 16, scenario 3): trials whose runSpec is a
//! PyTorchJob of 2 pods x 8 GPUs, run by training-operator v1.8.1 with
//! `--gang-scheduler-name=muster` (PodGroup + `schedulerName: muster`), on four DGX A100 kwok
//! nodes (32 GPUs: room for two trials). Katib's own katib-controller, DB manager (on
//! PostgreSQL) and Goptuna suggestion service run on loopback (harness `operators::Katib`,
//! `KatibDb`, `KatibSuggestion`). Two trials run whole, the third waits with none of its pods
//! bound and runs whole when one completes; a watcher checks at every observation that no trial
//! is ever placed in part.
//!
//! What kwok cannot do is run the training code, so the test does its two visible effects: kwok
//! completes the pods after `pod-complete.stage.kwok.x-k8s.io/delay`, and the test writes each
//! running trial's `loss` into Katib's database, the row the training code's `report_metrics`
//! (metrics collector `Push`) makes through the DB manager.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource};
use muster::*;
use muster_testcluster::operators::{
    self, Katib, KatibConfig, KatibDb, KatibSuggestion, TrainingOperator, TrainingOperatorConfig,
};
use muster_testcluster::{ClusterSpec, Component, NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JOB_NAME_LABEL: &str = "training.kubeflow.org/job-name";
const NS: &str = "ml";
/// Pods per trial (master + worker), 8 GPUs each.
const TRIAL_PODS: usize = 2;
/// How long a trial's pods run before kwok completes them.
const RUN_FOR: &str = "20s";
/// A gang seen bound in part for longer than this is placed in part (Muster binds a gang's
/// members together behind a barrier: an observation may fall between two Bindings).
const PARTIAL_GRACE: Duration = Duration::from_secs(2);

/// Dropped in declaration order: Katib and the operators before the cluster.
struct Env {
    katib: Katib,
    _suggestion: Option<KatibSuggestion>,
    op: TrainingOperator,
    db: KatibDb,
    ext: Extender,
    cluster: TestCluster,
    _stage: tempfile::TempDir,
}

impl Env {
    fn client(&self) -> Client {
        self.cluster.client()
    }

    fn logs(&self) -> String {
        format!(
            "--- katib-controller ---\n{}\n--- training-operator ---\n{}\n--- db-manager ---\n{}\n--- extender ---\n{}",
            self.katib.log_tail(30),
            self.op.log_tail(10),
            self.db.log_tail(10),
            self.ext.log_tail()
        )
    }
}

/// Four DGX A100 nodes, Muster, training-operator (gang scheduler `muster`), Katib's DB, and
/// katib-controller (started last: it watches only trial kinds whose CRD exists).
async fn katib_env(suggestion: bool, loopback_hosts: &[&str]) -> Env {
    let stage_dir = tempfile::tempdir().expect("temp dir");
    let stage = stage_dir.path().join("pod-complete-operators.yaml");
    let text = operators::kwok_completion_stage(&["PyTorchJob"]).expect("kwok stage");
    std::fs::write(&stage, text).expect("writing the kwok stage");
    let mut spec = ClusterSpec::default();
    spec.extra_args.insert(
        Component::Kwok,
        vec![format!("--config={}", stage.display())],
    );
    let (cluster, ext) = muster_cluster_from(spec, &[NodeSpec::fixture("dgx-a100", 4)], &[]).await;
    let op = TrainingOperator::start(
        &cluster,
        TrainingOperatorConfig {
            gang_scheduler_name: "muster".into(),
            ..Default::default()
        },
    )
    .await
    .expect("training-operator");
    let db = KatibDb::start(&cluster).await.expect("Katib DB manager");
    let suggestion = if suggestion {
        Some(KatibSuggestion::start(&cluster).await.expect("suggestion"))
    } else {
        None
    };
    let katib = Katib::start(
        &cluster,
        KatibConfig {
            db_manager: Some(db.address.clone()),
            loopback_hosts: loopback_hosts.iter().map(|h| h.to_string()).collect(),
        },
    )
    .await
    .expect("katib-controller");
    namespace(&cluster.client(), NS).await;
    Env {
        katib,
        _suggestion: suggestion,
        op,
        db,
        ext,
        cluster,
        _stage: stage_dir,
    }
}

fn katib_api(client: &Client, kind: &str) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_lowercase());
    let gvk = GroupVersionKind::gvk("kubeflow.org", "v1beta1", kind);
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// A replica of one pod with 8 GPUs, as a user writes it (plus kwok's completion delay).
fn replica() -> Value {
    json!({"replicas": 1, "restartPolicy": "OnFailure", "template": {
        "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": RUN_FOR}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "pytorch", "image": "registry.example/train:1",
            "resources": {"requests": {"cpu": "8", "memory": "64Gi"},
                "limits": {"nvidia.com/gpu": "8"}}}]}}})
}

/// A Trial as the experiment controller creates one (with the defaults its webhook sets for
/// a PyTorchJob template): runSpec a PyTorchJob named after the trial.
fn trial(name: &str, lr: &str) -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss",
                "metricStrategies": [{"name": "loss", "value": "min"}]},
            "parameterAssignments": [{"name": "lr", "value": lr}],
            "metricsCollector": {"collector": {"kind": "Push"}},
            "primaryContainerName": "pytorch",
            "primaryPodLabels": {"training.kubeflow.org/job-role": "master"},
            "successCondition": "status.conditions.#(type==\"Succeeded\")#|#(status==\"True\")#",
            "failureCondition": "status.conditions.#(type==\"Failed\")#|#(status==\"True\")#",
            "runSpec": {
                "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"pytorchReplicaSpecs": {"Master": replica(), "Worker": replica()}}
            }
        }
    })
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

fn job_of(p: &Pod) -> Option<String> {
    p.meta().labels.as_ref()?.get(JOB_NAME_LABEL).cloned()
}

/// Every trial pod of the namespace by job.
async fn pods_by_job(client: &Client) -> BTreeMap<String, Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pods = api
        .list(&ListParams::default().labels(JOB_NAME_LABEL))
        .await
        .expect("list pods")
        .items;
    let mut by_job: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods {
        if let Some(j) = job_of(&p) {
            by_job.entry(j).or_default().push(p);
        }
    }
    by_job
}

/// A job's pods bound and not finished (and not being deleted).
fn running(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
        .filter(|p| node_of(p).is_some())
        .count()
}

fn bound(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| node_of(p).is_some()).count()
}

/// What the watcher saw.
#[derive(Default)]
struct Seen {
    violations: Vec<String>,
    /// Most trials with pods running at once.
    max_running_trials: usize,
    /// Jobs in the order they first ran whole.
    whole_order: Vec<String>,
    polls: u64,
}

/// Polls every trial pod every 100 ms until dropped: a trial bound in part (some of its pods
/// bound, fewer than all, before any finished) for longer than [`PARTIAL_GRACE`], a GPU on two
/// running pods, or more than two trials running at once is a violation.
struct Watcher {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(client: Client) -> Watcher {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut partial_since: HashMap<String, Instant> = HashMap::new();
            let mut done: HashSet<String> = HashSet::new();
            loop {
                let by_job = pods_by_job(&client).await;
                observe(
                    &mut s.lock().unwrap(),
                    &by_job,
                    &mut partial_since,
                    &mut done,
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Watcher { seen, task }
    }

    /// Stops watching; what was seen.
    fn finish(self) -> Seen {
        self.task.abort();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// One poll of the [`Watcher`].
fn observe(
    seen: &mut Seen,
    by_job: &BTreeMap<String, Vec<Pod>>,
    partial_since: &mut HashMap<String, Instant>,
    done: &mut HashSet<String>,
) {
    let now = Instant::now();
    seen.polls += 1;
    let mut running_trials = 0;
    let mut gpus: HashMap<String, String> = HashMap::new();
    for (job, pods) in by_job {
        if pods
            .iter()
            .any(|p| finished(p) || p.metadata.deletion_timestamp.is_some())
        {
            done.insert(job.clone());
        }
        if running(pods) > 0 {
            running_trials += 1;
        }
        let b = bound(pods);
        if b == TRIAL_PODS && !seen.whole_order.contains(job) {
            seen.whole_order.push(job.clone());
        }
        if !done.contains(job) && b > 0 && b < TRIAL_PODS {
            let since = *partial_since.entry(job.clone()).or_insert(now);
            if now - since > PARTIAL_GRACE {
                let v = format!(
                    "{job} bound in part for {:?}: {}",
                    now - since,
                    describe(pods)
                );
                seen.violations.push(v);
            }
        } else {
            partial_since.remove(job);
        }
        for p in pods.iter().filter(|p| !finished(p) && node_of(p).is_some()) {
            let pod = p.metadata.name.clone().unwrap_or_default();
            for id in gpu_ids(p) {
                if let Some(other) = gpus.insert(id.clone(), pod.clone()) {
                    seen.violations
                        .push(format!("GPU {id} on {other} and {pod}"));
                }
            }
        }
    }
    if running_trials > 2 {
        seen.violations
            .push(format!("{running_trials} trials running at once"));
    }
    seen.max_running_trials = seen.max_running_trials.max(running_trials);
}

fn describe(pods: &[Pod]) -> String {
    let mut s: Vec<_> = pods
        .iter()
        .map(|p| {
            format!(
                "{}@{}:{}",
                p.metadata.name.as_deref().unwrap_or(""),
                node_of(p).unwrap_or_else(|| "-".into()),
                phase(p)
            )
        })
        .collect();
    s.sort();
    s.join(" ")
}

fn describe_all(by_job: &BTreeMap<String, Vec<Pod>>) -> String {
    by_job
        .iter()
        .map(|(j, p)| format!("{j}: {}", describe(p)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls until `check` holds for the trial pods; panics with the state after [`DEADLINE`].
async fn wait_jobs(
    env: &Env,
    what: &str,
    check: impl Fn(&BTreeMap<String, Vec<Pod>>) -> bool,
) -> BTreeMap<String, Vec<Pod>> {
    let started = Instant::now();
    loop {
        let by_job = pods_by_job(&env.client()).await;
        if check(&by_job) {
            return by_job;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for {what}: {}\n{}",
            describe_all(&by_job),
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of the Trial's condition `kind` ("Running", "Succeeded", ...), if any.
async fn trial_condition(env: &Env, trial: &str, kind: &str) -> Option<String> {
    let t = katib_api(&env.client(), "Trial").get(trial).await.ok()?;
    t.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

async fn wait_trial_condition(env: &Env, trial: &str, kind: &str) {
    let started = Instant::now();
    while trial_condition(env, trial, kind).await.as_deref() != Some("True") {
        let t = katib_api(&env.client(), "Trial").get(trial).await;
        let status = t.map(|t| t.data["status"].clone()).unwrap_or_default();
        assert!(
            started.elapsed() < DEADLINE,
            "Trial {trial} never {kind}: {status}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The training code's metric: a row of Katib's observation_logs, as the DB manager's
/// ReportObservationLog writes it for `report_metrics` (metrics collector `Push`).
fn report_loss(env: &Env, trial: &str, loss: &str) {
    let sql = format!(
        "INSERT INTO observation_logs (trial_name, time, metric_name, value) \
         VALUES ('{trial}', now(), 'loss', '{loss}')"
    );
    let out = std::process::Command::new("psql")
        .args(env.db.psql_args())
        .args(["-v", "ON_ERROR_STOP=1", "-c", &sql])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scheduler-plugins PodGroup the training-operator made for the trial's job, and the
/// pods' scheduler: the trial is one Muster gang of [`TRIAL_PODS`].
async fn assert_gang_form(env: &Env, job: &str, pods: &[Pod]) {
    let gvk = GroupVersionKind::gvk("scheduling.x-k8s.io", "v1alpha1", "PodGroup");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "podgroups");
    let api: Api<DynamicObject> = Api::namespaced_with(env.client(), NS, &ar);
    let pg = api.get(job).await.expect("the trial's PodGroup");
    assert_eq!(
        pg.data["spec"]["minMember"].as_i64(),
        Some(TRIAL_PODS as i64)
    );
    for p in pods {
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.scheduler_name.as_deref(),
            Some("muster"),
            "{}",
            describe(pods)
        );
    }
}

/// The scenario once three trials (created by the test or by an Experiment) exist: two run
/// whole, the third waits with none of its pods bound, then runs whole when one completes; every
/// trial gets its metric and ends Succeeded.
async fn two_run_the_third_waits(env: &Env, watcher: Watcher) {
    let by_job = wait_jobs(env, "two trials whole and the third's pods waiting", |j| {
        j.len() == 3
            && j.values().all(|p| p.len() == TRIAL_PODS)
            && j.values().filter(|p| running(p) == TRIAL_PODS).count() == 2
    })
    .await;
    let (first, waiting): (Vec<_>, Vec<_>) = by_job
        .iter()
        .partition(|(_, pods)| running(pods) == TRIAL_PODS);
    let first: Vec<String> = first.into_iter().map(|(j, _)| j.clone()).collect();
    let (third, third_pods) = waiting[0];
    let third = third.clone();
    assert_eq!(
        bound(third_pods),
        0,
        "{}\n{}",
        describe_all(&by_job),
        env.logs()
    );
    for (job, pods) in &by_job {
        assert_gang_form(env, job, pods).await;
    }
    for job in &first {
        wait_trial_condition(env, job, "Running").await;
        report_loss(env, job, "0.25");
    }

    // The third binds only once one of the first two has completed, and then whole.
    let by_job = wait_jobs(env, "the third trial whole", |j| {
        j.get(&third).is_some_and(|p| running(p) == TRIAL_PODS)
    })
    .await;
    let first_done = first.iter().any(|j| {
        by_job
            .get(j)
            .is_none_or(|p| p.iter().all(finished) || p.len() < TRIAL_PODS)
    });
    assert!(
        first_done,
        "{third} ran before a trial completed: {}",
        describe_all(&by_job)
    );
    wait_trial_condition(env, &third, "Running").await;
    report_loss(env, &third, "0.5");

    for job in first.iter().chain([&third]) {
        wait_trial_condition(env, job, "Succeeded").await;
    }
    let seen = watcher.finish();
    assert!(
        seen.violations.is_empty(),
        "{:?}\n{}",
        seen.violations,
        env.logs()
    );
    assert_eq!(seen.max_running_trials, 2, "polls: {}", seen.polls);
    assert_eq!(
        seen.whole_order.last(),
        Some(&third),
        "{:?}",
        seen.whole_order
    );
}

/// Three Katib Trials created directly (as the experiment controller would for
/// parallelTrialCount 3), each a PyTorchJob of 2 x 8 GPUs, on 32 GPUs.
#[tokio::test(flavor = "multi_thread")]
async fn three_trials_on_room_for_two_run_two_whole_then_the_third_whole() {
    let env = katib_env(false, &[]).await;
    let watcher = Watcher::start(env.client());
    let api = katib_api(&env.client(), "Trial");
    for (i, lr) in ["0.001", "0.002", "0.003"].iter().enumerate() {
        let t: DynamicObject = serde_json::from_value(trial(&format!("trial-{i}"), lr)).unwrap();
        if let Err(e) = api.create(&PostParams::default(), &t).await {
            panic!("creating Trial trial-{i}: {e}\n{}", env.logs());
        }
    }
    two_run_the_third_waits(&env, watcher).await;
}
