//! Command-line options (also the library's run configuration, so tests use the same flags).

use clap::Parser;
use std::path::PathBuf;

/// Replays a GPU job trace (or a seeded Philly-like synthetic workload) on a simulated cluster
/// under Muster's placement core and two baselines, and compares them.
#[derive(Clone, Debug, Parser)]
#[command(name = "muster-sim", version)]
pub struct Args {
    /// Philly trace to replay (`philly-jobs.csv` or a Pollux `philly-workload-*.csv` sample);
    /// without it a synthetic workload is generated.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Part of the trace to replay, as offsets from its first submission: `30d..32d`, `12h..`.
    #[arg(long, value_name = "START..[END]")]
    pub window: Option<String>,
    /// Synthetic: number of jobs [default: 20000]. Trace: at most this many jobs from the window's start.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Trace: multiply arrival times by this (0.5 replays twice as fast, doubling the load).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub time_scale: f64,
    /// Trace: skip malformed rows (with a warning) instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Seed of the synthetic workload, of the high-priority draw and of trace-sample durations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Synthetic: average offered load on the cluster (work / capacity over the arrival span).
    #[arg(long, default_value_t = 0.9)]
    pub load: f64,
    /// Synthetic: multiply the frequency of every multi-GPU gang size (1 = Philly's mix; 10
    /// makes about 40 % of jobs gangs).
    #[arg(long, default_value_t = 1.0)]
    pub gang_weight: f64,
    /// Number of nodes.
    #[arg(long, default_value_t = 64)]
    pub nodes: usize,
    /// Machine fixture of every node (dgx-a100, dgx-h100, dgx1-v100, l4-pcie-2s, a100-pcie-mig,
    /// gb200-nvl72) or a fixture JSON path; sets GPUs per node and their links.
    #[arg(long, default_value = "dgx-a100")]
    pub topology: String,
    /// Check that the topology has this many GPUs per node (it comes from the fixture).
    #[arg(long)]
    pub gpus_per_node: Option<u32>,
    /// Split nodes into this many racks (NVLink domains / rack labels) of consecutive nodes.
    #[arg(long)]
    pub racks: Option<usize>,
    /// Fraction of jobs with high priority (they may preempt under `muster`).
    #[arg(long, default_value_t = 0.05)]
    pub high_priority: f64,
    /// Policies to compare, comma-separated [default: muster,easy,tiresias,fifo,greedy; with
    /// queues also muster-queues,muster-hard-quota, first].
    #[arg(long, value_delimiter = ',')]
    pub policies: Option<Vec<String>>,
    /// Queues: `vc` makes every virtual cluster a queue under one root, guaranteed GPUs in
    /// proportion to its demand (summing to the cluster's GPUs), no limit, weight 1.
    #[arg(long, value_name = "MODE", conflicts_with = "queue_file")]
    pub queues: Option<String>,
    /// Queues from a YAML or JSON list of {name, guaranteed, limit, weight} (GPUs); jobs of
    /// virtual clusters not listed go to a `default` queue.
    #[arg(long, value_name = "PATH")]
    pub queue_file: Option<PathBuf>,
    /// muster-queues, muster-hard-quota: gangs from the head of the queue planned per cycle;
    /// 0: the whole queue. `muster` always plans the whole queue.
    #[arg(long, value_name = "K", default_value_t = 256)]
    pub plan_window: usize,
    /// muster: seconds a blocked gang waits before it reserves nodes.
    #[arg(long, default_value_t = 1800)]
    pub reserve_after: u64,
    /// muster: gangs that may hold reservations at once.
    #[arg(long, default_value_t = 1)]
    pub max_reservations: usize,
    /// muster: order among gangs of equal priority, `response-ratio` (highest (waited +
    /// declared run time) / declared run time first) or `arrival` (oldest first).
    #[arg(long, default_value = "response-ratio")]
    pub order: muster_core::GangOrder,
    /// muster: disable preemption.
    #[arg(long)]
    pub no_preemption: bool,
    /// Run times jobs declare (a Job's `activeDeadlineSeconds`), read by backfilling (easy,
    /// muster): `exact` (each its ideal run time), `none`, or a factor F >= 1 (F times it).
    #[arg(long, default_value = "exact", value_name = "exact|none|F")]
    pub declared_runtimes: String,
    /// Preempted jobs resume from a checkpoint taken every this many seconds of work
    /// (0 = restart from scratch).
    #[arg(long, default_value_t = 1800)]
    pub checkpoint_every: u64,
    /// Stop each policy this many simulated days after the last arrival, finished or not.
    #[arg(long, default_value_t = 90.0)]
    pub drain_days: f64,
    /// Where to write summary.json and allocation.svg.
    #[arg(long, default_value = "out/sim")]
    pub out: PathBuf,
    /// Run the policies one after another instead of on parallel threads.
    #[arg(long)]
    pub sequential: bool,
}

impl Args {
    pub fn declared_runtimes(&self) -> Result<crate::engine::DeclaredRuntimes, crate::RunError> {
        crate::engine::DeclaredRuntimes::parse(&self.declared_runtimes)
            .map_err(crate::RunError::Option)
    }

    pub fn has_queues(&self) -> bool {
        self.queues.is_some() || self.queue_file.is_some()
    }

    /// `--policies`, or the default for the run (queue policies first when it has queues).
    pub fn policy_names(&self) -> Vec<String> {
        match &self.policies {
            Some(p) => p.clone(),
            None if self.has_queues() => crate::policies::ALL.map(String::from).to_vec(),
            None => crate::policies::DEFAULT.map(String::from).to_vec(),
        }
    }
}

impl Default for Args {
    fn default() -> Self {
        Args::parse_from(["muster-sim"])
    }
}
