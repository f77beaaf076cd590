//! The free-GPU model behind the liveness check: per schedulable node, its healthy GPUs (from
//! its GpuNode, else its fixture) not held by a bound pod (deleting pods still hold theirs).

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Node;
use muster_api::{machines, names};

use super::PodRec;
use crate::setup::Stores;

/// Ready, schedulable, untainted for scheduling.
pub fn schedulable(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return false;
    }
    let tainted = spec.and_then(|s| s.taints.as_ref()).is_some_and(|ts| {
        ts.iter()
            .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
    });
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !tainted && node.metadata.deletion_timestamp.is_none()
}

pub fn allocatable_gpus(node: &Node) -> u32 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(names::GPU_RESOURCE))
        .and_then(|q| q.0.parse().ok())
        .unwrap_or(0)
}

/// GPUs on schedulable nodes (what the workload sizes its load against).
pub fn gpu_capacity(nodes: &[std::sync::Arc<Node>]) -> u32 {
    nodes
        .iter()
        .filter(|n| schedulable(n))
        .map(|n| allocatable_gpus(n))
        .sum()
}

/// The UUIDs Muster knows for `node` (its GpuNode's, else its fixture's); `None` when it knows
/// none, or the node is gone.
pub fn node_uuids(stores: &Stores, node: &str, fixture: &str) -> Option<HashSet<String>> {
    if let Some(gn) = stores
        .gpu_nodes
        .state()
        .into_iter()
        .find(|g| g.metadata.name.as_deref() == Some(node))
    {
        return Some(gn.spec.gpus.iter().map(|g| g.uuid.clone()).collect());
    }
    let n = stores
        .nodes
        .state()
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))?;
    let label = n
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(names::LABEL_TOPOLOGY_FIXTURE))?;
    let name = if label.is_empty() { fixture } else { label };
    let machine = machines::builtin(name).ok()?.for_node(node);
    Some(machine.gpus.into_iter().map(|g| g.uuid).collect())
}

/// Free healthy GPUs per schedulable node.
pub fn free_gpus_per_node(
    stores: &Stores,
    pods: &HashMap<String, PodRec>,
    fixture: &str,
) -> HashMap<String, u32> {
    let gpu_nodes: HashMap<String, HashSet<String>> = stores
        .gpu_nodes
        .state()
        .into_iter()
        .filter_map(|g| {
            let healthy = g
                .spec
                .gpus
                .iter()
                .filter(|x| x.healthy)
                .map(|x| x.uuid.clone())
                .collect();
            Some((g.metadata.name.clone()?, healthy))
        })
        .collect();
    let mut used: HashMap<&str, (HashSet<&str>, u32)> = HashMap::new();
    for p in pods.values().filter(|p| !p.terminal) {
        let Some(node) = p.node.as_deref() else {
            continue;
        };
        let entry = used.entry(node).or_default();
        if p.uuids.is_empty() {
            entry.1 += p.gpus;
        } else {
            entry.0.extend(p.uuids.iter().map(String::as_str));
        }
    }
    let mut free = HashMap::new();
    for node in stores.nodes.state().iter().filter(|n| schedulable(n)) {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let healthy: HashSet<String> = match gpu_nodes.get(&name) {
            Some(h) => h.clone(),
            None => match node_uuids(stores, &name, fixture) {
                Some(all) => all,
                None => continue,
            },
        };
        let (held, anonymous) = used.remove(name.as_str()).unwrap_or_default();
        let n = healthy
            .iter()
            .filter(|u| !held.contains(u.as_str()))
            .count() as u32;
        free.insert(
            name,
            n.saturating_sub(anonymous).min(allocatable_gpus(node)),
        );
    }
    free
}

/// Whether `pods` members of `gpus` GPUs each fit the free GPUs (members never span nodes).
pub fn fits(free: &HashMap<String, u32>, pods: u32, gpus: u32) -> bool {
    if gpus == 0 {
        return true;
    }
    free.values().map(|f| f / gpus).sum::<u32>() >= pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_counts_whole_members_per_node() {
        let free = HashMap::from([("a".to_string(), 7), ("b".to_string(), 4)]);
        assert!(fits(&free, 2, 4));
        assert!(!fits(&free, 3, 4));
        assert!(fits(&free, 11, 1));
        assert!(!fits(&free, 1, 8));
    }
}
