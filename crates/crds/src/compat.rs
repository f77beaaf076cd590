//! PodGroups of the gang schedulers users already run, read so their jobs work unchanged.
//!
//! Only the fields Muster needs are modelled; unknown fields are ignored.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// scheduler-plugins coscheduling (`scheduling.x-k8s.io/v1alpha1`); pods carry the label
/// `scheduling.x-k8s.io/pod-group`.
pub mod coscheduling {
    use super::*;

    #[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "scheduling.x-k8s.io",
        version = "v1alpha1",
        kind = "PodGroup",
        namespaced
    )]
    #[serde(rename_all = "camelCase")]
    pub struct PodGroupSpec {
        #[serde(default)]
        pub min_member: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub schedule_timeout_seconds: Option<i32>,
    }
}

/// Volcano (`scheduling.volcano.sh/v1beta1`); pods carry the annotation
/// `scheduling.k8s.io/group-name`.
pub mod volcano {
    use super::*;

    #[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "scheduling.volcano.sh",
        version = "v1beta1",
        kind = "PodGroup",
        namespaced
    )]
    #[serde(rename_all = "camelCase")]
    pub struct PodGroupSpec {
        #[serde(default)]
        pub min_member: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub queue: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub priority_class_name: Option<String>,
    }
}
