//! The dashboard and the alerts against a real Prometheus (issue 19): Prometheus, built from
//! the module promtool comes from, scrapes the extender, the node agents and the device
//! plugins (fake NVML, fake kubelets) of a real control plane running a gang, and loads the
//! chart's PrometheusRule. Every dashboard query (template variables substituted) must return
//! series, every rule must evaluate without error, and an XID 79 on one GPU must fire the XID
//! alert and change the unhealthy-GPU panel.

#[path = "../../e2e/tests/agent_common/mod.rs"]
mod agent_common;
mod common;
#[path = "../../e2e/tests/muster/mod.rs"]
mod muster;
mod prom;
// Its restart helper (`stop`) is not needed here.
#[allow(dead_code)]
#[path = "../../../node-agent/tests/common/kubelet.rs"]
mod pod_resources;

use common::monitoring::{all_rules, dashboard, dashboard_exprs, rule_groups};
use k8s_openapi::api::core::v1::Pod;
use muster::queues::{muster_queue, planned_with};
use muster::{Gang, create_pods, gang, node_of, wait_pods};
use muster_api::machines::builtin;
use muster_api::names::{ANNOTATION_GPU_IDS, LABEL_QUEUE};
use muster_testcluster::NodeSpec;
use prom::node::{Binaries, NodeStack};
use prom::{Job, Prometheus, sample_value};
use serde_json::{Value, json};
use std::time::Instant;

const FIXTURE: &str = "dgx1-v100";
const NS: &str = "ml";
/// What `$__rate_interval` becomes: Grafana's value for a 15 s scrape interval (4 x 15 s).
const RATE_INTERVAL: &str = "1m";
const XID_GPU: usize = 5;
/// A rule that loads but cannot evaluate (two GPUs per node: many-to-many matching), added to
/// the chart's so the rules check is seen to catch a rule Prometheus reports unhealthy.
const CANARY_RULE: &str = "muster_test:broken_on_purpose";
const CANARY_GROUP: &str = r#"
name: muster-test-canary
rules:
  - record: muster_test:broken_on_purpose
    expr: DCGM_FI_DEV_GPU_UTIL * on (Hostname) DCGM_FI_DEV_FB_USED
"#;

fn in_queue(pods: Vec<Pod>, queue: &str) -> Vec<Pod> {
    pods.into_iter()
        .map(|mut p| {
            let labels = p.metadata.labels.get_or_insert_with(Default::default);
            labels.insert(LABEL_QUEUE.into(), queue.into());
            p
        })
        .collect()
}

/// Quotes regex metacharacters (node names and namespaces are matched with `=~`).
fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let meta = "\\.+*?()|[]{}^$".contains(c);
            meta.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// Each template variable's values, as Grafana asks Prometheus for them, and the dashboard's
/// queries with the variables replaced by the regex Grafana renders for "every value
/// selected", `(a|b)`. A variable without values is reported in the error list.
async fn substituted_queries(
    prom: &Prometheus,
    d: &Value,
    errors: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut vars = vec![("$__rate_interval".to_string(), RATE_INTERVAL.to_string())];
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().expect("variable name");
        let q = v["query"].as_str().expect("variable query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(metric, label): {q}"));
        let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
        let values = prom
            .label_values(label.trim(), metric.trim())
            .await
            .unwrap_or_else(|e| panic!("variable {name}: {e}"));
        if values.is_empty() {
            errors.push(format!("variable ${name}: {q} has no values"));
        }
        let alternatives: Vec<String> = values.iter().map(|v| regex_quote(v)).collect();
        vars.push((format!("${name}"), format!("({})", alternatives.join("|"))));
    }
    dashboard_exprs(d)
        .into_iter()
        .map(|(title, expr)| {
            let expr = vars.iter().fold(expr, |e, (k, v)| e.replace(k, v));
            assert!(
                !expr.contains('$'),
                "{title}: unsubstituted variable in {expr}"
            );
            (title, expr)
        })
        .collect()
}

/// Every dashboard query and template variable that returns nothing: `(panel, query)`.
async fn empty_panels(prom: &Prometheus, d: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for (title, expr) in substituted_queries(prom, d, &mut errors).await {
        match prom.query(&expr).await {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => errors.push(format!("{title}: {expr} returns no series")),
            Err(e) => errors.push(format!("{title}: {e}")),
        }
    }
    errors
}

/// Rules of the chart Prometheus did not load, has not evaluated yet, or reports unhealthy.
async fn broken_rules(prom: &Prometheus) -> Vec<String> {
    let rules = match prom.api("rules").await {
        Ok(rules) => rules,
        Err(e) => return vec![e],
    };
    let loaded: Vec<Value> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let mut broken: Vec<String> = all_rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().or(r["record"].as_str()))
        .filter(|name| !loaded.iter().any(|r| r["name"] == *name))
        .map(|name| format!("rule {name}: not loaded"))
        .collect();
    broken.extend(
        loaded
            .iter()
            .filter(|r| {
                r["health"] != "ok"
                    || r["lastError"].as_str().is_some_and(|e| !e.is_empty())
                    || r["lastEvaluation"]
                        .as_str()
                        .is_none_or(|t| t.starts_with("0001"))
            })
            .map(|r| {
                format!(
                    "rule {}: health {}, last error {}, last evaluated {}",
                    r["name"], r["health"], r["lastError"], r["lastEvaluation"]
                )
            }),
    );
    broken
}

/// The one value of the "Unhealthy GPUs" panel.
async fn unhealthy_gpus(prom: &Prometheus, d: &Value) -> Option<f64> {
    let (_, expr) = dashboard_exprs(d)
        .into_iter()
        .find(|(title, _)| title == "Unhealthy GPUs")
        .expect("the dashboard has an Unhealthy GPUs panel");
    let series = prom.query(&expr).await.ok()?;
    (series.len() == 1).then(|| sample_value(&series[0]))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_serves_every_panel_and_rule_and_fires_on_xid_79() {
    let started = Instant::now();
    let (agent_bin, fake_nvml) = agent_common::build_agent();
    let plugin_bin = muster::workspace_binary("muster-device-plugin", "muster-device-plugin");
    let spec = NodeSpec::fixture(FIXTURE, 2);
    let names = spec.names();
    let (cluster, ext) = muster::muster_cluster(&[spec], &[]).await;
    let client = cluster.client();
    muster::namespace(&client, NS).await;

    // prod runs a gang of two 2-GPU pods; research waits with a gang of three whole nodes on a
    // two-node cluster, below its guarantee (the "queues below guarantee" table).
    muster_queue(
        &client,
        "prod",
        json!({"gpu": {"guaranteed": 8, "limit": 16}}),
    )
    .await;
    muster_queue(&client, "research", json!({"gpu": {"guaranteed": 8}})).await;
    planned_with(&ext, &["prod", "research"]).await;
    let train = gang("train", 2, 2, Gang::Annotation("train", "2"), None);
    create_pods(&client, NS, in_queue(train, "prod")).await;
    let big = gang("big", 3, 8, Gang::Annotation("big", "3"), None);
    create_pods(&client, NS, in_queue(big, "research")).await;
    let train = wait_pods(&client, NS, "train", "prod's gang bound", |p| {
        p.len() == 2 && p.iter().all(|p| node_of(p).is_some())
    })
    .await;

    // Each node: device plugin, the kubelet admitting the gang's containers through it, the
    // pod-resources API reporting what it admitted, and the node agent reading that.
    let tmp = tempfile::Builder::new()
        .prefix("prom-e2e")
        .tempdir()
        .expect("tempdir");
    let bins = Binaries {
        agent: &agent_bin,
        plugin: &plugin_bin,
        fake_nvml: &fake_nvml,
        kubeconfig: cluster.kubeconfig_path(),
    };
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut node =
            NodeStack::start(&bins, &tmp.path().join(format!("n{i}")), name, FIXTURE).await;
        let mut free: Vec<String> = builtin(FIXTURE)
            .expect("fixture")
            .for_node(name)
            .gpus
            .iter()
            .map(|g| g.uuid.clone())
            .collect();
        let mut held = Vec::new();
        for _ in train
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(name.as_str()))
        {
            let gpus = node.admit(&free, 2).await;
            // The plugin picks the pod whose scheduler choice fits; the kubelet knows the pod.
            let pod = train
                .iter()
                .find(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ANNOTATION_GPU_IDS))
                        == Some(&gpus.join(","))
                })
                .unwrap_or_else(|| panic!("no pod was planned on {gpus:?}"));
            let pod_name = pod.metadata.name.as_deref().expect("pod name");
            held.push(pod_resources::gpu_pod(NS, pod_name, "main", &gpus));
            free.retain(|g| !gpus.contains(g));
        }
        node.set_pods(held);
        node.start_agent(&bins, FIXTURE, 1);
        nodes.push(node);
    }

    let rules = tmp.path().join("rules.yaml");
    let mut groups = rule_groups();
    groups["groups"]
        .as_sequence_mut()
        .expect("rule groups")
        .push(serde_yaml::from_str(CANARY_GROUP).expect("canary rule group"));
    let text = serde_yaml::to_string(&groups).expect("rules serialize");
    std::fs::write(&rules, text).expect("writing rules.yaml");
    let targets = |port: fn(&NodeStack) -> u16| -> Vec<String> {
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", port(n)))
            .collect()
    };
    let jobs = [
        Job {
            name: "scheduler",
            job_label: "scheduler",
            endpoint: "http-metrics",
            honor_labels: false,
            targets: vec![format!("127.0.0.1:{}", ext.metrics_port)],
        },
        Job {
            name: "node-agent",
            job_label: "node",
            endpoint: "metrics",
            honor_labels: true,
            targets: targets(|n| n.agent_port),
        },
        Job {
            name: "node-device-plugin",
            job_label: "node",
            endpoint: "plugin-metrics",
            honor_labels: false,
            targets: targets(|n| n.plugin_port),
        },
    ];
    let prom = Prometheus::start(tmp.path(), &jobs, &rules).await;
    let prom = &prom;
    prom.wait("every target up", || async {
        let data = prom.api("targets").await.ok()?;
        let active = data["activeTargets"].as_array()?.clone();
        (active.len() == 5 && active.iter().all(|t| t["health"] == "up")).then_some(())
    })
    .await;

    // Before the XID: every GPU reports, the gang's GPUs are attributed, none is unhealthy.
    let d = dashboard();
    let d = &d;
    prom.wait("16 GPUs healthy, 4 held by the gang's pods", || async {
        let healthy = prom.query("muster_gpu_healthy == 1").await.ok()?.len();
        let held = prom
            .query(r#"muster_gpu_allocated{pod!=""} == 1"#)
            .await
            .ok()?
            .len();
        (healthy == 16 && held == 4).then_some(())
    })
    .await;
    let before = unhealthy_gpus(prom, d).await;
    assert_eq!(before, Some(0.0), "the Unhealthy GPUs panel before any XID");

    // XID 79 on one GPU of the second node, delivered by the fake NVML a few seconds after the
    // restarted agent's NVML init. The agent keeps its port, so it is the same scrape target.
    let xid_node = &names[1];
    let xid_gpu = XID_GPU.to_string();
    let mut fixture =
        serde_json::to_value(builtin(FIXTURE).expect("fixture")).expect("fixture json");
    fixture["script"] = json!([{"atSeconds": 3.0, "gpu": XID_GPU, "xid": 79}]);
    let fixture_path = tmp.path().join("xid79.json");
    std::fs::write(&fixture_path, fixture.to_string()).expect("writing the XID fixture");
    nodes[1].start_agent(&bins, fixture_path.to_str().expect("UTF-8 path"), 2);
    let alert = |name: &'static str, states: &'static [&'static str]| {
        let (node, gpu) = (xid_node.as_str(), xid_gpu.as_str());
        async move {
            let alerts = prom.api("alerts").await.ok()?;
            alerts["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == name
                        && states.iter().any(|s| a["state"] == *s)
                        && a["labels"]["Hostname"] == node
                        && a["labels"]["gpu"] == gpu
                })
                .then_some(())
        }
    };
    prom.wait("MusterGpuXidError firing for the GPU", || {
        alert("MusterGpuXidError", &["firing"])
    })
    .await;
    prom.wait("the Unhealthy GPUs panel showing the GPU", || async {
        (unhealthy_gpus(prom, d).await == Some(1.0)).then_some(())
    })
    .await;
    // MusterGpuUnhealthy waits 5 minutes before firing (longer than this test usually takes);
    // it is at least pending.
    prom.wait("MusterGpuUnhealthy pending for the GPU", || {
        alert("MusterGpuUnhealthy", &["pending", "firing"])
    })
    .await;

    // Every panel query returns series and every rule evaluates. The rates need a couple of
    // scrapes: poll, then report every panel still empty and every broken rule at the deadline.
    let deadline = Instant::now() + prom::DEADLINE;
    let failures = loop {
        let mut failures = empty_panels(prom, d).await;
        let broken = broken_rules(prom).await;
        if !broken.iter().any(|b| b.contains(CANARY_RULE)) {
            failures.push(format!("rule {CANARY_RULE} was not reported broken"));
        }
        failures.extend(broken.into_iter().filter(|b| !b.contains(CANARY_RULE)));
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert!(
        failures.is_empty(),
        "{} dashboard queries or rules fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("prometheus e2e took {:?}", started.elapsed());
}
