//! Well-known names: one definition, used by every binary.

/// `spec.schedulerName` that opts a pod into Muster.
pub const SCHEDULER_NAME: &str = "muster";
/// The extended resource for whole GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Annotation-only gang form for plain Jobs: the gang name (pods of one gang share it).
pub const ANNOTATION_GANG: &str = "muster.dev/gang";
/// Annotation-only gang form: how many members must run together.
pub const ANNOTATION_MIN_AVAILABLE: &str = "muster.dev/min-available";
/// Label naming Muster's own `PodGroup` (group `muster.dev`).
pub const LABEL_POD_GROUP: &str = "muster.dev/pod-group";
/// The queue (tenant) a gang belongs to, when its group does not say.
pub const LABEL_QUEUE: &str = "muster.dev/queue";
/// scheduler-plugins coscheduling: pod label naming its `scheduling.x-k8s.io` PodGroup.
pub const LABEL_COSCHEDULING_POD_GROUP: &str = "scheduling.x-k8s.io/pod-group";
/// Volcano: pod annotation naming its `scheduling.volcano.sh` PodGroup.
pub const ANNOTATION_VOLCANO_GROUP_NAME: &str = "scheduling.k8s.io/group-name";

/// Scheduling gate the gang-gate admission policy puts on gang members at creation; the
/// scheduler removes it once the member's gang is planned (see [`crate::gate`]).
pub const GATE_PLACEMENT: &str = "muster.dev/placement";

/// Scheduler -> device plugin: comma-separated GPU UUIDs the plan chose, written before binding.
pub const ANNOTATION_GPU_IDS: &str = "muster.dev/gpu-ids";
/// Scheduler -> device plugin: the node the GPU choice is for (guards against stale annotations).
pub const ANNOTATION_GPU_NODE: &str = "muster.dev/gpu-node";
/// Device plugin -> everyone: set to [`GPU_ALLOCATION_DONE`] once the kubelet allocated the GPUs.
pub const ANNOTATION_GPU_ALLOCATION: &str = "muster.dev/gpu-allocation";
/// Value of [`ANNOTATION_GPU_ALLOCATION`] after `Allocate`.
pub const GPU_ALLOCATION_DONE: &str = "allocated";

/// Node label naming a machine fixture (simulated nodes, and nodes without a node agent yet).
pub const LABEL_TOPOLOGY_FIXTURE: &str = "muster.dev/topology-fixture";
/// Node label grouping nodes in one rack (network locality for gangs spanning nodes).
pub const LABEL_RACK: &str = "muster.dev/rack";

/// GPU Feature Discovery labels (kept compatible so existing selectors keep working).
pub mod gfd {
    pub const PRODUCT: &str = "nvidia.com/gpu.product";
    pub const COUNT: &str = "nvidia.com/gpu.count";
    /// Per-GPU memory in MB.
    pub const MEMORY: &str = "nvidia.com/gpu.memory";
    pub const FAMILY: &str = "nvidia.com/gpu.family";
    pub const MACHINE: &str = "nvidia.com/gpu.machine";
    /// NVLink domain (rack-scale NVLink clique such as GB200 NVL72).
    pub const CLIQUE: &str = "nvidia.com/gpu.clique";
    pub const MIG_STRATEGY: &str = "nvidia.com/mig.strategy";
}
