//! Every API call `muster-node-agent` makes (the chart's RBAC is checked against this list;
//! a ValidatingAdmissionPolicy narrows both to the agent's own node).

use muster_api::access::{ApiAccess, Scope};

pub const API_CALLS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "server-side apply of its own Node's GPU labels (GFD-style); the policy allows only its own Node and only those labels",
    },
    ApiAccess {
        group: "muster.dev",
        resource: "gpunodes",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "server-side apply of its own node's GpuNode (create: the first apply creates it); the policy allows only its own",
    },
];
