//! Command line: `muster-bench <scenario> [options]`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::competitors::Competitor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N gangs of k pods submitted at once, for each k in --sizes: pods/s, p50/p99 time-to-bind.
    Throughput,
    /// More gang demand than GPUs, members interleaved: partially placed gangs over time, GPU
    /// allocation, time until every gang ran.
    Contention,
    /// A high-priority gang arriving in a full cluster: time until it runs, pods evicted.
    Preemption,
    /// A slice of the Philly trace replayed at speed: GPU allocation, stranded GPUs.
    Fragmentation,
    /// A small, fast check of every scheduler (the test suite runs it).
    Smoke,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Contention => "contention",
            Scenario::Preemption => "preemption",
            Scenario::Fragmentation => "fragmentation",
            Scenario::Smoke => "smoke",
        }
    }
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "muster-bench",
    about = "Runs one benchmark scenario against several schedulers on fresh kwok clusters and writes JSON plus an SVG plot"
)]
pub struct Args {
    pub scenario: Scenario,
    /// kwok nodes (DGX A100 fixture: 8 GPUs each).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Comma-separated: plain, native, coscheduling, muster. Default: all four (coscheduling is
    /// skipped with a note when its binary is not built and cannot be, e.g. without Go).
    #[arg(long, value_delimiter = ',')]
    pub schedulers: Option<Vec<Competitor>>,
    /// Repetitions per scheduler (a fresh cluster each); medians are reported.
    #[arg(long, default_value_t = 1)]
    pub reps: u32,
    /// Gangs per run (scenario-specific default).
    #[arg(long)]
    pub gangs: Option<usize>,
    /// Pods per gang (contention, preemption); throughput takes --sizes.
    #[arg(long)]
    pub size: Option<usize>,
    /// Throughput: gang sizes to measure, each with --pods pods in total.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub sizes: Vec<usize>,
    /// Throughput: pods per gang size (rounded down to whole gangs).
    #[arg(long, default_value_t = 1024)]
    pub pods: usize,
    /// Client QPS of every scheduler (burst is twice this).
    #[arg(long, default_value_t = 1000)]
    pub qps: u32,
    /// Seconds a gang runs once all its members are bound before the benchmark deletes it
    /// (contention, fragmentation).
    #[arg(long)]
    pub run_seconds: Option<f64>,
    /// Give up on a run after this many seconds of waiting (reported as not finished).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Fragmentation: Philly trace file (read in place).
    #[arg(long, default_value = "../shared/traces/philly-jobs.csv")]
    pub trace: PathBuf,
    /// Fragmentation: jobs taken from the trace.
    #[arg(long, default_value_t = 300)]
    pub jobs: usize,
    /// Fragmentation: trace seconds per benchmark second.
    #[arg(long, default_value_t = 600.0)]
    pub speedup: f64,
    /// Output directory for <scenario>.json and <scenario>.svg.
    #[arg(long, default_value = "out/bench")]
    pub out: PathBuf,
    /// Also copy the SVG plots into docs/img/.
    #[arg(long)]
    pub publish: bool,
    /// Use the debug build of muster-scheduler (tests); default the release build.
    #[arg(long)]
    pub debug_extender: bool,
    /// Skip coscheduling (with a note) when its binary is not built yet, instead of building
    /// it (a cold Go build takes 10-15 minutes).
    #[arg(long)]
    pub skip_unbuilt: bool,
    /// Keep cluster directories (logs) after each run.
    #[arg(long)]
    pub keep: bool,
}
