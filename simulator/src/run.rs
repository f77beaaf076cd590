//! One simulator run: build the cluster and workload from the options, simulate every policy
//! on the same jobs, and gather the results.

use crate::cli::Args;
use crate::engine::{self, RunLimits, SimError};
use crate::metrics::{PolicyReport, Timing};
use crate::policies::{
    self,
    muster::{MusterConfig, QueueTrees},
};
use crate::queues::file::QueueFileError;
use crate::queues::{QueueMode, QueueSetup};
use crate::slowdown::SlowdownModel;
use crate::topo::{Topo, TopoError};
use crate::workload::philly::{TraceError, TraceWindow};
use crate::workload::synthetic::{self, SyntheticSpec};
use crate::workload::{HIGH_PRIORITY, Workload};
use indicatif::ProgressBar;
use muster_core::PlannerConfig;
use serde::Serialize;
use std::collections::BTreeMap;

/// Synthetic jobs by default: about 24 simulated days at load 0.9 on 512 GPUs, long enough
/// for the heavy-tailed Philly durations to fill the cluster (shorter runs never queue).
pub const DEFAULT_JOBS: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Topo(#[from] TopoError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    QueueFile(#[from] QueueFileError),
    #[error("queues: {0}")]
    Queues(#[from] muster_core::QueueError),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("a simulation thread panicked")]
    Panicked,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadSummary {
    pub source: String,
    pub jobs: usize,
    /// Jobs larger than the whole cluster, left out of every policy's run.
    pub dropped_too_large: usize,
    pub high_priority_jobs: usize,
    pub gpu_hours: f64,
    /// First to last arrival, seconds.
    pub arrival_span: u64,
    pub offered_load: f64,
    /// Jobs by gang size in GPUs.
    pub sizes: BTreeMap<u32, usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    pub topology: String,
    pub nodes: usize,
    pub gpus_per_node: u32,
    pub racks: usize,
    pub gpus: u64,
}

/// Everything one run produced. `timings` is wall-clock and varies between runs; the rest is
/// a deterministic function of the options.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub workload: WorkloadSummary,
    pub cluster: ClusterSummary,
    pub planner: PlannerConfig,
    /// Gangs planned per cycle; `None`: the whole queue.
    pub plan_window: Option<usize>,
    /// Preempted jobs resume from checkpoints taken this often (s); 0 = restart from scratch.
    pub checkpoint_every: u64,
    pub slowdown: SlowdownModel,
    pub policies: Vec<PolicyReport>,
    /// The queues every policy was measured by (and the queue policies scheduled by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<QueueSetup>,
    /// Allocation steps (time, GPUs) per policy, for the plot (not serialised).
    #[serde(skip)]
    pub series: Vec<(String, Vec<(u64, u32)>)>,
    /// The simulated jobs and, per policy, what happened to each (not serialised).
    #[serde(skip)]
    pub jobs: Vec<crate::workload::Job>,
    #[serde(skip)]
    pub outcomes: Vec<(String, Vec<engine::JobOutcome>)>,
    pub timings: Vec<Timing>,
}

fn check(args: &Args) -> Result<(), RunError> {
    let bad = |m: String| Err(RunError::Option(m));
    if !(args.load > 0.0 && args.load <= 10.0) {
        return bad(format!("--load must be in (0, 10], got {}", args.load));
    }
    if !(0.0..=1.0).contains(&args.high_priority) {
        return bad(format!(
            "--high-priority must be in [0, 1], got {}",
            args.high_priority
        ));
    }
    if !(args.time_scale > 0.0 && args.time_scale.is_finite()) {
        return bad(format!("--time-scale must be > 0, got {}", args.time_scale));
    }
    if !(args.drain_days >= 0.0 && args.drain_days.is_finite()) {
        return bad(format!(
            "--drain-days must be >= 0, got {}",
            args.drain_days
        ));
    }
    if !(args.gang_weight >= 0.0 && args.gang_weight.is_finite()) {
        return bad(format!(
            "--gang-weight must be >= 0, got {}",
            args.gang_weight
        ));
    }
    let names = args.policy_names();
    if names.is_empty() {
        return bad("--policies is empty".into());
    }
    for p in &names {
        if !policies::ALL.contains(&p.as_str()) {
            return bad(format!(
                "unknown policy {p:?}; choose from {}",
                policies::ALL.join(", ")
            ));
        }
        if policies::QUEUE_POLICIES.contains(&p.as_str()) && !args.has_queues() {
            return bad(format!("policy {p} needs --queues vc or --queue-file"));
        }
    }
    if let Some(mode) = &args.queues {
        QueueMode::parse(mode).map_err(RunError::Option)?;
    }
    Ok(())
}

pub fn workload(args: &Args, topo: &Topo) -> Result<Workload, RunError> {
    let mut w = match &args.trace {
        Some(path) => {
            let (start, end) = match &args.window {
                Some(text) => TraceWindow::parse_range(text)?,
                None => (0, None),
            };
            crate::workload::philly::load(
                path,
                &TraceWindow {
                    start,
                    end,
                    max_jobs: args.jobs,
                    time_scale: args.time_scale,
                    skip_bad_rows: args.skip_bad_rows,
                    seed: args.seed,
                },
            )?
        }
        None => {
            if args.window.is_some() {
                return Err(RunError::Option("--window needs --trace".into()));
            }
            let mut w = synthetic::generate(&SyntheticSpec {
                jobs: args.jobs.unwrap_or(DEFAULT_JOBS),
                seed: args.seed,
                load: args.load,
                cluster_gpus: topo.gpu_total(),
                max_gpus: u32::try_from(topo.gpu_total()).unwrap_or(u32::MAX),
                gang_weight: args.gang_weight,
            });
            w.normalise();
            w
        }
    };
    w.assign_priorities(args.high_priority, args.seed);
    Ok(w)
}

pub fn run(args: &Args, progress: &ProgressBar) -> Result<Results, RunError> {
    check(args)?;
    let topo = Topo::new(&args.topology, args.nodes, args.racks)?;
    if let Some(g) = args.gpus_per_node
        && g != topo.gpus_per_node
    {
        return Err(RunError::Option(format!(
            "--gpus-per-node {g}, but topology {} has {} GPUs per node",
            topo.machine, topo.gpus_per_node
        )));
    }
    let mut w = workload(args, &topo)?;
    let before = w.jobs.len();
    w.jobs.retain(|j| u64::from(j.gpus) <= topo.gpu_total());
    let dropped = before - w.jobs.len();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            gpus = topo.gpu_total(),
            "jobs larger than the cluster left out"
        );
        w.normalise();
    }
    let mut sizes = BTreeMap::new();
    for j in &w.jobs {
        *sizes.entry(j.gpus).or_default() += 1;
    }
    let summary = WorkloadSummary {
        source: w.source.clone(),
        jobs: w.jobs.len(),
        dropped_too_large: dropped,
        high_priority_jobs: w
            .jobs
            .iter()
            .filter(|j| j.priority >= HIGH_PRIORITY)
            .count(),
        gpu_hours: w.gpu_seconds() / 3600.0,
        arrival_span: w.span(),
        offered_load: w.offered_load(topo.gpu_total()),
        sizes,
    };
    tracing::info!(source = %summary.source, jobs = summary.jobs, load = summary.offered_load, "workload");
    let queues = queue_setup(args, &w, topo.gpu_total())?;
    let trees = match &queues {
        Some(q) => Some(QueueTrees {
            borrowing: std::sync::Arc::new(q.tree(false)?),
            hard: std::sync::Arc::new(q.tree(true)?),
        }),
        None => None,
    };
    let muster = MusterConfig {
        planner: PlannerConfig {
            reserve_after_secs: args.reserve_after,
            max_reservations: args.max_reservations,
            order: args.order,
            preemption: !args.no_preemption,
            ..PlannerConfig::default()
        },
        window: (args.plan_window > 0).then_some(args.plan_window),
        queues: trees,
        keep_hopeless: false,
    };
    let slowdown = SlowdownModel::default();
    let last_arrival = w.jobs.last().map_or(0, |j| j.arrival);
    let limits = RunLimits {
        time_bound: last_arrival + (args.drain_days * 86400.0) as u64,
        checkpoint_secs: args.checkpoint_every,
        metrics_until: last_arrival.max(1),
        declared: args.declared_runtimes()?,
    };
    let names = args.policy_names();
    progress.set_length((w.jobs.len() * 2 * names.len()) as u64);
    let jobs = &w.jobs;
    let one = |name: &str| -> Result<(engine::RunOutput, Timing), RunError> {
        let mut policy = policies::by_name(name, &muster)
            .ok_or_else(|| RunError::Option(format!("unknown policy {name:?}")))?;
        let began = std::time::Instant::now();
        let out = engine::run_with(
            policy.as_mut(),
            &topo,
            jobs,
            &slowdown,
            &limits,
            queues.as_ref(),
            || progress.inc(1),
        )?;
        let wall = began.elapsed();
        let cycles = out.report.cycles;
        let timing = Timing {
            policy: name.to_string(),
            wall_ms: wall.as_secs_f64() * 1e3,
            scheduling_ms: out.scheduling.as_secs_f64() * 1e3,
            cycles,
            us_per_cycle: out.scheduling.as_secs_f64() * 1e6 / cycles.max(1) as f64,
        };
        tracing::info!(
            policy = name,
            wall_ms = timing.wall_ms,
            cycles,
            "policy done"
        );
        Ok((out, timing))
    };
    let outputs: Vec<Result<(engine::RunOutput, Timing), RunError>> = if args.sequential {
        names.iter().map(|p| one(p)).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = names.iter().map(|p| s.spawn(|| one(p))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(RunError::Panicked)))
                .collect()
        })
    };
    progress.finish_and_clear();
    let jobs = w.jobs;
    let mut results = Results {
        workload: summary,
        cluster: ClusterSummary {
            topology: topo.machine.clone(),
            nodes: topo.names.len(),
            gpus_per_node: topo.gpus_per_node,
            racks: topo.racks,
            gpus: topo.gpu_total(),
        },
        planner: muster.planner.clone(),
        plan_window: muster.window,
        checkpoint_every: args.checkpoint_every,
        slowdown,
        policies: Vec::new(),
        queues: None,
        series: Vec::new(),
        jobs: Vec::new(),
        outcomes: Vec::new(),
        timings: Vec::new(),
    };
    for o in outputs {
        let (out, timing) = o?;
        results.series.push((out.report.policy.clone(), out.series));
        results.outcomes.push((out.report.policy.clone(), out.jobs));
        results.policies.push(out.report);
        results.timings.push(timing);
    }
    results.jobs = jobs;
    results.queues = queues;
    Ok(results)
}

/// The run's queues from `--queues` / `--queue-file`, over the jobs to simulate.
fn queue_setup(args: &Args, w: &Workload, gpus: u64) -> Result<Option<QueueSetup>, RunError> {
    if let Some(path) = &args.queue_file {
        let defs = crate::queues::file::load(path)?;
        let setup = QueueSetup::new(path.display().to_string(), defs, &w.jobs);
        let sum: u64 = setup.queues.iter().map(|q| q.guaranteed).sum();
        if sum > gpus {
            tracing::warn!(
                sum,
                gpus,
                "queue guarantees add up to more than the cluster"
            );
        }
        return Ok(Some(setup));
    }
    match args.queues.as_deref().map(QueueMode::parse).transpose() {
        Ok(Some(QueueMode::Vc)) => Ok(Some(QueueSetup::from_vcs(&w.jobs, gpus))),
        Ok(None) => Ok(None),
        Err(e) => Err(RunError::Option(e)),
    }
}
