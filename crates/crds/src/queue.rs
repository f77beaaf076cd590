//! `Queue` (`muster.dev/v1alpha1`, cluster-scoped): a tenant's share of the cluster.
//!
//! Queues form a tree through `spec.parent`; only leaves hold workloads. Per resource (GPUs,
//! optionally per GPU product, CPU, memory) a queue has a `guaranteed` amount (always available
//! to it, lent to others while idle), a `limit` (the most it may hold, borrowing included), a
//! `weight` (its share of what is left after guarantees) and `reclaimable` (whether what it lends
//! is taken back when it needs it).
//!
//! A gang's queue: `PodGroup.spec.queue`, else the pod label `muster.dev/queue`, else the
//! namespace annotation `muster.dev/queue`, else `default` (see [`crate::queue_spec::resolve_queue`]).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "muster.dev",
    version = "v1alpha1",
    kind = "Queue",
    status = "QueueStatus",
    shortname = "mq",
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parent"}"#,
    printcolumn = r#"{"name":"GPUs Guaranteed","type":"string","jsonPath":".spec.gpu.guaranteed"}"#,
    printcolumn = r#"{"name":"GPU Limit","type":"string","jsonPath":".spec.gpu.limit"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocatedGpus"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pendingGangs"}"#,
    printcolumn = r#"{"name":"Share","type":"string","jsonPath":".status.share"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Parent queue (unset: a top-level queue). Only queues without children hold workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Whole GPUs (`nvidia.com/gpu`), optionally narrowed per GPU product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuQuota>,
    /// CPU (quantities such as `64` or `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceQuota>,
    /// Memory (quantities such as `256Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceQuota>,
}

/// One resource's quota. Unset `guaranteed` is 0, unset `limit` is no limit, unset `weight`
/// is 1, unset `reclaimable` is true.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuota {
    /// Always available to this queue; lent to other queues while idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub guaranteed: Option<Quantity>,
    /// The most this queue may hold, what it borrows included (at least `guaranteed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub limit: Option<Quantity>,
    /// Share of what is left over after every guarantee, relative to sibling queues (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: Option<u32>,
    /// Whether what this queue lends is taken back (borrowers preempted) when it needs it;
    /// false: lent resources come back only as borrowers finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimable: Option<bool>,
}

/// GPUs: the queue's quota over all products, and optionally per product.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuQuota {
    /// Always available to this queue; lent to other queues while idle (whole GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub guaranteed: Option<Quantity>,
    /// The most GPUs this queue may hold, what it borrows included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub limit: Option<Quantity>,
    /// Share of the GPUs left over after every guarantee, relative to sibling queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: Option<u32>,
    /// Whether GPUs this queue lends are taken back when it needs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimable: Option<bool>,
    /// Per GPU product, matched to nodes by the label `nvidia.com/gpu.product`; unset fields
    /// inherit from the GPU quota above (guarantee and limit: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<GpuProductQuota>,
}

/// GPUs of one product (the node label `nvidia.com/gpu.product`, e.g. `NVIDIA-H100-80GB-HBM3`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuProductQuota {
    /// Value of the node label `nvidia.com/gpu.product`.
    #[schemars(length(min = 1))]
    pub product: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub guaranteed: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub limit: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimable: Option<bool>,
}

/// Written by the scheduler. Resource maps are keyed by resource name (`nvidia.com/gpu`, `cpu`,
/// `memory`; one product's GPUs as `nvidia.com/gpu/<product>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// What the queue's running gangs hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub allocated: BTreeMap<String, Quantity>,
    /// Its guarantee as planned (a parent's at least the sum of its children's; Volcano's
    /// `deserved`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub guaranteed: BTreeMap<String, Quantity>,
    /// Held beyond the queue's guarantee, from other queues' idle guarantees or the pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub borrowed: BTreeMap<String, Quantity>,
    /// Of the queue's guarantee, what other queues hold now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub lent: BTreeMap<String, Quantity>,
    /// What the queue is entitled to now: its guarantee plus its weighted part of the rest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub fair_share: BTreeMap<String, Quantity>,
    /// Whole GPUs allocated (the `Allocated` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_gpus: Option<i64>,
    #[serde(default)]
    pub pending_gangs: i32,
    #[serde(default)]
    pub running_gangs: i32,
    /// The queue's fair share of the cluster's GPUs now, a decimal fraction such as `0.25`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Why the queue cannot be used as written (e.g. a bad quantity), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Valid` (False: the object is not used as written, with why) and `BelowGuarantee`
    /// (True: it holds less than its guarantee while its gangs wait).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::podgroup::PodGroupCondition>,
}

const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A compact int-or-string quantity (Kubernetes' own CRDs add `anyOf: [integer, string]`,
/// which kube's structural rewrite empties).
fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true
    })
}

fn quantity_map_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": quantity_schema(g)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn queue_is_cluster_scoped_with_status_and_columns() {
        let crd = Queue::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.metadata.name.as_deref(), Some("queues.muster.dev"));
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        for want in [
            ("GPUs Guaranteed", ".spec.gpu.guaranteed"),
            ("GPU Limit", ".spec.gpu.limit"),
            ("Allocated", ".status.allocatedGpus"),
            ("Pending", ".status.pendingGangs"),
            ("Share", ".status.share"),
        ] {
            assert!(cols.contains(&want), "{want:?} not in {cols:?}");
        }
    }

    #[test]
    fn queue_yaml_reads_with_numbers_or_strings_and_ignores_unknown_fields() {
        let q: Queue = serde_yaml::from_str(
            r#"
apiVersion: muster.dev/v1alpha1
kind: Queue
metadata: {name: team-a}
spec:
  parent: research
  futureField: 1
  gpu:
    guaranteed: 8
    limit: "16"
    weight: 2
    products:
      - {product: NVIDIA-H100-80GB-HBM3, guaranteed: 4}
  cpu: {guaranteed: 500m}
  memory: {limit: 1Ti, reclaimable: false}
"#,
        )
        .unwrap();
        let gpu = q.spec.gpu.as_ref().unwrap();
        assert_eq!(gpu.guaranteed, Some(Quantity("8".into())));
        assert_eq!(gpu.limit, Some(Quantity("16".into())));
        assert_eq!(gpu.products[0].product, "NVIDIA-H100-80GB-HBM3");
        assert_eq!(q.spec.parent.as_deref(), Some("research"));
        assert_eq!(q.spec.memory.as_ref().unwrap().reclaimable, Some(false));
    }
}
