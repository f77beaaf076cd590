//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use clap::Parser;
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
