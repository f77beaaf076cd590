//! Muster's scheduler: a kube-scheduler extender that places pod groups all-or-nothing.
//!
//! ```text
//! kube-scheduler ──HTTP──► extender::server ──► engine (plans, barrier) ──► muster-core
//!                                                  ▲            │
//!                                cache (watches) ──┘            └─► API server: bind, evict,
//!                                                                   PodGroup status, Events
//! ```

pub mod access;
pub mod cache;
pub mod config;
pub mod engine;
pub mod extender;
pub mod gang;
pub mod gang_index;
pub mod leader;
pub mod metrics;
pub mod pod_signals;
pub mod queues;
pub mod resources;
pub mod snapshot;
