//! Muster's trace simulator: replays a job trace, or a seeded Philly-like synthetic workload,
//! through the placement core (`muster`) and two baselines (`fifo`, `greedy`) on a simulated
//! cluster, and reports job completion times, queueing, allocation, fragmentation, preemptions
//! and partial placements. With `--queues` / `--queue-file`, also the core with queues
//! (`muster-queues`, `muster-hard-quota`) and per-queue metrics for every policy (`queues`).
//!
//! Layout: `workload` makes jobs, `topo` the cluster, `engine` runs events through a
//! `policies::Policy`, `slowdown` turns placement quality into run time, `metrics` measures,
//! `report` prints the table and writes JSON and the SVG plot.

pub mod classes;
pub mod cli;
pub mod engine;
pub mod metrics;
pub mod policies;
pub mod queues;
pub mod report;
pub mod rng;
pub mod run;
pub mod slowdown;
pub mod topo;
pub mod workload;

pub use cli::Args;
pub use run::{Results, RunError, run};
