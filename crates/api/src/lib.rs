//! Layer 1 of Muster: the contracts every component shares.
//!
//! - [`access`]: the API calls each binary makes (its RBAC is checked against them).
//! - [`gate`]: the admission policy that holds gang members out of kube-scheduler until planned.
//! - [`names`]: well-known labels, annotations, resource and scheduler names.
//! - [`scheduler_names`]: which `spec.schedulerName`s are Muster's (configurable).
//! - [`topology`]: the GPU link model (NVLink counts and PCIe levels, in the `nvidia-smi topo -m`
//!   legend) and its scores.
//! - [`machines`]: machine fixtures describing real GPU servers, shared by the fake NVML, the
//!   simulated (kwok) nodes and the scheduler's fallback when no `GpuNode` is published.

pub mod access;
pub mod gate;
pub mod machines;
pub mod names;
pub mod scheduler_names;
pub mod topology;

pub use scheduler_names::SchedulerNames;
pub use topology::{Link, LinkMatrix, PcieLevel, TopologyError};
