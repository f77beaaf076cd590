//! Every API call `muster-device-plugin` makes (the chart's RBAC is checked against this list;
//! a ValidatingAdmissionPolicy narrows the patch to pods on the plugin's own node).

use muster_api::access::{ApiAccess, Scope};

pub const API_CALLS: &[ApiAccess] = &[ApiAccess {
    group: "",
    resource: "pods",
    verbs: &["list", "watch", "patch"],
    scope: Scope::Cluster,
    why: "watch the pods bound to its node (field selector spec.nodeName: RBAC cannot narrow it) for the scheduler's GPU choice; patch muster.dev/gpu-allocation once kubelet allocated them",
}];
