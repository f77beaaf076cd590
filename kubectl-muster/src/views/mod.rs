//! The views. Each takes a [`Scene`] (plus the scheduler's analysis of it) and returns a
//! [`Rendered`]: pure functions, unit-tested on hand-built objects.

pub mod explain;
mod explain_queue;
pub mod explain_text;
mod explain_verdict;
pub mod gpus;
pub mod jobs;
pub mod nodes;
pub mod queues;
pub mod topo;
mod whatif;

use crate::scene::{Analysis, Scene};
use muster_api::names::{self, gfd};
use muster_crds::GpuUsage;
use std::collections::HashMap;

/// One GPU as the views know it: from the node's `GpuNode`, else from its fixture label.
#[derive(Clone, Debug)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mib: i64,
    pub healthy: bool,
    pub reason: Option<String>,
    pub pci_bus_id: Option<String>,
    pub numa_node: Option<i32>,
    pub usage: Option<GpuUsage>,
}

/// GPUs of `node`, in index order.
pub fn gpus_of(scene: &Scene, analysis: &Analysis, node: &str) -> Vec<Gpu> {
    if let Some(gn) = scene.gpu_node(node) {
        let mut gpus: Vec<Gpu> = gn
            .spec
            .gpus
            .iter()
            .map(|g| Gpu {
                index: u32::try_from(g.index).unwrap_or(0),
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mib: g.memory_mib,
                healthy: g.healthy,
                reason: g.unhealthy_reason.clone(),
                pci_bus_id: Some(g.pci_bus_id.clone()),
                numa_node: g.numa_node,
                usage: g.usage.clone(),
            })
            .collect();
        gpus.sort_by_key(|g| g.index);
        return gpus;
    }
    let Some(info) = analysis.snapshot.cluster.node(node) else {
        return Vec::new();
    };
    info.gpus
        .iter()
        .enumerate()
        .map(|(i, g)| Gpu {
            index: i as u32,
            uuid: g.id.clone(),
            model: g.model.clone(),
            memory_mib: i64::try_from(g.memory_mib).unwrap_or(i64::MAX),
            healthy: g.healthy,
            reason: None,
            pci_bus_id: None,
            numa_node: None,
            usage: None,
        })
        .collect()
}

/// Pod (`namespace/name`) holding each GPU, by (node, index): the scheduler's own accounting
/// (its `muster.dev/gpu-ids` annotations; lowest free GPUs for pods placed without one).
pub fn owners(analysis: &Analysis) -> HashMap<(String, u32), String> {
    let snap = &analysis.snapshot;
    let mut out = HashMap::new();
    for p in snap.cluster.pods() {
        let name = snap.pods.get(p.id.as_str()).map_or_else(
            || p.id.to_string(),
            |i| format!("{}/{}", i.namespace, i.name),
        );
        for g in &p.gpus {
            out.insert((p.node.clone(), *g), name.clone());
        }
    }
    out
}

/// Node names that have GPUs (a `GpuNode`, GPU capacity, or a fixture), sorted.
pub fn gpu_node_names(scene: &Scene, analysis: &Analysis) -> Vec<String> {
    let mut names: Vec<String> = scene
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .filter(|n| {
            scene.gpu_node(n).is_some()
                || analysis
                    .snapshot
                    .cluster
                    .node(n)
                    .is_some_and(|i| !i.gpus.is_empty() || i.allocatable.gpus > 0)
        })
        .collect();
    names.sort();
    names
}

/// The node's GPU model: its `GpuNode`, else the GFD product label.
pub fn model_of(scene: &Scene, node: &str) -> String {
    if let Some(gn) = scene.gpu_node(node)
        && !gn.spec.model.is_empty()
    {
        return gn.spec.model.clone();
    }
    label(scene, node, gfd::PRODUCT).unwrap_or_else(|| "-".into())
}

/// NVLink domain: the `GpuNode` clique, the GFD clique label, else the rack label.
pub fn domain_of(scene: &Scene, node: &str) -> Option<String> {
    scene
        .gpu_node(node)
        .and_then(|g| g.spec.clique.clone())
        .or_else(|| label(scene, node, gfd::CLIQUE))
        .or_else(|| label(scene, node, names::LABEL_RACK))
}

fn label(scene: &Scene, node: &str, key: &str) -> Option<String> {
    scene
        .node(node)
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(key))
        .cloned()
}

/// `Ready`, `NotReady`, `SchedulingDisabled` (cordoned) or both, like `kubectl get nodes`.
pub fn node_status(scene: &Scene, node: &str) -> String {
    let Some(n) = scene.node(node) else {
        return "Unknown".into();
    };
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let mut s = if ready { "Ready" } else { "NotReady" }.to_string();
    if cordoned {
        s.push_str(",SchedulingDisabled");
    }
    s
}

#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;
