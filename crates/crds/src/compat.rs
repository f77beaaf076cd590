//! PodGroups of the gang schedulers users already run, read so their jobs work unchanged.
//!
//! PodGroups: only the fields Muster needs are modelled. Volcano's Queue: every field Volcano
//! publishes (v1.10 CRD, v1.12 Go types). Unknown fields are ignored everywhere.

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

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    /// A Kubernetes `ResourceList` (resource name to quantity; numbers or strings).
    pub type ResourceList = BTreeMap<String, Quantity>;

    /// Volcano's Queue (cluster-scoped), as published: `weight`, `capability` (the most the
    /// queue may use), `reclaimable` (whether other queues may reclaim from it), `guarantee`,
    /// `deserved` (its fair-share target, capacity plugin), `parent` (hierarchy), `priority`,
    /// `type`, `affinity`, `extendClusters`. See [`crate::queue_spec::from_volcano`].
    ///
    /// Written by hand rather than derived so that an object stored without `spec` (Volcano's
    /// `spec` is optional) still reads, as an empty spec.
    #[derive(Clone, Debug, Default, PartialEq, Deserialize)]
    pub struct Queue {
        #[serde(default)]
        pub metadata: ObjectMeta,
        #[serde(default)]
        pub spec: QueueSpec,
        #[serde(default)]
        pub status: Option<QueueStatus>,
    }

    impl Queue {
        pub fn new(name: &str, spec: QueueSpec) -> Self {
            Self {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec,
                status: None,
            }
        }
    }

    impl Serialize for Queue {
        fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Repr<'a> {
                api_version: &'a str,
                kind: &'a str,
                metadata: &'a ObjectMeta,
                spec: &'a QueueSpec,
                #[serde(skip_serializing_if = "Option::is_none")]
                status: Option<&'a QueueStatus>,
            }
            Repr {
                api_version: "scheduling.volcano.sh/v1beta1",
                kind: "Queue",
                metadata: &self.metadata,
                spec: &self.spec,
                status: self.status.as_ref(),
            }
            .serialize(ser)
        }
    }

    impl kube::Resource for Queue {
        type DynamicType = ();
        type Scope = kube::core::ClusterResourceScope;
        fn kind(_: &()) -> Cow<'_, str> {
            "Queue".into()
        }
        fn group(_: &()) -> Cow<'_, str> {
            "scheduling.volcano.sh".into()
        }
        fn version(_: &()) -> Cow<'_, str> {
            "v1beta1".into()
        }
        fn plural(_: &()) -> Cow<'_, str> {
            "queues".into()
        }
        fn meta(&self) -> &ObjectMeta {
            &self.metadata
        }
        fn meta_mut(&mut self) -> &mut ObjectMeta {
            &mut self.metadata
        }
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct QueueSpec {
        /// 1..=65535; unset means 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub weight: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub capability: Option<ResourceList>,
        /// Whether other queues may reclaim what this queue uses beyond its deserved share.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reclaimable: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub extend_clusters: Vec<Cluster>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub guarantee: Option<Guarantee>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub affinity: Option<Affinity>,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        pub type_: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub parent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub deserved: Option<ResourceList>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub priority: Option<i32>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Guarantee {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub resource: Option<ResourceList>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Cluster {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub weight: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub capacity: Option<ResourceList>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Affinity {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub node_group_affinity: Option<NodeGroupAffinity>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub node_group_anti_affinity: Option<NodeGroupAffinity>,
    }

    /// Node group names (Volcano's `NodeGroupAffinity` and `NodeGroupAntiAffinity` alike).
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct NodeGroupAffinity {
        #[serde(
            default,
            rename = "requiredDuringSchedulingIgnoredDuringExecution",
            skip_serializing_if = "Vec::is_empty"
        )]
        pub required: Vec<String>,
        #[serde(
            default,
            rename = "preferredDuringSchedulingIgnoredDuringExecution",
            skip_serializing_if = "Vec::is_empty"
        )]
        pub preferred: Vec<String>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct QueueStatus {
        /// `Open`, `Closed`, `Closing` or `Unknown`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub state: Option<String>,
        #[serde(default)]
        pub unknown: i32,
        #[serde(default)]
        pub pending: i32,
        #[serde(default)]
        pub running: i32,
        #[serde(default)]
        pub inqueue: i32,
        #[serde(default)]
        pub completed: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reservation: Option<Reservation>,
        #[serde(default)]
        pub allocated: ResourceList,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Reservation {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub nodes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub resource: Option<ResourceList>,
    }
}
