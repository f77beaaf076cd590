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

mod katib_watch;
mod muster;

use k8s_openapi::api::core::v1::Pod;
use katib_watch::*;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use muster::*;
use muster_testcluster::operators::{
    self, Katib, KatibConfig, KatibDb, KatibSuggestion, TrainingOperator, TrainingOperatorConfig,
};
use muster_testcluster::{ClusterSpec, Component, NodeSpec, TestCluster};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// How long a trial's pods run before kwok completes them.
const RUN_FOR: &str = "20s";

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
    // Katib's experiment webhook admits Experiments only in namespaces with this label, and its
    // pod webhook then labels trial pods and gives them KATIB_TRIAL_NAME (no sidecar for Push).
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client());
    let ns = json!({"metadata": {"name": NS,
        "labels": {"katib.kubeflow.org/metrics-collector-injection": "enabled"}}});
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .expect("namespace ml");
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
/// pods' scheduler: the trial is one Muster gang of [`TRIAL_PODS`]; Katib's pod webhook
/// mutated its pods on the way (and left the scheduler alone).
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
        // Katib's pod webhook saw the pod too: KATIB_TRIAL_NAME on the primary container.
        let env_names: Vec<&str> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env_names.contains(&"KATIB_TRIAL_NAME"), "{env_names:?}");
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

/// The example's Experiment (as users write it) in namespace `ml`, its trial pods given kwok's
/// completion delay.
fn example_experiment() -> Value {
    let path = repo_root().join("examples/katib-experiment.yaml");
    let text = std::fs::read_to_string(&path).expect("reading examples/katib-experiment.yaml");
    let mut exp: Value = serde_yaml::from_str(&text).expect("the example is YAML");
    exp["metadata"]["namespace"] = json!(NS);
    let replicas = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]
        .as_object_mut()
        .expect("a PyTorchJob trial template");
    for r in replicas.values_mut() {
        r["template"]["metadata"] =
            json!({"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": RUN_FOR}});
    }
    exp
}

/// Stands in for the cluster's default scheduler, which this test cluster does not run (its
/// kube-scheduler has only the `muster` profile): binds pods of `default-scheduler` in `ml`
/// (Katib's suggestion Deployment) to the first node.
fn default_scheduler(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        loop {
            for p in pods
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let spec = p.spec.as_ref();
                let default =
                    spec.and_then(|s| s.scheduler_name.as_deref()) == Some("default-scheduler");
                if !default || node_of(&p).is_some() {
                    continue;
                }
                let name = p.metadata.name.clone().unwrap_or_default();
                let binding = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": "dgx-a100-0"}});
                let _ = pods
                    .create_subresource::<_, Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// The Experiment condition `kind`'s status, if any.
async fn experiment_condition(env: &Env, name: &str, kind: &str) -> (Option<String>, Value) {
    let e = katib_api(&env.client(), "Experiment")
        .get(name)
        .await
        .expect("Experiment");
    let status = e.data["status"].clone();
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str().map(str::to_string));
    (c, status)
}

/// examples/katib-experiment.yaml (parallelTrialCount 3, trials PyTorchJobs of 2 x 8 GPUs) on
/// room for two, end to end: Katib's webhooks admit it (dry run, then for real), its Goptuna
/// suggestion service suggests three trials, two run whole, the third waits whole and runs when
/// one completes, and the Experiment succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_experiment_runs_two_trials_whole_then_the_third() {
    let exp = example_experiment();
    let name = exp["metadata"]["name"].as_str().expect("name").to_string();
    let algorithm = exp["spec"]["algorithm"]["algorithmName"]
        .as_str()
        .expect("algorithm");
    // The suggestion Service Katib dials: <experiment>-<algorithm>.<namespace>:6789.
    let service = format!("{name}-{algorithm}.{NS}");
    let env = katib_env(true, &[&service]).await;
    let scheduler = default_scheduler(env.client());
    let api = katib_api(&env.client(), "Experiment");
    let obj: DynamicObject = serde_json::from_value(exp).unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match api.create(&dry, &obj).await {
        Ok(admitted) => assert_eq!(
            admitted.data["spec"]["trialTemplate"]["successCondition"],
            json!("status.conditions.#(type==\"Succeeded\")#|#(status==\"True\")#"),
            "Katib's defaulting webhook did not run: {:?}",
            admitted.data
        ),
        Err(e) => panic!("dry run of the example: {e}\n{}", env.logs()),
    }
    let mut invalid = obj.clone();
    invalid.data["spec"]["algorithm"]["algorithmName"] = json!("no-such-algorithm");
    let refused = api.create(&dry, &invalid).await;
    assert!(
        refused.is_err(),
        "Katib's validating webhook admitted an unknown algorithm"
    );

    let watcher = Watcher::start(env.client());
    if let Err(e) = api.create(&PostParams::default(), &obj).await {
        panic!("creating the example Experiment: {e}\n{}", env.logs());
    }
    two_run_the_third_waits(&env, watcher).await;
    let started = Instant::now();
    loop {
        let (succeeded, status) = experiment_condition(&env, &name, "Succeeded").await;
        if succeeded.as_deref() == Some("True") {
            assert_eq!(status["trialsSucceeded"], json!(3), "{status}");
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "Experiment {name} never Succeeded: {status}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The trials' assignments came from Katib's suggestion service over gRPC: three distinct
    // learning rates inside the feasible space.
    let sug = katib_api(&env.client(), "Suggestion")
        .get(&name)
        .await
        .expect("Suggestion");
    assert_eq!(
        sug.data["status"]["suggestionCount"],
        json!(3),
        "{:?}",
        sug.data["status"]
    );
    let trials = katib_api(&env.client(), "Trial")
        .list(&ListParams::default())
        .await
        .expect("Trials")
        .items;
    let lrs: HashSet<String> = trials
        .iter()
        .filter_map(|t| t.data["spec"]["parameterAssignments"][0]["value"].as_str())
        .map(str::to_string)
        .collect();
    assert_eq!(lrs.len(), 3, "{lrs:?}");
    for lr in &lrs {
        let v: f64 = lr.parse().expect("a number");
        assert!(
            (0.0001..=0.01).contains(&v),
            "lr {v} outside the feasible space"
        );
    }
    scheduler.abort();
}
