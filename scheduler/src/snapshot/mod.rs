//! From the cache to the core: nodes, placed pods and pending gangs at one instant.

mod affinity;
mod gangs;
mod nodes;
mod pods;

pub use gangs::{GangInfo, gang_info, pending_gang};
pub(crate) use nodes::cached_node_info;
pub use pods::{PendingMember, carries_placement_gate, is_gated, pending_member};
pub(crate) use pods::{created_secs, tolerations};

use crate::cache::Cache;
use crate::gang::gang_of;
use kube::runtime::reflector::ObjectRef;
use muster_api::names;
use muster_core::{
    Cluster, FIELD_NODE_NAME, Gang, GangKey, LabelRequirement, NodeInfo, PlacedPod, PodId,
    Resources,
};
use pods::{annotated_gpus, cached_requests, forget_deleted, warn_once};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Pods at or above this priority (system-cluster-critical and up) are never victims.
const SYSTEM_PRIORITY: i32 = 1_000_000_000;

/// DaemonSet, mirror and static pods belong to their node: evicting them frees nothing for
/// long (they come back on the same node) and breaks the node's own services.
fn node_bound_by_design(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    daemon || mirror
}

/// Pods of one gang name that define the gang differently (a Volcano group and a Muster
/// PodGroup of the same name, members disagreeing on min-available): planning either
/// reading could break the other's promise, so the gang waits until they agree.
fn conflicting_sources(a: &crate::gang::GangSource, b: &crate::gang::GangSource) -> String {
    use crate::gang::GangSource::Annotation;
    match (a, b) {
        (Annotation { min_available: x }, Annotation { min_available: y }) => format!(
            "gang members disagree on {}: {} vs {}",
            names::ANNOTATION_MIN_AVAILABLE,
            x.as_ref().map_or_else(|e| e.clone(), |n| n.to_string()),
            y.as_ref().map_or_else(|e| e.clone(), |n| n.to_string()),
        ),
        _ => format!(
            "gang name is claimed by two definitions ({} and {}); rename one",
            a.kind(),
            b.kind()
        ),
    }
}

/// A pod the engine has planned but not bound yet: it holds its place in every new snapshot.
#[derive(Clone, Debug)]
pub struct Assumed {
    pub gang: GangKey,
    pub node: String,
    pub gpus: Vec<u32>,
    pub resources: Resources,
    pub priority: i32,
}

/// What the engine adds to the cache's view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Planning {
    /// Planned, unbound pods by UID.
    pub assumed: HashMap<String, Assumed>,
    /// Gangs whose minimum is planned and not yet released: their other pending members wait
    /// (a plan whose barrier holds members is never replaced).
    pub held: HashSet<GangKey>,
    /// Nodes each pod (by UID) may not be planned on.
    pub excluded: HashMap<String, Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub gang: GangKey,
}

pub struct Snapshot {
    pub cluster: Cluster,
    pub pending: Vec<Gang>,
    pub gangs: HashMap<GangKey, GangInfo>,
    pub pods: HashMap<String, PodInfo>,
    /// GPU UUIDs by index, per node.
    pub gpu_ids: HashMap<String, Vec<String>>,
}

pub fn build(cache: &Cache, planning: &Planning, now: u64) -> Snapshot {
    let assumed = &planning.assumed;
    let mut gpu_ids = HashMap::new();
    let nodes: Vec<NodeInfo> = cache
        .nodes
        .state()
        .iter()
        .filter_map(|n| cached_node_info(cache, n))
        .inspect(|n| {
            gpu_ids.insert(
                n.name.clone(),
                n.gpus.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
            );
        })
        .collect();
    forget_deleted(&cache.node_infos, nodes.len(), |name| {
        cache.nodes.get(&ObjectRef::new(name)).is_some()
    });
    // One malformed node (e.g. more GPUs than the core supports) is skipped, not fatal.
    let mut cluster = Cluster::default();
    for node in nodes {
        let name = node.name.clone();
        if let Err(e) = cluster.upsert_node(node) {
            tracing::warn!(node = %name, error = %e, "node left out of placement");
        }
    }
    let mut gangs: HashMap<GangKey, GangInfo> = HashMap::new();
    let mut pods = HashMap::new();
    let mut members: BTreeMap<GangKey, Vec<PendingMember>> = BTreeMap::new();
    let mut unannotated: Vec<PlacedPod> = Vec::new();

    for pod in cache.pods.state() {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ours = cache.is_ours(&pod);
        let gref = gang_of(&pod);
        let info = gangs
            .entry(gref.key.clone())
            .or_insert_with(|| gang_info(cache, &gref.key, &gref.source, Some(&pod)));
        if info.source != gref.source && info.problem.is_none() {
            info.problem = Some(conflicting_sources(&info.source, &gref.source));
        }
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        if ours {
            info.members += 1;
            info.priority = info.priority.max(priority);
            match phase {
                "Succeeded" => info.succeeded += 1,
                "Failed" => info.failed += 1,
                "Running" => info.running += 1,
                _ => {}
            }
            let created = created_secs(pod.metadata.creation_timestamp.as_ref());
            if info.created_at == 0 || created < info.created_at {
                info.created_at = created;
            }
        }
        pods.insert(
            uid.clone(),
            PodInfo {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                gang: gref.key.clone(),
            },
        );
        if matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if let Some(node) = node {
            if ours {
                info.bound += 1;
            }
            let placed = PlacedPod {
                id: PodId::new(uid),
                gang: gref.key.clone(),
                node: node.clone(),
                // Bound already: what it holds is the API server's business; uncountable
                // requests are read as the whole node, so nothing is placed beside it.
                resources: cached_requests(cache, &pod).unwrap_or(Resources {
                    cpu_millis: u64::MAX,
                    memory_bytes: u64::MAX,
                    pods: 1,
                    gpus: 0,
                }),
                gpus: annotated_gpus(&pod, &node, gpu_ids.get(&node)).unwrap_or_else(|why| {
                    warn_once(cache, &pod, &why);
                    Vec::new()
                }),
                priority,
                started_at: created_secs(pod.metadata.creation_timestamp.as_ref()),
                preemptible: priority < SYSTEM_PRIORITY && !node_bound_by_design(&pod),
                terminating,
                ends_by: pods::ends_by(&pod, now),
            };
            if placed.gpus.len() == placed.resources.gpus as usize {
                if let Err(e) = cluster.record_pod(placed) {
                    tracing::debug!(error = %e, "pod on a node outside the snapshot");
                }
            } else {
                unannotated.push(placed);
            }
            continue;
        }
        if !ours || terminating || is_gated(&pod) {
            continue;
        }
        if let Some(a) = assumed.get(&uid) {
            info.bound += 1;
            let placed = PlacedPod {
                id: PodId::new(uid),
                gang: a.gang.clone(),
                node: a.node.clone(),
                resources: a.resources,
                gpus: a.gpus.clone(),
                priority: a.priority,
                started_at: now,
                // Never a victim: evicting a planned gang's pending pods would gain nothing
                // its plan does not already hold; it binds or its plan is dropped.
                preemptible: false,
                terminating: false,
                ends_by: None,
            };
            if let Err(e) = cluster.record_pod(placed) {
                tracing::debug!(error = %e, "assumed pod on a node outside the snapshot");
            }
            continue;
        }
        if planning.held.contains(&gref.key) {
            continue;
        }
        let mut member = pending_member(cache, &pod, uid);
        if let Some(problem) = &member.invalid
            && info.problem.is_none()
        {
            info.problem = Some(problem.clone());
        }
        if let Some(nodes) = planning.excluded.get(member.request.id.as_str()) {
            member.request.selector.push(LabelRequirement::NotIn(
                FIELD_NODE_NAME.to_string(),
                nodes.clone(),
            ));
        }
        members.entry(gref.key.clone()).or_default().push(member);
    }
    // Pods bound without a GPU choice (another scheduler, or before Muster): lowest free GPUs.
    for mut p in unannotated {
        let free = cluster.free_gpus(&p.node).unwrap_or_default();
        p.gpus = free
            .iter()
            .take(p.resources.gpus as usize)
            .map(|&g| g as u32)
            .collect();
        p.resources.gpus = p.gpus.len() as u32;
        if let Err(e) = cluster.record_pod(p) {
            tracing::debug!(error = %e, "pod on a node outside the snapshot");
        }
    }
    for (key, info) in gangs.iter_mut() {
        // Placed pods (bound or planned) count against their gang's queue.
        cluster.set_gang_queue(key, info.queue.clone());
        if info.priority == i32::MIN {
            info.priority = 0;
        }
        gangs::flag_missing_members(info, now);
    }
    forget_deleted(&cache.pod_requests, pods.len(), |uid| {
        pods.contains_key(uid)
    });
    let pending = members
        .into_iter()
        .filter_map(|(key, list)| {
            let info = gangs.get(&key)?;
            info.problem
                .is_none()
                .then(|| pending_gang(key, info, list))
        })
        .collect();
    Snapshot {
        cluster,
        pending,
        gangs,
        pods,
        gpu_ids,
    }
}
