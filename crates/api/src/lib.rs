//! Layer 1 of Muster: the contracts every component shares.
//!
//! - [`names`]: well-known labels, annotations, resource and scheduler names.
//! - [`topology`]: the GPU link model (NVLink counts and PCIe levels, in the `nvidia-smi topo -m`
//!   legend) and its scores.
//! - [`machines`]: machine fixtures describing real GPU servers, shared by the fake NVML, the
//!   simulated (kwok) nodes and the scheduler's fallback when no `GpuNode` is published.

pub mod machines;
pub mod names;
pub mod topology;

pub use topology::{Link, LinkMatrix, PcieLevel, TopologyError};
