//! Muster's kubelet device plugin for whole GPUs (`nvidia.com/gpu`, API `v1beta1`).
//!
//! The kubelet picks which device IDs a container gets; this plugin makes that pick the one the
//! Muster scheduler planned (the `muster.dev/gpu-ids` annotation on the bound pod), and falls back
//! to a topology-aware choice of its own for pods the scheduler did not annotate.
//!
//! ```text
//!   NVML (muster-gpu-inventory) ──► devices  ◄── health (XID watcher thread, bridged to tokio)
//!                                      │ watch channel: one list, every ListAndWatch stream
//!   kube watch of this node's pods ──► pods::PodStore ──┐
//!                                                       ▼
//!   kubelet ──gRPC──► server (DevicePlugin) ──► allocator (annotation match | best_gpu_set,
//!      ▲                                          ledger of GPUs held by live pods)
//!      └── registration (serve, Register, watch own socket, re-serve + re-register)
//! ```
//!
//! - [`devices`]: the advertised GPU list and its health, shared through a `watch` channel.
//! - [`health`]: bridges the inventory's blocking XID watcher into [`devices`].
//! - [`pods`]: what the plugin knows of pods on its node ([`pods::PodStore`]), fed by a kube
//!   watch ([`pods::kube`]) or, in tests, directly.
//! - [`allocator`]: `GetPreferredAllocation` and `Allocate` decisions; no gRPC, no I/O.
//! - [`server`]: the tonic `DevicePlugin` service and unix-socket plumbing.
//! - [`registration`]: the serve → register → watch-socket lifecycle.
//! - [`metrics`]: Prometheus metrics, `/metrics` and `/healthz`.
//! - [`plugin`]: wires it all together ([`plugin::Plugin::start`]).
//! - [`fake_kubelet`]: the kubelet's device manager, faked for tests.

pub mod access;
pub mod allocator;
pub mod config;
pub mod devices;
pub mod fake_kubelet;
pub mod health;
pub mod metrics;
pub mod plugin;
pub mod pods;
pub mod proto;
pub mod registration;
pub mod server;

pub use config::PluginConfig;
pub use plugin::{Plugin, PluginHandle};
