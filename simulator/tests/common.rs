//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use clap::Parser;
use muster_sim::engine::{self, RunLimits};
use muster_sim::policies::{self, muster::MusterConfig};
use muster_sim::slowdown::SlowdownModel;
use muster_sim::topo::Topo;
use muster_sim::workload::Job;
use muster_sim::{Args, Results};

pub fn args(flags: &[&str]) -> Args {
    let mut all = vec!["muster-sim"];
    all.extend_from_slice(flags);
    Args::try_parse_from(all).unwrap()
}

pub fn run(flags: &[&str]) -> Results {
    muster_sim::run(&args(flags), &indicatif::ProgressBar::hidden()).unwrap()
}

/// The results as JSON without the wall-clock timings (the only non-deterministic part).
pub fn deterministic_json(r: &Results) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("timings");
    v
}

/// A priority-0 job of queue `q`.
pub fn job(id: usize, arrival: u64, duration: u64, gpus: u32) -> Job {
    Job {
        id,
        arrival,
        duration,
        gpus,
        queue: "q".into(),
        priority: 0,
    }
}

/// One policy over `jobs` with this configuration and these limits, default slowdowns.
pub fn run_policy(
    policy: &str,
    config: &MusterConfig,
    topo: &Topo,
    jobs: &[Job],
    limits: &RunLimits,
) -> engine::RunOutput {
    let mut p = policies::by_name(policy, config).unwrap();
    engine::run(
        p.as_mut(),
        topo,
        jobs,
        &SlowdownModel::default(),
        limits,
        || {},
    )
    .unwrap()
}
