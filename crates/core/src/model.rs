//! The snapshot the core plans over: nodes, placed pods, pending gangs. Plain data, no I/O.

use muster_api::LinkMatrix;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Requests or capacity of the resources the core accounts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u32,
    pub gpus: u32,
}

impl Resources {
    pub fn new(cpu_millis: u64, memory_bytes: u64, gpus: u32) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
            pods: 1,
            gpus,
        }
    }
}

/// A namespaced gang (pod group) name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GangKey {
    pub namespace: String,
    pub name: String,
}

impl GangKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> GangKey {
        GangKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for GangKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod's identity (the scheduler uses the pod UID; the simulator `job/index`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodId(pub Arc<str>);

impl PodId {
    pub fn new(id: impl Into<Arc<str>>) -> PodId {
        PodId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

/// A pod toleration; `value: None` means operator `Exists`, `effect: None` any effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Toleration {
    /// `None` with `value: None` tolerates every taint.
    pub key: Option<String>,
    pub value: Option<String>,
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match (&self.key, &self.value) {
            (None, _) => true,
            (Some(k), None) => *k == taint.key,
            (Some(k), Some(v)) => *k == taint.key && *v == taint.value,
        }
    }
}

/// One required label condition (nodeSelector entries and required node affinity).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LabelRequirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// The key `matchFields` uses for a node's name (the only field Kubernetes allows there). A
/// requirement on it matches the node's name, not a label: it also carries per-pod node
/// exclusions (a node kube-scheduler refused for the pod).
pub const FIELD_NODE_NAME: &str = "metadata.name";

impl LabelRequirement {
    /// Whether a node named `name` with `labels` satisfies this requirement.
    pub fn matches_node(&self, name: &str, labels: &[(String, String)]) -> bool {
        let on_name = |k: &str| k == FIELD_NODE_NAME;
        match self {
            LabelRequirement::In(k, vs) if on_name(k) => vs.iter().any(|v| v == name),
            LabelRequirement::NotIn(k, vs) if on_name(k) => vs.iter().all(|v| v != name),
            LabelRequirement::Exists(k) if on_name(k) => true,
            LabelRequirement::DoesNotExist(k) if on_name(k) => false,
            _ => self.matches(labels),
        }
    }

    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> LabelRequirement {
        LabelRequirement::In(key.into(), vec![value.into()])
    }

    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let get = |k: &str| labels.iter().find(|(lk, _)| lk == k).map(|(_, v)| v);
        match self {
            LabelRequirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelRequirement::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", vs[0]),
            LabelRequirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            LabelRequirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            LabelRequirement::Exists(k) => write!(f, "{k}"),
            LabelRequirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Stable identity (NVML UUID) the device plugin hands to containers.
    pub id: String,
    pub model: String,
    pub memory_mib: u64,
    pub healthy: bool,
}

/// A node as the core sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub allocatable: Resources,
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Taint>,
    /// Ready and schedulable (not cordoned).
    pub schedulable: bool,
    /// GPUs by index; `gpus.len()` may exceed `allocatable.gpus` only if some are reserved
    /// elsewhere; the core never uses more than `allocatable.gpus`.
    pub gpus: Vec<GpuInfo>,
    /// Pairwise links of `gpus`; `None` when unknown (treated as uniform PCIe `SYS`).
    pub topology: Option<LinkMatrix>,
    /// NVLink domain / clique or rack: gangs spanning nodes prefer one domain.
    pub domain: Option<String>,
}

/// A pod that holds resources on a node (running, or bound and starting).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacedPod {
    pub id: PodId,
    pub gang: GangKey,
    pub node: String,
    pub resources: Resources,
    /// GPU indices on `node`.
    pub gpus: Vec<u32>,
    pub priority: i32,
    /// When it started (seconds, caller's clock); newer victims lose less work.
    pub started_at: u64,
    /// `preemptionPolicy`-style opt-out and system pods: never a victim when false.
    pub preemptible: bool,
    /// Being deleted (e.g. already preempted): still holds resources, but a preemptor may
    /// count on them and must not evict anyone else to get them.
    pub terminating: bool,
    /// When it will have ended by its declared run time (caller's clock; a Job's
    /// `activeDeadlineSeconds`); `None`: it declared none. Reservations use it to let gangs
    /// that end in time backfill the nodes they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_by: Option<u64>,
}

/// A pending member of a gang.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodRequest {
    pub id: PodId,
    pub resources: Resources,
    /// Requirements every node must meet (nodeSelector, and node exclusions).
    pub selector: Vec<LabelRequirement>,
    /// Required node affinity: the node must meet every requirement of at least one term
    /// (`nodeSelectorTerms` are ORed). Empty: no terms.
    #[serde(default)]
    pub node_terms: Vec<Vec<LabelRequirement>>,
    pub tolerations: Vec<Toleration>,
    /// At most one member of this shape per node: the pod's required anti-affinity against
    /// its own gang's pods on `kubernetes.io/hostname` (one worker per node).
    #[serde(default)]
    pub one_per_node: bool,
}

/// A gang waiting to be placed: all of `min_member` (counting members already placed) or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gang {
    pub key: GangKey,
    pub queue: String,
    pub priority: i32,
    /// Creation time (seconds, caller's clock): older first among equal priority.
    pub created_at: u64,
    pub min_member: u32,
    /// Members not yet placed.
    pub pending: Vec<PodRequest>,
    /// May this gang evict lower-priority gangs (`preemptionPolicy: Never` says no)?
    pub can_preempt: bool,
    /// Seconds it declares it runs at most once started (a Job's `activeDeadlineSeconds`, or
    /// `muster.dev/runtime-limit`); `None`: unknown. With it, the gang may backfill nodes held
    /// for a starving gang if it ends before that gang could start there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_limit: Option<u64>,
}

impl NodeInfo {
    /// A schedulable node built from a machine fixture (GPUs, links, clique as domain).
    pub fn from_machine(name: &str, machine: &muster_api::machines::MachineSpec) -> NodeInfo {
        let spec = machine.for_node(name);
        NodeInfo {
            name: name.to_string(),
            allocatable: Resources {
                cpu_millis: 16_000 * spec.gpus.len().max(1) as u64,
                memory_bytes: (128u64 << 30) * spec.gpus.len().max(1) as u64,
                pods: 110,
                gpus: spec.gpus.len() as u32,
            },
            labels: vec![
                (
                    muster_api::names::gfd::PRODUCT.to_string(),
                    spec.product.clone(),
                ),
                (
                    muster_api::names::LABEL_TOPOLOGY_FIXTURE.to_string(),
                    spec.name.clone(),
                ),
            ],
            taints: Vec::new(),
            schedulable: true,
            gpus: spec
                .gpus
                .iter()
                .map(|g| GpuInfo {
                    id: g.uuid.clone(),
                    model: spec.model.clone(),
                    memory_mib: spec.memory_mib,
                    healthy: true,
                })
                .collect(),
            topology: Some(spec.topology.clone()),
            domain: spec.clique.clone(),
        }
    }
}

impl PodRequest {
    /// Whether a node named `name` with `labels` meets the selector and one of the terms.
    pub fn node_matches(&self, name: &str, labels: &[(String, String)]) -> bool {
        self.selector.iter().all(|r| r.matches_node(name, labels))
            && (self.node_terms.is_empty()
                || self
                    .node_terms
                    .iter()
                    .any(|t| t.iter().all(|r| r.matches_node(name, labels))))
    }

    /// A member asking `gpus` GPUs with modest CPU and memory, no constraints.
    pub fn gpus(id: impl Into<Arc<str>>, gpus: u32) -> PodRequest {
        PodRequest {
            id: PodId::new(id),
            resources: Resources::new(4_000, 16 << 30, gpus),
            selector: Vec::new(),
            node_terms: Vec::new(),
            tolerations: Vec::new(),
            one_per_node: false,
        }
    }
}

impl Gang {
    /// A gang of `pods` members of `gpus` GPUs each, all required.
    pub fn uniform(
        namespace: &str,
        name: &str,
        pods: u32,
        gpus: u32,
        priority: i32,
        created_at: u64,
    ) -> Gang {
        Gang {
            key: GangKey::new(namespace, name),
            queue: "default".into(),
            priority,
            created_at,
            min_member: pods,
            pending: (0..pods)
                .map(|i| PodRequest::gpus(format!("{namespace}/{name}-{i}"), gpus))
                .collect(),
            can_preempt: true,
            runtime_limit: None,
        }
    }
}
