//! Muster's node agent (a DaemonSet): reads the node's GPUs through NVML and
//!
//! - publishes one cluster-scoped `GpuNode` and GPU Feature Discovery-compatible Node labels by
//!   server-side apply, on change and on a heartbeat ([`publish`]);
//! - serves DCGM exporter-compatible metrics plus Muster's own on `/metrics` ([`metrics`]),
//!   attributing GPUs to pods through the kubelet pod-resources API ([`podresources`]).
//!
//! [`agent::run`] wires it together; [`view::NodeView`] is the state everything is derived from.

pub mod access;
pub mod agent;
pub mod config;
pub mod metrics;
pub mod podresources;
pub mod publish;
pub mod view;

pub use config::Config;
