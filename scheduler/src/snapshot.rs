//! From the cache to the core: nodes, placed pods and pending gangs at one instant.

use crate::cache::Cache;
use crate::gang::{GangSource, gang_of};
use crate::resources::pod_requests;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::ObjectRef;
use muster_api::machines;
use muster_api::names::{self, gfd};
use muster_core::{
    Cluster, Gang, GangKey, GpuInfo, LabelRequirement, NodeInfo, PlacedPod, PodId, PodRequest,
    Resources, Taint, TaintEffect, Toleration,
};
use std::collections::{BTreeMap, HashMap};

/// Pods at or above this priority (system-cluster-critical and up) are never victims.
const SYSTEM_PRIORITY: i32 = 1_000_000_000;

/// A pod the engine has planned but not bound yet: it holds its place in every new snapshot.
#[derive(Clone, Debug)]
pub struct Assumed {
    pub gang: GangKey,
    pub node: String,
    pub gpus: Vec<u32>,
    pub resources: Resources,
    pub priority: i32,
}

/// What the engine knows about one gang besides what the core needs.
#[derive(Clone, Debug)]
pub struct GangInfo {
    pub source: GangSource,
    pub min_member: u32,
    pub members: u32,
    pub bound: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Why the gang cannot be planned at all (missing group, bad annotation, bad spec).
    pub problem: Option<String>,
    pub created_at: u64,
    pub queue: String,
    pub priority: i32,
    /// `scheduleTimeoutSeconds` of the group: how long members may take to appear.
    pub schedule_timeout_secs: Option<u64>,
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

pub fn build(cache: &Cache, assumed: &HashMap<String, Assumed>, now: u64) -> Snapshot {
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
        let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref())
            == Some(names::SCHEDULER_NAME);
        let gref = gang_of(&pod);
        let info = gangs
            .entry(gref.key.clone())
            .or_insert_with(|| gang_info(cache, &gref.key, &gref.source));
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
                id: PodId(uid),
                gang: gref.key.clone(),
                node: node.clone(),
                resources: cached_requests(cache, &pod),
                gpus: annotated_gpus(&pod, gpu_ids.get(&node)),
                priority,
                started_at: created_secs(pod.metadata.creation_timestamp.as_ref()),
                preemptible: priority < SYSTEM_PRIORITY,
                terminating,
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
                id: PodId(uid),
                gang: a.gang.clone(),
                node: a.node.clone(),
                resources: a.resources,
                gpus: a.gpus.clone(),
                priority: a.priority,
                started_at: now,
                preemptible: a.priority < SYSTEM_PRIORITY,
                terminating: false,
            };
            if let Err(e) = cluster.record_pod(placed) {
                tracing::debug!(error = %e, "assumed pod on a node outside the snapshot");
            }
            continue;
        }
        members
            .entry(gref.key.clone())
            .or_default()
            .push(pending_member(cache, &pod, uid));
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
    for info in gangs.values_mut() {
        flag_missing_members(info, now);
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

/// A group whose `scheduleTimeoutSeconds` passed with fewer member pods than `minMember` is
/// reported invalid (it still schedules if the members appear later).
fn flag_missing_members(info: &mut GangInfo, now: u64) {
    let Some(timeout) = info.schedule_timeout_secs else {
        return;
    };
    let waited = now.saturating_sub(info.created_at);
    if info.problem.is_none()
        && info.created_at > 0
        && waited > timeout
        && info.members < info.min_member
        && info.bound < info.min_member
    {
        info.problem = Some(format!(
            "invalid PodGroup: minMember is {} but only {} member pod(s) exist {waited}s after it was created (scheduleTimeoutSeconds {timeout})",
            info.min_member, info.members
        ));
    }
}

/// A pod with scheduling gates (a queue such as Kueue holding it back) is not scheduled by
/// kube-scheduler until the gates are removed, so planning it would only hold capacity.
pub fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// A pod waiting for placement, as the core sees it.
pub struct PendingMember {
    pub request: PodRequest,
    pub priority: i32,
    pub can_preempt: bool,
}

pub fn pending_member(cache: &Cache, pod: &Pod, uid: String) -> PendingMember {
    let spec = pod.spec.as_ref();
    PendingMember {
        request: PodRequest {
            id: PodId(uid),
            resources: cached_requests(cache, pod),
            selector: selector(pod),
            tolerations: tolerations(pod),
        },
        priority: spec.and_then(|s| s.priority).unwrap_or(0),
        can_preempt: spec.and_then(|s| s.preemption_policy.as_deref()) != Some("Never"),
    }
}

/// The core's view of a gang's waiting members; the gang's priority is the highest of its
/// group's and its members'.
pub fn pending_gang(key: GangKey, info: &GangInfo, members: Vec<PendingMember>) -> Gang {
    Gang {
        queue: info.queue.clone(),
        priority: info
            .priority
            .max(members.iter().map(|m| m.priority).max().unwrap_or(0)),
        created_at: info.created_at,
        min_member: info.min_member,
        can_preempt: members.iter().all(|m| m.can_preempt),
        pending: members.into_iter().map(|m| m.request).collect(),
        key,
    }
}

pub(crate) fn created_secs(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> u64 {
    t.map(|t| t.0.as_second().max(0) as u64).unwrap_or(0)
}

/// GPU indices named by the scheduler's annotation, if they all exist on the node.
fn annotated_gpus(pod: &Pod, ids: Option<&Vec<String>>) -> Vec<u32> {
    let (Some(value), Some(ids)) = (
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ANNOTATION_GPU_IDS)),
        ids,
    ) else {
        return Vec::new();
    };
    let found: Vec<u32> = value
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .filter_map(|u| ids.iter().position(|id| id == u.trim()).map(|i| i as u32))
        .collect();
    if found.len() == value.split(',').filter(|s| !s.trim().is_empty()).count() {
        found
    } else {
        Vec::new()
    }
}

pub fn gang_info(cache: &Cache, key: &GangKey, source: &GangSource) -> GangInfo {
    let mut info = GangInfo {
        source: source.clone(),
        min_member: 1,
        members: 0,
        bound: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        problem: None,
        created_at: 0,
        schedule_timeout_secs: None,
        queue: "default".into(),
        priority: 0,
    };
    let missing = |kind: &str, name: &str| {
        Some(format!(
            "waiting for {kind} {}/{name}: it does not exist",
            key.namespace
        ))
    };
    match source {
        GangSource::Muster(name) => match cache
            .pod_groups
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.muster.dev", name),
            Some(pg) => {
                info.created_at = created_secs(pg.metadata.creation_timestamp.as_ref());
                info.schedule_timeout_secs = pg
                    .spec
                    .schedule_timeout_seconds
                    .and_then(|t| u64::try_from(t).ok());
                if let Some(q) = &pg.spec.queue {
                    info.queue = q.clone();
                }
                if pg.spec.min_member < 1 {
                    info.problem = Some(format!(
                        "invalid PodGroup: minMember is {}, must be at least 1",
                        pg.spec.min_member
                    ));
                } else {
                    info.min_member = pg.spec.min_member as u32;
                }
                if let Some(pc) = &pg.spec.priority_class_name {
                    match cache.priority_classes.get(&ObjectRef::new(pc)) {
                        Some(c) => info.priority = c.value.unwrap_or(0),
                        None => {
                            info.problem = Some(format!(
                                "invalid PodGroup: priority class {pc:?} does not exist"
                            ))
                        }
                    }
                }
            }
        },
        GangSource::Coscheduling(name) => match cache
            .coscheduling
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.scheduling.x-k8s.io", name),
            Some(pg) => info.min_member = pg.spec.min_member.max(1) as u32,
        },
        GangSource::Volcano(name) => match cache
            .volcano
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.scheduling.volcano.sh", name),
            Some(pg) => {
                info.min_member = pg.spec.min_member.max(1) as u32;
                if let Some(q) = &pg.spec.queue {
                    info.queue = q.clone();
                }
                if let Some(pc) = pg
                    .spec
                    .priority_class_name
                    .as_ref()
                    .and_then(|pc| cache.priority_classes.get(&ObjectRef::new(pc)))
                {
                    info.priority = pc.value.unwrap_or(0);
                }
            }
        },
        GangSource::Upstream(name) => match cache
            .upstream
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.scheduling.k8s.io", name),
            Some(pg) => {
                info.min_member = pg
                    .spec
                    .scheduling_policy
                    .gang
                    .as_ref()
                    .map_or(1, |g| g.min_count.max(1) as u32);
                if let Some(p) = pg.spec.priority {
                    info.priority = p;
                }
            }
        },
        GangSource::Annotation { min_available } => match min_available {
            Ok(n) => info.min_member = *n,
            Err(e) => info.problem = Some(format!("invalid gang annotations: {e}")),
        },
        GangSource::Single => {}
    }
    info
}

/// A pod's requests, memoised on its resourceVersion (rounds read every pod).
fn cached_requests(cache: &Cache, pod: &Pod) -> Resources {
    let (Some(uid), Some(rv)) = (
        pod.metadata.uid.as_deref(),
        pod.metadata.resource_version.as_deref(),
    ) else {
        return pod_requests(pod);
    };
    let mut memo = cache.pod_requests.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, r)) = memo.get(uid)
        && k == rv
    {
        return *r;
    }
    let r = pod_requests(pod);
    memo.insert(uid.to_string(), (rv.to_string(), r));
    r
}

/// Drops memo entries of deleted objects once they are a noticeable share of the memo.
fn forget_deleted<V>(
    memo: &std::sync::Mutex<HashMap<String, V>>,
    live: usize,
    exists: impl Fn(&str) -> bool,
) {
    let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
    if memo.len() > live + live / 4 + 64 {
        memo.retain(|k, _| exists(k));
    }
}

/// `node_info`, memoised on the Node's fingerprint and its GpuNode's resourceVersion: rounds
/// run often, nodes rarely change in ways placement sees (heartbeats rewrite them all the
/// time), and turning a fixture into per-node GPU identities is not free.
fn cached_node_info(cache: &Cache, node: &Node) -> Option<NodeInfo> {
    let name = node.metadata.name.as_deref()?;
    let version = |rv: Option<&String>| rv.cloned().unwrap_or_default();
    let key = (
        crate::cache::node_fingerprint(node),
        cache
            .gpu_nodes
            .get(&ObjectRef::new(name))
            .map(|g| version(g.metadata.resource_version.as_ref()))
            .unwrap_or_default(),
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

fn node_info(cache: &Cache, node: &Node) -> Option<NodeInfo> {
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
    let gpu_count = u32::try_from(get(names::GPU_RESOURCE, 1.0)).unwrap_or(0);
    let (gpus, topology) = gpus_of(
        cache,
        &name,
        label(names::LABEL_TOPOLOGY_FIXTURE).as_deref(),
    );
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
fn gpus_of(
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

fn effect(e: &str) -> Option<TaintEffect> {
    match e {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

fn selector(pod: &Pod) -> Vec<LabelRequirement> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<LabelRequirement> = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, v)| LabelRequirement::equals(k.clone(), v.clone()))
        .collect();
    // Required node affinity: the first term (terms are ORed; one term covers the usual case).
    let term = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .and_then(|r| r.node_selector_terms.first());
    for e in term
        .and_then(|t| t.match_expressions.as_ref())
        .into_iter()
        .flatten()
    {
        let values = e.values.clone().unwrap_or_default();
        out.push(match e.operator.as_str() {
            "In" => LabelRequirement::In(e.key.clone(), values),
            "NotIn" => LabelRequirement::NotIn(e.key.clone(), values),
            "Exists" => LabelRequirement::Exists(e.key.clone()),
            "DoesNotExist" => LabelRequirement::DoesNotExist(e.key.clone()),
            _ => continue,
        });
    }
    out
}

fn tolerations(pod: &Pod) -> Vec<Toleration> {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| Toleration {
                    key: t.key.clone().filter(|k| !k.is_empty()),
                    value: match t.operator.as_deref() {
                        Some("Exists") => None,
                        _ => Some(t.value.clone().unwrap_or_default()),
                    },
                    effect: t.effect.as_deref().and_then(effect),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(min: u32, members: u32, created_at: u64, timeout: Option<u64>) -> GangInfo {
        GangInfo {
            source: GangSource::Muster("g".into()),
            min_member: min,
            members,
            bound: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            problem: None,
            created_at,
            queue: "default".into(),
            priority: 0,
            schedule_timeout_secs: timeout,
        }
    }

    #[test]
    fn missing_members_are_flagged_only_after_the_schedule_timeout() {
        let mut early = group(4, 2, 1_000, Some(60));
        flag_missing_members(&mut early, 1_030);
        assert_eq!(early.problem, None);

        let mut late = group(4, 2, 1_000, Some(60));
        flag_missing_members(&mut late, 1_090);
        let problem = late.problem.unwrap();
        assert!(problem.contains("minMember is 4 but only 2"), "{problem}");
        assert!(problem.contains("scheduleTimeoutSeconds 60"), "{problem}");

        let mut complete = group(4, 4, 1_000, Some(60));
        flag_missing_members(&mut complete, 5_000);
        assert_eq!(complete.problem, None);

        let mut no_timeout = group(4, 1, 1_000, None);
        flag_missing_members(&mut no_timeout, 5_000);
        assert_eq!(no_timeout.problem, None);
    }
}
