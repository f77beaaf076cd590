//! Test support: a hand-built scene and snapshot files (`tests/snapshots/*.txt`, rewritten
//! with `UPDATE_SNAPSHOTS=1`).

use crate::scene::Scene;
use muster_api::machines;
use muster_crds::{GpuNode, GpuNodeGpu, GpuNodeSpec, GpuUsage};
use serde_json::{Value, json};
use std::path::PathBuf;

pub const NOW: i64 = 1_800_000_000;

fn ts(secs_ago: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(NOW - secs_ago)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn node(name: &str, fixture_label: bool) -> Value {
    let mut labels = json!({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"});
    if fixture_label {
        labels["muster.dev/topology-fixture"] = json!("dgx-a100");
    }
    json!({
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    })
}

/// `a100-0`: a node agent's `GpuNode` with readings, GPU 7 lost to an XID 79.
fn gpu_node(name: &str) -> GpuNode {
    let m = machines::builtin("dgx-a100")
        .expect("built-in fixture")
        .for_node(name);
    let gpus = m
        .gpus
        .iter()
        .map(|g| GpuNodeGpu {
            index: g.index as i32,
            uuid: g.uuid.clone(),
            model: m.model.clone(),
            memory_mib: m.memory_mib as i64,
            pci_bus_id: g.pci_bus_id.clone(),
            numa_node: Some(g.numa_node as i32),
            healthy: g.index != 7,
            unhealthy_reason: (g.index == 7).then(|| "XID 79".to_string()),
            mig_enabled: false,
            mig_devices: Vec::new(),
            usage: Some(GpuUsage {
                utilization_percent: Some(if g.index < 4 { 91 } else { 0 }),
                memory_used_mib: Some(if g.index < 4 { 61_440 } else { 0 }),
                temperature_c: Some(if g.index < 4 { 67 } else { 31 }),
                power_watts: Some(if g.index < 4 { 355.0 } else { 61.0 }),
            }),
        })
        .collect();
    GpuNode::new(
        name,
        GpuNodeSpec {
            node_name: name.into(),
            driver_version: m.driver_version.clone(),
            cuda_version: None,
            model: m.model.clone(),
            gpu_count: 8,
            healthy_count: 7,
            clique: None,
            gpus,
            topology: m.topology.to_rows(),
            last_seen: ts(10),
        },
    )
}

fn uuids(node: &str, idx: &[u32]) -> String {
    idx.iter()
        .map(|i| machines::node_gpu_uuid(node, "dgx-a100", *i))
        .collect::<Vec<_>>()
        .join(",")
}

struct P<'a> {
    ns: &'a str,
    name: &'a str,
    labels: Value,
    annotations: Value,
    gpus: u32,
    priority: i32,
    node: Option<(&'a str, &'a [u32])>,
    age: i64,
}

fn pod(p: P<'_>) -> Value {
    let mut annotations = p.annotations;
    let mut spec = json!({
        "schedulerName": "muster",
        "priority": p.priority,
        "containers": [{"name": "main", "image": "train:1", "resources": {
            "limits": {"nvidia.com/gpu": p.gpus.to_string()},
            "requests": {"cpu": "1", "memory": "1Gi"}}}]
    });
    let mut status = json!({"phase": "Pending"});
    if let Some((node, gpus)) = p.node {
        spec["nodeName"] = json!(node);
        annotations["muster.dev/gpu-ids"] = json!(uuids(node, gpus));
        annotations["muster.dev/gpu-node"] = json!(node);
        status = json!({"phase": "Running"});
    }
    json!({
        "metadata": {"name": p.name, "namespace": p.ns, "uid": format!("uid-{}-{}", p.ns, p.name),
            "creationTimestamp": ts(p.age), "labels": p.labels, "annotations": annotations},
        "spec": spec,
        "status": status
    })
}

fn pg(ns: &str, name: &str, min: i32, class: &str, age: i64) -> Value {
    json!({
        "apiVersion": "muster.dev/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts(age)},
        "spec": {"minMember": min, "priorityClassName": class, "queue": "research"}
    })
}

/// `obj` controlled by `kind/name` (what an operator sets on the PodGroup it makes).
fn owned(mut obj: Value, api_version: &str, kind: &str, name: &str) -> Value {
    obj["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind,
        "name": name, "uid": format!("uid-{name}"), "controller": true}]);
    obj
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object")
}

/// Two DGX A100 nodes (one with an agent, one by fixture label) and five gangs: train-a and
/// urgent running, big-c pending for capacity, batch-b preempted by urgent, wait-d short of
/// members under a used-up GPU quota.
pub fn scene() -> Scene {
    let group = |g: &str| json!({"muster.dev/pod-group": g});
    let gang = |g: &str, min: &str| json!({"muster.dev/gang": g, "muster.dev/min-available": min});
    let pods = vec![
        P {
            ns: "ml",
            name: "train-a-0",
            labels: group("train-a"),
            annotations: json!({}),
            gpus: 4,
            priority: 100,
            node: Some(("a100-0", &[0, 1, 2, 3])),
            age: 3600,
        },
        P {
            ns: "ml",
            name: "train-a-1",
            labels: group("train-a"),
            annotations: json!({}),
            gpus: 4,
            priority: 100,
            node: Some(("a100-1", &[0, 1, 2, 3])),
            age: 3600,
        },
        P {
            ns: "ml",
            name: "urgent-0",
            labels: json!({}),
            annotations: gang("urgent", "1"),
            gpus: 4,
            priority: 1000,
            node: Some(("a100-1", &[4, 5, 6, 7])),
            age: 600,
        },
        P {
            ns: "ml",
            name: "batch-b-0",
            labels: json!({}),
            annotations: gang("batch-b", "2"),
            gpus: 4,
            priority: 100,
            node: None,
            age: 500,
        },
        P {
            ns: "ml",
            name: "batch-b-1",
            labels: json!({}),
            annotations: gang("batch-b", "2"),
            gpus: 4,
            priority: 100,
            node: None,
            age: 500,
        },
        P {
            ns: "ml",
            name: "big-c-0",
            labels: group("big-c"),
            annotations: json!({}),
            gpus: 4,
            priority: 100,
            node: None,
            age: 300,
        },
        P {
            ns: "team-q",
            name: "wait-d-0",
            labels: group("wait-d"),
            annotations: json!({}),
            gpus: 1,
            priority: 0,
            node: None,
            age: 120,
        },
    ];
    let preempted = json!({
        "metadata": {"name": "batch-b-0.1", "namespace": "ml"},
        "involvedObject": {"kind": "Pod", "namespace": "ml", "name": "batch-b-0-old"},
        "reason": "Preempted",
        "message": "gang ml/batch-b preempted whole by higher-priority gang ml/urgent",
        "lastTimestamp": ts(590)
    });
    let quota = json!({
        "metadata": {"name": "gpus", "namespace": "team-q"},
        "status": {"hard": {"requests.nvidia.com/gpu": "1"}, "used": {"requests.nvidia.com/gpu": "1"}}
    });
    let class = |n: &str, v: i32| parse(json!({"metadata": {"name": n}, "value": v}));
    Scene {
        nodes: vec![parse(node("a100-0", false)), parse(node("a100-1", true))],
        pods: pods.into_iter().map(|p| parse(pod(p))).collect(),
        gpu_nodes: vec![gpu_node("a100-0")],
        pod_groups: vec![
            parse(owned(
                pg("ml", "train-a", 2, "low", 3600),
                "kubeflow.org/v1",
                "PyTorchJob",
                "train-a",
            )),
            parse(pg("ml", "big-c", 1, "low", 300)),
            parse(pg("team-q", "wait-d", 3, "none", 120)),
        ],
        priority_classes: vec![class("low", 100), class("high", 1000), class("none", 0)],
        quotas: vec![parse(quota)],
        events: vec![parse(preempted)],
        now: NOW,
        ..Scene::default()
    }
}

/// A Muster Queue object.
fn queue(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "muster.dev/v1alpha1", "kind": "Queue", "metadata": {"name": name},
        "spec": spec})
}

/// A pending one-pod gang (annotation `muster.dev/gang`) in `ns`, queue by pod label.
pub fn pending_gang(
    ns: &str,
    name: &str,
    gpus: u32,
    queue: &str,
) -> k8s_openapi::api::core::v1::Pod {
    parse(pod(P {
        ns,
        name: &format!("{name}-0"),
        labels: json!({"muster.dev/queue": queue}),
        annotations: json!({"muster.dev/gang": name, "muster.dev/min-available": "1"}),
        gpus,
        priority: 100,
        node: None,
        age: 60,
    }))
}

/// [`scene`] with queues: `research` (limit 12) over `vision` (guaranteed 8: train-a) and
/// `nlp` (guaranteed 4, limit 8: big-c, wait-d), `team-b` (no guarantee, no limit: urgent by
/// namespace annotation, borrowing nlp's idle guarantee; batch-b by pod label), a closed
/// Volcano queue `volc`, a Muster queue `broken` with its guarantee above its limit, and the
/// implicit `default`.
pub fn queued_scene() -> Scene {
    let mut s = scene();
    for g in &mut s.pod_groups {
        let q = match g.metadata.name.as_deref() {
            Some("train-a") => "vision",
            _ => "nlp",
        };
        g.spec.queue = Some(q.into());
    }
    for p in &mut s.pods {
        if p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("batch-b"))
        {
            p.metadata
                .labels
                .get_or_insert_default()
                .insert("muster.dev/queue".into(), "team-b".into());
        }
    }
    s.namespaces = vec![
        parse(json!({"metadata": {"name": "ml", "annotations": {"muster.dev/queue": "team-b"}}})),
        parse(json!({"metadata": {"name": "team-q"}})),
    ];
    s.queues = vec![
        parse(queue("research", json!({"gpu": {"limit": "12"}}))),
        parse(queue(
            "vision",
            json!({"parent": "research", "gpu": {"guaranteed": "8"}}),
        )),
        parse(queue(
            "nlp",
            json!({"parent": "research", "gpu": {"guaranteed": "4", "limit": "8"}}),
        )),
        parse(queue("team-b", json!({"gpu": {"guaranteed": "0"}}))),
        parse(queue(
            "broken",
            json!({"gpu": {"guaranteed": "4", "limit": "2"}}),
        )),
    ];
    s.volcano_queues = vec![parse(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
        "metadata": {"name": "volc"},
        "spec": {"weight": 1, "capability": {"nvidia.com/gpu": "4"}},
        "status": {"state": "Closed"}
    }))];
    s
}

/// Compares `actual` with `tests/snapshots/NAME.txt`; `UPDATE_SNAPSHOTS=1` rewrites it.
pub fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("writing snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "snapshot {} differs (UPDATE_SNAPSHOTS=1 to accept)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}
