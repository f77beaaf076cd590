//! A fake `libnvidia-ml.so` for tests and demos, driven by Muster's machine fixtures.
//!
//! Load the built `cdylib` (`target/<profile>/libmuster_fake_nvml.so`) wherever NVML is expected,
//! e.g. `Nvml::builder().lib_path(..)`. It exports the symbols nvml-wrapper 0.13 calls for
//! inventory, metrics, topology and XID events, with the struct layouts of nvml-wrapper-sys 0.10.
//!
//! Configuration is read at the first `nvmlInit` (see [`state`]):
//! - `MUSTER_FAKE_NVML_FIXTURE`: built-in fixture name or JSON path. Unset: init fails with
//!   `DRIVER_NOT_LOADED`; unreadable or invalid: `UNKNOWN`, with the reason on stderr.
//! - `MUSTER_FAKE_NVML_NODE`: node name; GPU UUIDs become `MachineSpec::for_node(node)`'s, the
//!   same the scheduler and the kwok nodes derive.
//! - `MUSTER_FAKE_NVML_TIME_SCALE`: fixture seconds per real second, to speed scripts up.
//! - `MUSTER_FAKE_NVML_WAIT_ERROR_AFTER`: fixture time from which event waits fail.
//!
//! The fixture `script` is replayed against time since init: metrics changes, XIDs delivered by
//! `nvmlEventSetWait_v2`, and `lost` GPUs answering `GPU_IS_LOST` to every device call.
//!
//! Topology: on direct-NVLink machines an `NV#` pair is # links of each GPU whose remote PCI
//! address is the peer's; on NVSwitch machines each GPU has `nvlinksPerGpu` active links to fake
//! switches (their own PCI addresses, remote type `SWITCH`). The PCIe common ancestor is the
//! matrix level, and for NVLinked pairs NODE (same NUMA node) or SYS.
//!
//! Every export null-checks its pointers, rejects unknown handles with `INVALID_ARGUMENT` and
//! never unwinds into the caller.

// Matching on NVML's C constants (bindgen names) is the point of this crate.
#![allow(non_upper_case_globals)]

pub mod device;
pub mod events;
pub mod ffi;
pub mod machine;
pub mod state;
pub mod system;
pub mod topology;
