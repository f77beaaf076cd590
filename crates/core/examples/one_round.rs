//! One planning round over the placement bench's scene, for profilers that count instructions
//! (`valgrind --tool=callgrind`), which see through this machine's timing noise:
//! `cargo run --release -p muster-core --example one_round -- 10000`.

#[path = "../benches/common/mod.rs"]
mod common;

/// The allocator of the binaries that run the core (`muster-scheduler`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use muster_core::PlannerConfig;
use std::hint::black_box;

fn main() {
    let pending: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let cluster = common::cluster(0.5);
    let gangs = common::pending(pending);
    let (placed, waiting) = round(&cluster, &gangs);
    println!("{pending} pending: {placed} placed, {waiting} waiting");
}

/// Kept out of line so that `--toggle-collect=*one_round::round*` counts only the round
/// (freeing its plan included, as the bench's iterations do).
#[inline(never)]
fn round(cluster: &muster_core::Cluster, gangs: &[muster_core::Gang]) -> (usize, usize) {
    let plan = black_box(cluster.plan(black_box(gangs), 0, &PlannerConfig::default()));
    (plan.placements.len(), plan.waiting.len())
}
