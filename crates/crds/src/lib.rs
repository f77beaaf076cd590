//! Muster's custom resources and the gang kinds of other schedulers that it accepts.
//!
//! - [`PodGroup`] (`muster.dev/v1alpha1`): Muster's own gang.
//! - [`GpuNode`] (`muster.dev/v1alpha1`, cluster-scoped): one per node, published by the node
//!   agent: GPUs, health and the link matrix.
//! - [`compat`]: read-only views of scheduler-plugins' and Volcano's PodGroups.

pub mod compat;
mod gpunode;
mod podgroup;

pub use gpunode::{GpuNode, GpuNodeGpu, GpuNodeSpec, GpuUsage, MigDevice};
pub use podgroup::{PodGroup, PodGroupCondition, PodGroupPhase, PodGroupSpec, PodGroupStatus};

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
    ])
}
