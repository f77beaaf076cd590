//! Muster's custom resources and the gang kinds of other schedulers that it accepts.
//!
//! - [`PodGroup`] (`muster.dev/v1alpha1`): Muster's own gang.
//! - [`GpuNode`] (`muster.dev/v1alpha1`, cluster-scoped): one per node, published by the node
//!   agent: GPUs, health and the link matrix.
//! - [`Queue`] (`muster.dev/v1alpha1`, cluster-scoped): a tenant's guaranteed share, limit and
//!   weight per resource, in a hierarchy.
//! - [`compat`]: read-only views of scheduler-plugins' and Volcano's PodGroups and Volcano's Queue.
//! - [`queue_spec`]: Muster's and Volcano's Queues as one [`queue_spec::QueueDefinition`].
//! - [`quantity`]: exact Kubernetes quantity parsing.

pub mod compat;
mod gpunode;
mod podgroup;
pub mod quantity;
mod queue;
mod queue_error;
pub mod queue_spec;

pub use gpunode::{GpuNode, GpuNodeGpu, GpuNodeSpec, GpuUsage, MigDevice};
pub use podgroup::{PodGroup, PodGroupCondition, PodGroupPhase, PodGroupSpec, PodGroupStatus};
pub use quantity::QuantityError;
pub use queue::{GpuProductQuota, GpuQuota, Queue, QueueSpec, QueueStatus, ResourceQuota};

use kube::CustomResourceExt;

/// Every CRD Muster installs, as YAML documents (what `muster-crdgen` writes to the chart).
pub fn crd_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    Ok(vec![
        (
            "podgroups.muster.dev.yaml".into(),
            serde_yaml::to_string(&PodGroup::crd())?,
        ),
        (
            "gpunodes.muster.dev.yaml".into(),
            serde_yaml::to_string(&GpuNode::crd())?,
        ),
        (
            "queues.muster.dev.yaml".into(),
            serde_yaml::to_string(&Queue::crd())?,
        ),
    ])
}
