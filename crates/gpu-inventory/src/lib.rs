//! GPU inventory over NVML (`nvml-wrapper`), for the node agent and the device plugin.
//!
//! - [`Inventory::open`] loads NVML from a configurable path; a node without a driver is
//!   [`Discovery::NoDriver`], not an error.
//! - [`Inventory::snapshot`]: the slow inventory (identity, memory, PCI, NUMA, MIG, versions and
//!   the pairwise [`muster_api::LinkMatrix`], computed once at open).
//! - [`Inventory::sample`]: the cheap per-tick metrics (utilization, memory, temperature, power,
//!   energy, SM clock, compute processes).
//! - [`Inventory::watch_health`]: the XID health watcher thread ([`health`]).
//!
//! NVML failures are [`InventoryError`]s naming the call and the GPU; nothing here panics on NVML
//! input. Tests run against the fake `libnvidia-ml.so` of `tests/fake-nvml`.

pub mod error;
pub mod health;
pub mod inventory;
pub mod topology;
pub mod types;

pub use error::InventoryError;
pub use health::{
    APPLICATION_XIDS, GpuHealthState, HealthCause, HealthEvent, HealthWatcher, WatchConfig,
};
pub use inventory::{DEFAULT_LIB, Discovery, Inventory};
pub use types::*;
