//! Everything listed at one instant, and what the views derive from it through the
//! scheduler's own code (gang resolution, snapshot, planner).

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use muster_api::{SchedulerNames, names};
use muster_core::{GangKey, Plan, PlannerConfig};
use muster_crds::compat::{coscheduling, volcano};
use muster_crds::{GpuNode, PodGroup, Queue};
use muster_scheduler::cache::{Cache, CacheObjects};
use muster_scheduler::gang::gang_of;
use muster_scheduler::queues::QueueBuild;
use muster_scheduler::snapshot::{self, Snapshot};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Default)]
pub struct Scene {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub gpu_nodes: Vec<GpuNode>,
    pub pod_groups: Vec<PodGroup>,
    pub coscheduling: Vec<coscheduling::PodGroup>,
    pub volcano: Vec<volcano::PodGroup>,
    pub upstream: Vec<UpstreamPodGroup>,
    pub priority_classes: Vec<PriorityClass>,
    pub quotas: Vec<ResourceQuota>,
    /// Muster's and Volcano's Queue objects (cluster-scoped).
    pub queues: Vec<Queue>,
    pub volcano_queues: Vec<volcano::Queue>,
    /// For the `muster.dev/queue` namespace annotation.
    pub namespaces: Vec<Namespace>,
    /// Events with reason `Preempted` (the scheduler's evictions).
    pub events: Vec<Event>,
    /// What could not be listed (missing CRDs, refusals): printed on stderr.
    pub warnings: Vec<String>,
    /// Unix seconds of "now".
    pub now: i64,
    /// Which pods are Muster's (`--scheduler-name`, as the scheduler was started with).
    pub scheduler_names: SchedulerNames,
}

/// The snapshot and a fresh plan: what the scheduler would decide right now.
pub struct Analysis {
    pub snapshot: Snapshot,
    pub plan: Plan,
    /// The queue tree planned with (empty: no queues) and the queue objects' problems.
    pub queues: QueueBuild,
}

/// When and by whom a gang was last preempted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preempted {
    pub by: String,
    pub at: i64,
}

impl Scene {
    pub fn objects(&self) -> CacheObjects {
        CacheObjects {
            nodes: self.nodes.clone(),
            pods: self.pods.clone(),
            pod_groups: self.pod_groups.clone(),
            coscheduling: self.coscheduling.clone(),
            volcano: self.volcano.clone(),
            upstream: self.upstream.clone(),
            priority_classes: self.priority_classes.clone(),
            gpu_nodes: self.gpu_nodes.clone(),
            scheduler_names: self.scheduler_names.clone(),
        }
    }

    pub fn analyse(&self) -> Analysis {
        analyse_objects(self, self.objects())
    }

    pub fn gpu_node(&self, name: &str) -> Option<&GpuNode> {
        self.gpu_nodes
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some(name))
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    }

    /// Muster's pods by gang (pods of other schedulers are not gang members).
    pub fn gang_pods(&self) -> BTreeMap<GangKey, Vec<&Pod>> {
        let mut out: BTreeMap<GangKey, Vec<&Pod>> = BTreeMap::new();
        for p in &self.pods {
            let ours = self
                .scheduler_names
                .contains(p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()));
            if ours {
                out.entry(gang_of(p).key).or_default().push(p);
            }
        }
        out
    }

    /// The object that made the gang, as `Kind/name`: the controller (else first) owner of its
    /// PodGroup (PyTorchJob, TrainJob, RayCluster, ...), else of its first pod (a Job).
    pub fn gang_owner(&self, key: &GangKey, pods: &[&Pod]) -> Option<String> {
        let named = |m: &ObjectMeta| {
            m.namespace.as_deref() == Some(key.namespace.as_str())
                && m.name.as_deref() == Some(key.name.as_str())
        };
        let group_meta = self
            .pod_groups
            .iter()
            .map(|g| &g.metadata)
            .chain(self.coscheduling.iter().map(|g| &g.metadata))
            .chain(self.volcano.iter().map(|g| &g.metadata))
            .chain(self.upstream.iter().map(|g| &g.metadata))
            .find(|m| named(m));
        group_meta
            .and_then(owner_of)
            .or_else(|| pods.iter().find_map(|p| owner_of(&p.metadata)))
    }

    /// Last preemption of each gang, from the scheduler's `Preempted` events
    /// ("gang NS/NAME preempted whole by higher-priority gang NS/NAME").
    pub fn preemptions(&self) -> HashMap<GangKey, Preempted> {
        let mut out: HashMap<GangKey, Preempted> = HashMap::new();
        for e in &self.events {
            let Some((victim, by)) = e.message.as_deref().and_then(parse_preempted) else {
                continue;
            };
            let at = event_time(e);
            if out.get(&victim).is_none_or(|p| p.at <= at) {
                out.insert(victim, Preempted { by, at });
            }
        }
        out
    }

    pub fn priority_of_class(&self, class: &str) -> Option<i32> {
        self.priority_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class))
            .and_then(|c| c.value)
    }
}

/// Plans `objects` (the scene's, or a what-if's changed copy) with the scene's queues, by
/// the core call the scheduler makes.
pub fn analyse_objects(scene: &Scene, objects: CacheObjects) -> Analysis {
    // The scheduler's snapshot resolves each gang's queue (group, pod label, namespace).
    let cache = Cache::from_objects(objects).with_queue_objects(
        scene.queues.clone(),
        scene.volcano_queues.clone(),
        scene.namespaces.clone(),
    );
    let now = u64::try_from(scene.now).unwrap_or(0);
    let snapshot = snapshot::build(&cache, &Default::default(), now);
    let queues = crate::queues::build(scene);
    let plan = snapshot.cluster.plan_with_queues(
        &snapshot.pending,
        now,
        &PlannerConfig::default(),
        &queues.tree,
    );
    Analysis {
        snapshot,
        plan,
        queues,
    }
}

/// `Kind/name` of the controller owner, else of the first owner.
fn owner_of(meta: &ObjectMeta) -> Option<String> {
    let owners = meta.owner_references.as_ref()?;
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())?;
    Some(format!("{}/{}", owner.kind, owner.name))
}

fn parse_preempted(msg: &str) -> Option<(GangKey, String)> {
    let rest = msg.strip_prefix("gang ")?;
    let (victim, by) = rest.split_once(" preempted whole by higher-priority gang ")?;
    let (ns, name) = victim.split_once('/')?;
    Some((GangKey::new(ns, name), by.trim().to_string()))
}

/// Unix seconds of an event (core/v1 view of either API's events).
pub fn event_time(e: &Event) -> i64 {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .unwrap_or(0)
}

/// Unix seconds of an RFC 3339 time (`None` when unparseable).
pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// RFC 3339 of unix seconds.
pub fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// GPUs a pod requests (limits win, as for extended resources they must match).
pub fn pod_gpus(p: &Pod) -> u32 {
    let containers = p
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .filter_map(|r| {
            r.limits
                .as_ref()
                .and_then(|l| l.get(names::GPU_RESOURCE))
                .or_else(|| r.requests.as_ref().and_then(|l| l.get(names::GPU_RESOURCE)))
        })
        .filter_map(|q| q.0.trim().parse::<u32>().ok())
        .sum()
}

pub fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn pod_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preemption_notes_are_parsed() {
        let (v, by) =
            parse_preempted("gang ml/batch-b preempted whole by higher-priority gang ml/urgent")
                .unwrap();
        assert_eq!(v, GangKey::new("ml", "batch-b"));
        assert_eq!(by, "ml/urgent");
        assert!(parse_preempted("something else").is_none());
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn pods_of_an_added_scheduler_name_are_gang_members_only_when_configured() {
        let mut scene = crate::testing::scene();
        let before = scene.gang_pods().values().map(Vec::len).sum::<usize>();
        for p in &mut scene.pods {
            if let Some(spec) = p.spec.as_mut() {
                spec.scheduler_name = Some("scheduler-plugins-scheduler".into());
            }
        }
        assert!(scene.gang_pods().is_empty());
        scene.scheduler_names =
            SchedulerNames::new(["muster", "scheduler-plugins-scheduler"]).unwrap();
        let after = scene.gang_pods().values().map(Vec::len).sum::<usize>();
        assert_eq!(after, before);
        assert!(before > 0);
    }
}
