//! `kubectl muster` against a real control plane: kwok GPU nodes whose `GpuNode`s come from node
//! agents on the fake NVML, Muster's extender behind kube-scheduler, and a known scene: two gangs
//! running, one preempted by a higher-priority gang, one pending for capacity, one pending for
//! members. Each view is compared with `kubectl-muster/tests/snapshots/e2e_*.txt`
//! (`UPDATE_SNAPSHOTS=1` rewrites them); `explain` must name the right blocker; a missing CRD
//! and an unreachable server give clear errors.

mod agent_common;
mod muster;

use agent_common::{AgentProcess, build_agent, eventually};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use muster::{Gang, bound_count, create_pods, member, muster_cluster, node_of, wait_pods};
use muster_crds::{GpuNode, PodGroup};
use muster_testcluster::NodeSpec;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const NS: &str = "ml";

async fn create<K>(api: Api<K>, v: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).expect("object json");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
}

async fn pod_group(client: &Client, name: &str, min: i32, class: Option<&str>) {
    let mut spec = json!({"minMember": min, "queue": "research"});
    if let Some(c) = class {
        spec["priorityClassName"] = json!(c);
    }
    create::<PodGroup>(
        Api::namespaced(client.clone(), NS),
        json!({"apiVersion": "muster.dev/v1alpha1", "kind": "PodGroup",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

fn gang(prefix: &str, n: u32, gpus: u32, class: Option<&str>) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            member(
                &format!("{prefix}-{i}"),
                Gang::PodGroup(prefix),
                gpus,
                class,
            )
        })
        .collect()
}

/// The plugin's stdout, stderr and exit code.
fn plugin(bin: &Path, kubeconfig: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--no-color", "--mask-times"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running kubectl-muster");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn ok(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let (out, err, code) = plugin(bin, kubeconfig, args);
    assert_eq!(code, 0, "kubectl muster {args:?} failed: {err}\n{out}");
    out
}

/// Compares with `kubectl-muster/tests/snapshots/NAME.txt`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, actual: &str) {
    let path: PathBuf = muster::repo_root()
        .join("kubectl-muster/tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("writing snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_SNAPSHOTS=1", path.display()));
    assert!(
        expected == actual,
        "snapshot {} differs (UPDATE_SNAPSHOTS=1 to accept)\n--- expected\n{expected}--- actual\n{actual}",
        path.display()
    );
}

/// Members of one gang are interchangeable: which one got which GPUs or node follows their
/// random UIDs, so their names are masked (`train-a-?`).
fn mask_members(text: &str) -> String {
    text.replace("train-a-0", "train-a-?")
        .replace("train-a-1", "train-a-?")
        .replace("urgent-0", "urgent-?")
        .replace("urgent-1", "urgent-?")
}

/// `explain` without the "Scheduler (recorded)" section, whose kube-scheduler wording and
/// events depend on timing.
fn analysis_only(text: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for l in text.lines() {
        if l.starts_with("Scheduler (recorded)") {
            skip = true;
        } else if l.starts_with("Analysis") {
            skip = false;
        }
        if !skip {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn blockers(bin: &Path, kubeconfig: &Path, target: &str) -> (Vec<String>, serde_json::Value) {
    let out = ok(
        bin,
        kubeconfig,
        &["-n", NS, "explain", target, "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("explain json");
    let kinds = v["blockers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (kinds, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_muster_views_explain_and_errors() {
    let bin = muster::workspace_binary("kubectl-muster", "kubectl-muster");
    let (agent_bin, fake_nvml) = build_agent();
    let (cluster, ext) = muster_cluster(&[], &[]).await;
    let client = cluster.client();
    let kc = cluster.kubeconfig_path().to_path_buf();
    let spec = NodeSpec {
        count: 3,
        name_prefix: "gpu-".into(),
        gpus: Some(8),
        ..NodeSpec::default()
    };
    let nodes = cluster.add_gpu_nodes(&spec).await.expect("nodes");

    // DGX A100s with fixed readings on GPUs 0-3 (the fake's clock starts with each agent).
    let src = std::fs::read_to_string(muster::repo_root().join("fixtures/machines/dgx-a100.json"))
        .expect("fixture");
    let mut fixture: serde_json::Value = serde_json::from_str(&src).expect("fixture json");
    fixture["script"] = json!(
        (0..4)
            .map(|g| json!({"atSeconds": 0.0, "gpu": g,
        "utilizationPercent": 90 - 10 * g, "memoryUsedMiB": 20480 * (g + 1),
        "temperatureC": 60 + g, "powerWatts": 300 + 10 * g}))
            .collect::<Vec<_>>()
    );
    let fixture_path = cluster.dir().join("dgx-a100-busy.json");
    std::fs::write(&fixture_path, fixture.to_string()).expect("fixture file");
    let agents: Vec<AgentProcess> = nodes
        .iter()
        .map(|n| {
            AgentProcess::start(
                &agent_bin,
                &fake_nvml,
                &kc,
                n,
                fixture_path.to_str().expect("utf-8 path"),
                cluster.dir().join(format!("agent-{n}.log")),
                &["--interval", "500ms"],
            )
            .expect("spawning muster-node-agent")
        })
        .collect();
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    eventually(
        "three GpuNodes with readings",
        || {
            agents
                .iter()
                .map(|a| a.log_text())
                .collect::<Vec<_>>()
                .join("\n")
        },
        || async {
            let l = gpu_nodes.list(&ListParams::default()).await.ok()?;
            (l.items.len() == 3
                && l.items.iter().all(|g| {
                    g.spec.gpus.len() == 8 && g.spec.gpus.iter().all(|x| x.usage.is_some())
                }))
            .then_some(())
        },
    )
    .await;

    create::<Namespace>(Api::all(client.clone()), json!({"metadata": {"name": NS}})).await;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for (name, value, policy) in [
        ("low", 100, "PreemptLowerPriority"),
        ("high", 1000, "PreemptLowerPriority"),
        ("mid-never", 500, "Never"),
    ] {
        create(
            classes.clone(),
            json!({"metadata": {"name": name}, "value": value, "preemptionPolicy": policy}),
        )
        .await;
    }

    // Running: train-a (2 x 4 GPUs, low) and batch-b (an Indexed Job, 2 x 8 GPUs, low).
    // train-a is pinned to gpu-0 so that the views do not depend on the node order.
    pod_group(&client, "train-a", 2, Some("low")).await;
    let mut train = gang("train-a", 2, 4, Some("low"));
    for p in &mut train {
        if let Some(spec) = p.spec.as_mut() {
            spec.node_selector =
                Some([("kubernetes.io/hostname".to_string(), "gpu-0".to_string())].into());
        }
    }
    create_pods(&client, NS, train).await;
    wait_pods(&client, NS, "train-a", "train-a bound", |p| {
        bound_count(p) == 2
    })
    .await;
    create::<Job>(
        Api::namespaced(client.clone(), NS),
        json!({"metadata": {"name": "batch-b"}, "spec": {
            "completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 6,
            "template": {
                "metadata": {"annotations": {"muster.dev/gang": "batch-b", "muster.dev/min-available": "2",
                    // kwok completes Job pods at once unless told to wait.
                    "pod-complete.stage.kwok.x-k8s.io/delay": "3600s"}},
                "spec": {"schedulerName": "muster", "priorityClassName": "low",
                    "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": "registry.example/train:1",
                        "resources": {"limits": {"nvidia.com/gpu": "8"},
                                      "requests": {"cpu": "1", "memory": "1Gi"}}}]}}}}),
    )
    .await;
    wait_pods(&client, NS, "batch-b", "batch-b bound", |p| {
        bound_count(p) == 2
    })
    .await;

    // urgent (2 x 8 GPUs, high) preempts batch-b whole; the Job recreates its pods, which wait.
    pod_group(&client, "urgent", 2, Some("high")).await;
    create_pods(&client, NS, gang("urgent", 2, 8, Some("high"))).await;
    wait_pods(&client, NS, "urgent", "urgent bound", |p| {
        bound_count(p) == 2
    })
    .await;
    wait_pods(&client, NS, "batch-b", "batch-b recreated, pending", |p| {
        p.len() == 2
            && bound_count(p) == 0
            && p.iter().all(|p| p.metadata.deletion_timestamp.is_none())
    })
    .await;

    // Pending: big-c for capacity (may not preempt), wait-d for members (1 of 3).
    pod_group(&client, "big-c", 1, Some("mid-never")).await;
    create_pods(&client, NS, gang("big-c", 1, 8, Some("mid-never"))).await;
    pod_group(&client, "wait-d", 3, None).await;
    create_pods(&client, NS, gang("wait-d", 1, 1, None)).await;
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), NS);
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    eventually(
        "the scheduler's reasons for big-c and wait-d, and batch-b's preemption events",
        || ext.log_tail(),
        || async {
            let msg = |n: &str| {
                let groups = groups.clone();
                let n = n.to_string();
                async move { groups.get(&n).await.ok()?.status?.message }
            };
            let big = msg("big-c").await?;
            let wait = msg("wait-d").await?;
            let preempted = events
                .list(&ListParams::default().fields("reason=Preempted"))
                .await
                .ok()?;
            (big.contains("preemption policy is Never")
                && wait.contains("more member")
                && !preempted.items.is_empty())
            .then_some(())
        },
    )
    .await;
    let placed: Vec<String> = muster::pods_with_prefix(&client, NS, "")
        .await
        .iter()
        .map(|p| format!("{:?} -> {:?}", p.metadata.name, node_of(p)))
        .collect();
    eprintln!("scene: {placed:#?}");

    // The views.
    let view = |args: &[&str]| mask_members(&ok(&bin, &kc, args));
    snapshot("e2e_top_nodes", &view(&["top", "nodes", "-o", "wide"]));
    snapshot("e2e_top_gpus", &view(&["top", "gpus"]));
    snapshot(
        "e2e_top_gpus_node",
        &view(&["top", "gpus", "--node", "gpu-0", "-o", "wide"]),
    );
    snapshot("e2e_top_jobs", &view(&["top", "jobs", "-A", "-o", "wide"]));
    snapshot("e2e_topo", &view(&["topo", "gpu-0"]));
    let jobs_json: serde_json::Value =
        serde_json::from_str(&ok(&bin, &kc, &["top", "jobs", "-n", NS, "-o", "json"]))
            .expect("json");
    let phase = |name: &str| {
        jobs_json["items"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .and_then(|i| i["phase"].as_str())
            .map(str::to_string)
    };
    assert_eq!(phase("train-a").as_deref(), Some("Running"));
    assert_eq!(phase("urgent").as_deref(), Some("Running"));
    assert_eq!(phase("batch-b").as_deref(), Some("Preempted"));
    assert_eq!(phase("big-c").as_deref(), Some("Pending"));
    assert_eq!(phase("wait-d").as_deref(), Some("Pending"));
    let yaml = ok(&bin, &kc, &["top", "nodes", "-o", "yaml"]);
    assert!(yaml.contains("kind: NodeList"), "{yaml}");

    // explain names the right blocker.
    for (target, snap) in [
        ("podgroup/big-c", "e2e_explain_big_c"),
        ("batch-b", "e2e_explain_batch_b"),
        ("pod/wait-d-0", "e2e_explain_wait_d"),
        ("pg/train-a", "e2e_explain_train_a"),
    ] {
        let text = ok(&bin, &kc, &["-n", NS, "explain", target]);
        assert!(text.contains("Scheduler (recorded)"), "{text}");
        snapshot(snap, &mask_members(&analysis_only(&text)));
    }
    let big_c = ok(&bin, &kc, &["-n", NS, "explain", "big-c"]);
    assert!(
        big_c.contains("preemption policy is Never"),
        "the recorded reason: {big_c}"
    );
    let (kinds, v) = blockers(&bin, &kc, "podgroup/big-c");
    assert_eq!(kinds, ["capacity"], "{v:#}");
    assert!(
        v["unblock"]
            .to_string()
            .contains("would fit after preempting ml/train-a"),
        "{v:#}"
    );
    let (kinds, v) = blockers(&bin, &kc, "podgroup/batch-b");
    assert!(kinds.contains(&"priority".to_string()), "{v:#}");
    assert!(
        v["blockers"]
            .to_string()
            .contains("ml/urgent (priority 1000)"),
        "{v:#}"
    );
    assert_eq!(v["gang"]["phase"], "Preempted");
    let (kinds, v) = blockers(&bin, &kc, "pod/wait-d-0");
    assert_eq!(kinds, ["members"], "{v:#}");
    assert!(
        v["unblock"].to_string().contains("needs 2 more members"),
        "{v:#}"
    );
    let (kinds, _) = blockers(&bin, &kc, "train-a");
    assert!(kinds.is_empty());

    // Errors: an unknown pod, an unreachable server, missing CRDs.
    let (_, err, code) = plugin(&bin, &kc, &["-n", NS, "explain", "pod/ghost"]);
    assert_eq!((code, err.trim()), (1, "error: pod ml/ghost not found"));
    let dead = cluster.dir().join("dead.kubeconfig");
    std::fs::write(&dead, dead_kubeconfig()).expect("kubeconfig");
    let (out, err, code) = plugin(&bin, &dead, &["top", "nodes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{err}"
    );

    drop(agents);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["gpunodes.muster.dev", "podgroups.muster.dev"] {
        crds.delete(name, &DeleteParams::default())
            .await
            .expect("delete CRD");
    }
    eventually("the CRDs gone", String::new, || async {
        match gpu_nodes.list(&ListParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    let (out, err, code) = plugin(&bin, &kc, &["top", "nodes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the muster.dev CRDs are not installed (GpuNode and PodGroup not found): install the chart"),
        "{err}"
    );
    assert!(
        out.contains("gpu-0") && out.contains("Allocated/Total GPUs:"),
        "{out}"
    );
}

fn dead_kubeconfig() -> String {
    r#"apiVersion: v1
kind: Config
clusters:
- name: dead
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: t
contexts:
- name: dead
  context: {cluster: dead, user: u}
current-context: dead
"#
    .to_string()
}
