//! Every API call `muster-scheduler` makes. The chart grants exactly these to the extender
//! (checked by `tests/chart/tests/rbac.rs`); kube-scheduler's own rights are upstream's.

use muster_api::access::{ApiAccess, Scope};

const CLUSTER: Scope = Scope::Cluster;
const WATCH: &[&str] = &["list", "watch"];

pub const API_CALLS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["get", "list", "watch"],
        scope: CLUSTER,
        why: "cache of capacity and labels; each planned node is read again before binding",
    },
    ApiAccess {
        group: "",
        resource: "pods",
        verbs: &["get", "list", "watch", "patch", "delete"],
        scope: CLUSTER,
        why: "cache of demand and usage; get: did a retried Binding land; patch: touch a planned pod so kube-scheduler retries it at once, and lift the muster.dev/placement scheduling gate once its gang is planned; delete: roll back a gang bound part-way",
    },
    ApiAccess {
        group: "",
        resource: "pods/binding",
        verbs: &["create"],
        scope: CLUSTER,
        why: "bind a whole gang at its barrier (with the pod UID and the chosen GPUs)",
    },
    ApiAccess {
        group: "",
        resource: "pods/eviction",
        verbs: &["create"],
        scope: CLUSTER,
        why: "preempt whole lower-priority gangs through the eviction API (PodDisruptionBudgets apply)",
    },
    ApiAccess {
        group: "",
        resource: "pods/status",
        verbs: &["patch"],
        scope: CLUSTER,
        why: "status.nominatedNodeName of planned pods; the PodScheduled reason of gang members held behind the gang gate",
    },
    ApiAccess {
        group: "scheduling.k8s.io",
        resource: "priorityclasses",
        verbs: WATCH,
        scope: CLUSTER,
        why: "gang priority",
    },
    ApiAccess {
        group: "scheduling.k8s.io",
        resource: "podgroups",
        verbs: WATCH,
        scope: CLUSTER,
        why: "upstream PodGroups (gang definitions)",
    },
    ApiAccess {
        group: "muster.dev",
        resource: "podgroups",
        verbs: WATCH,
        scope: CLUSTER,
        why: "Muster PodGroups (gang definitions)",
    },
    ApiAccess {
        group: "muster.dev",
        resource: "podgroups/status",
        verbs: &["patch"],
        scope: CLUSTER,
        why: "PodGroup phase, conditions and why a gang waits",
    },
    ApiAccess {
        group: "muster.dev",
        resource: "gpunodes",
        verbs: WATCH,
        scope: CLUSTER,
        why: "GPU identities, health and links published by the node agents",
    },
    ApiAccess {
        group: "scheduling.x-k8s.io",
        resource: "podgroups",
        verbs: WATCH,
        scope: CLUSTER,
        why: "scheduler-plugins coscheduling PodGroups",
    },
    ApiAccess {
        group: "scheduling.volcano.sh",
        resource: "podgroups",
        verbs: WATCH,
        scope: CLUSTER,
        why: "Volcano PodGroups",
    },
    ApiAccess {
        group: "scheduling.x-k8s.io",
        resource: "podgroups/status",
        verbs: &["patch"],
        scope: CLUSTER,
        why: "scheduler-plugins PodGroup status (phase, running, succeeded, failed) for the operators' groups",
    },
    ApiAccess {
        group: "scheduling.volcano.sh",
        resource: "podgroups",
        verbs: &["patch"],
        scope: CLUSTER,
        why: "Volcano PodGroup status (its CRD has no status subresource): Inqueue, after which operators such as training-operator create the pods; Running; why it waits",
    },
    ApiAccess {
        group: "",
        resource: "namespaces",
        verbs: WATCH,
        scope: CLUSTER,
        why: "a namespace's muster.dev/queue annotation: the queue of its gangs that name none",
    },
    ApiAccess {
        group: "muster.dev",
        resource: "queues",
        verbs: WATCH,
        scope: CLUSTER,
        why: "Muster Queues: guarantees, limits and weights every round plans with",
    },
    ApiAccess {
        group: "muster.dev",
        resource: "queues/status",
        verbs: &["patch"],
        scope: CLUSTER,
        why: "Queue status: allocated, borrowed, lent, fair share, gangs, problems",
    },
    ApiAccess {
        group: "scheduling.volcano.sh",
        resource: "queues",
        verbs: WATCH,
        scope: CLUSTER,
        why: "Volcano Queues, planned like Muster's (their status is Volcano's controller's)",
    },
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: CLUSTER,
        why: "Events on pods and PodGroups (patch: an Event's series count)",
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get"],
        scope: Scope::ReleaseNamespace(&["{release}-kube-scheduler"]),
        why: "follow mode: lead exactly while this pod's kube-scheduler holds its Lease",
    },
];

/// Leader election without a kube-scheduler to follow (`--follow-lease` unset): the
/// extender holds its own Lease. The chart always follows, so it does not grant these.
pub const OWN_LEASE_CALLS: &[ApiAccess] = &[ApiAccess {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
    scope: Scope::ReleaseNamespace(&["muster-scheduler"]),
    why: "hold mode: the extender's own Lease",
}];
