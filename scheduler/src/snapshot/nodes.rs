//! Nodes as the core sees them: allocatable, labels, taints, readiness, and each GPU's identity
//! and links (the agent's `GpuNode`, else the node's fixture label).

use crate::cache::Cache;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use muster_api::machines;
use muster_api::names::{self, gfd};
use muster_core::{GpuInfo, NodeInfo, Resources, Taint, TaintEffect};

/// `node_info`, memoised on the Node's fingerprint and its GpuNode's resourceVersion: rounds
/// run often, nodes rarely change in ways placement sees (heartbeats rewrite them all the
/// time), and turning a fixture into per-node GPU identities is not free.
pub(crate) fn cached_node_info(cache: &Cache, node: &Node) -> Option<NodeInfo> {
    let name = node.metadata.name.as_deref()?;
    let version = |rv: Option<&String>| rv.cloned().unwrap_or_default();
    let key = (
        crate::cache::node_fingerprint(node),
        cache
            .gpu_nodes
            .get(&ObjectRef::new(name))
            .map(|g| version(g.metadata.resource_version.as_ref()))
            .unwrap_or_else(|| {
                if cache.gpu_nodes_listed() {
                    String::new()
                } else {
                    "unlisted".into()
                }
            }),
    );
    let mut memo = cache.node_infos.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, info)) = memo.get(name)
        && *k == key
    {
        return info.clone();
    }
    let info = node_info(cache, node);
    memo.insert(name.to_string(), (key, info.clone()));
    info
}

pub(super) fn node_info(cache: &Cache, node: &Node) -> Option<NodeInfo> {
    let name = node.metadata.name.clone()?;
    let status = node.status.as_ref();
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    let get = |k: &str, scale: f64| {
        alloc
            .and_then(|a| a.get(k))
            .and_then(|q| crate::resources::parse_quantity(&q.0, scale))
            .unwrap_or(0)
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let labels: Vec<(String, String)> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let label = |k: &str| {
        labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.clone())
    };
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    Some(Taint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect: effect(&t.effect)?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut gpu_count = u32::try_from(get(names::GPU_RESOURCE, 1.0)).unwrap_or(0);
    let (gpus, topology) = gpus_of(
        cache,
        &name,
        label(names::LABEL_TOPOLOGY_FIXTURE).as_deref(),
    );
    // Until GpuNodes are listed, a node known by neither a GpuNode nor a fixture may have an
    // agent whose GPU identities are not read yet: planning on it now would bind pods without
    // GPU UUIDs. It takes no GPU pods until the list arrives.
    if gpus.is_empty() && !cache.gpu_nodes_listed() {
        gpu_count = 0;
    }
    Some(NodeInfo {
        allocatable: Resources {
            cpu_millis: get("cpu", 1000.0),
            memory_bytes: get("memory", 1.0),
            pods: u32::try_from(get("pods", 1.0)).unwrap_or(110),
            gpus: gpu_count,
        },
        domain: label(gfd::CLIQUE).or_else(|| label(names::LABEL_RACK)),
        schedulable: ready && !cordoned,
        name,
        labels,
        taints,
        gpus,
        topology,
    })
}

/// GPUs and links: the agent's `GpuNode` if published, else the node's fixture label, else
/// nothing (the core then assumes anonymous GPUs with unknown links).
pub(super) fn gpus_of(
    cache: &Cache,
    node: &str,
    fixture: Option<&str>,
) -> (Vec<GpuInfo>, Option<muster_api::LinkMatrix>) {
    if let Some(gn) = cache.gpu_nodes.get(&ObjectRef::new(node)) {
        let gpus: Vec<GpuInfo> = gn
            .spec
            .gpus
            .iter()
            .map(|g| GpuInfo {
                id: g.uuid.clone(),
                model: g.model.clone(),
                memory_mib: g.memory_mib.max(0) as u64,
                healthy: g.healthy,
            })
            .collect();
        match gn.spec.link_matrix() {
            Ok(m) => return (gpus, Some(m)),
            Err(e) => {
                tracing::warn!(node, error = %e, "GpuNode topology unusable; assuming unknown links");
                return (gpus, None);
            }
        }
    }
    if let Some(spec) = fixture.and_then(|f| machines::builtin(f).ok()) {
        let fixture_node = NodeInfo::from_machine(node, spec);
        return (fixture_node.gpus, fixture_node.topology);
    }
    (Vec::new(), None)
}

pub(super) fn effect(e: &str) -> Option<TaintEffect> {
    match e {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::cache::{Cache, CacheObjects};
    use crate::snapshot;

    fn gpu_node(name: &str, labels: serde_json::Value) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
            "status": {
                "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap()
    }

    /// Before GpuNodes are listed, a node known by no GpuNode and no fixture takes no GPU
    /// pods (its UUIDs are not known); a fixture node does; once listed, both do.
    #[test]
    fn anonymous_gpus_are_not_planned_before_gpu_nodes_are_listed() {
        let objects = || CacheObjects {
            nodes: vec![
                gpu_node("anon", serde_json::json!({})),
                gpu_node(
                    "fixture",
                    serde_json::json!({muster_api::names::LABEL_TOPOLOGY_FIXTURE: "dgx-a100"}),
                ),
            ],
            ..Default::default()
        };
        let gpus = |cache: &Cache, node: &str| {
            let snap = snapshot::build(cache, &Default::default(), 0);
            snap.cluster.node(node).map(|n| n.allocatable.gpus)
        };
        let starting = Cache::from_objects(objects()).with_gpu_nodes_unlisted();
        assert_eq!(gpus(&starting, "anon"), Some(0));
        assert_eq!(gpus(&starting, "fixture"), Some(8));
        let listed = Cache::from_objects(objects());
        assert_eq!(gpus(&listed, "anon"), Some(8));
    }
}
