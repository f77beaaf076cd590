//! The extender's HTTP surface: filter, prioritize, preempt and bind, plus /metrics, /healthz
//! and /readyz.

pub mod server;
pub mod types;
