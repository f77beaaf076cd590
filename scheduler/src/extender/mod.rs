//! The extender's HTTP surface: filter, prioritize, preempt and bind on one listener
//! (loopback, or mutual TLS), /metrics, /healthz and /readyz on another.

pub mod listen;
pub mod server;
pub mod tls;
pub mod types;
