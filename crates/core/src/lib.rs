//! Muster's placement core (layer 2): pure, synchronous, deterministic.
//!
//! A [`Cluster`] holds nodes, the pods placed on them and what is free; [`Cluster::plan`] takes
//! the pending gangs and returns a [`Plan`]: placements (whole gangs, topology-aware GPU
//! choice), preemptions (whole lower-priority victim gangs) and reasons for every gang that
//! waits. No I/O, no async, no clock: time is an input.

pub mod cluster;
mod equivalence;
pub mod explain;
mod fit_index;
pub mod gpu_choice;
pub mod model;
pub mod order;
mod placement;
pub mod planner;
mod preemption;
pub mod queues;
mod shortfall;
mod static_fit;

pub use cluster::{Cluster, ClusterError, DEFAULT_QUEUE};
pub use explain::WaitReason;
pub use model::{
    FIELD_NODE_NAME, Gang, GangKey, GpuInfo, LabelRequirement, NodeInfo, PlacedPod, PodId,
    PodRequest, Resources, Taint, TaintEffect, Toleration,
};
pub use order::{GangOrder, OrderRank};
pub use placement::Assignment;
pub use planner::{GangPlacement, Plan, PlannerConfig, Preemption, Victim, Waiting};
pub use queues::{
    QueueError, QueueSpec, QueueStatus, QueueTree, QueueWait, QuotaSpec, Resource as QueueResource,
};
