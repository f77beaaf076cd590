//! The scenarios. Each runs every scheduler `reps` times, each time on a fresh cluster with
//! the same pods, and fills the report.

pub mod contention;
pub mod fragmentation;
pub mod preemption;
pub mod smoke;
pub mod throughput;

use std::time::{Duration, Instant};

use anyhow::Result;
use kube::Client;
use serde_json::{Value, json};

use crate::cli::Args;
use crate::competitors::{Binaries, Competitor, Running, StartOptions};
use crate::measure::{Sample, Tracker};
use crate::report::Report;
use crate::workload::{Gang, delete_gang};

pub const GPUS_PER_NODE: u32 = 8;

/// Everything a scenario needs.
pub struct Ctx {
    pub args: Args,
    pub bins: Binaries,
    pub schedulers: Vec<Competitor>,
    pub report: Report,
}

impl Ctx {
    pub fn start_options(&self, nodes: u32) -> StartOptions {
        StartOptions {
            nodes,
            qps: self.args.qps,
            keep: self.args.keep,
        }
    }

    /// A fresh cluster for `c`, logging progress.
    pub async fn start(&self, c: Competitor, nodes: u32, rep: u32) -> Result<Running> {
        eprintln!(
            "== {} (rep {}/{}): starting a cluster with {nodes} nodes",
            c.name(),
            rep + 1,
            self.args.reps
        );
        let started = Instant::now();
        let r = Running::start(c, &self.bins, &self.start_options(nodes)).await?;
        eprintln!(
            "   ready in {:.1}s (nodes {:.1}s); cluster dir {}",
            started.elapsed().as_secs_f64(),
            r.nodes_ready_seconds,
            r.cluster.dir().display()
        );
        Ok(r)
    }
}

/// Deletes gangs that have run their time (the benchmark plays the job runtime: a gang runs
/// only once whole, and finishes `run_seconds` later).
pub fn reap(tracker: &Tracker, client: &Client, ns: &str) {
    for idx in tracker.due(Instant::now()) {
        tracker.finish(idx);
        let gang: Option<Gang> = tracker.lock().gangs.get(idx).map(|g| g.gang.clone());
        if let Some(gang) = gang {
            let client = client.clone();
            let ns = ns.to_string();
            tokio::spawn(async move { delete_gang(&client, &ns, &gang).await });
        }
    }
}

/// Waits until `done`, reaping finished gangs meanwhile; returns whether it held in time.
/// Gives up early when nothing changed (pods bound, gangs completed) for `stall`: a deadlock.
pub async fn wait_reaping(
    running: &mut Running,
    tracker: &Tracker,
    ns: &str,
    timeout: Duration,
    stall: Duration,
    done: impl Fn(&crate::measure::State) -> bool,
) -> Result<bool> {
    let client = running.client();
    let started = Instant::now();
    let mut last = (usize::MAX, usize::MAX);
    let mut last_change = Instant::now();
    loop {
        reap(tracker, &client, ns);
        let now = {
            let st = tracker.lock();
            if done(&st) {
                return Ok(true);
            }
            (st.bound_pods(), st.completed_gangs())
        };
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall {
            eprintln!(
                "   no progress for {}s ({} pods bound, {} gangs ran): giving up",
                stall.as_secs(),
                now.0,
                now.1
            );
            return Ok(false);
        }
        running.check_alive()?;
        if started.elapsed() > timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (t, y) points of a sample field, for plots.
pub fn series(samples: &[Sample], t0: f64, f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    samples.iter().map(|s| (s.t - t0, f(s))).collect()
}

/// Compact time series for the JSON: [[t, bound_pods, allocated_gpus, partial_gangs,
/// stranded_gpus, completed_gangs, fragment_gpus], ...].
pub fn series_json(samples: &[Sample], t0: f64) -> Value {
    json!({
        "columns": ["t", "bound_pods", "allocated_gpus", "partial_gangs", "stranded_gpus", "completed_gangs", "fragment_gpus"],
        "rows": samples.iter().map(|s| json!([
            ((s.t - t0) * 10.0).round() / 10.0, s.bound_pods, s.allocated_gpus, s.partial_gangs,
            s.stranded_gpus, s.completed_gangs, s.fragment_gpus
        ])).collect::<Vec<_>>(),
    })
}

/// Muster's extender latency quantiles and counters from /metrics (empty for others).
pub async fn extender_stats(running: &Running) -> Value {
    let Some(m) = running.extender_metrics().await else {
        return Value::Null;
    };
    let q = |verb: &str, q: f64| crate::measure::extender_quantile_ms(&m, verb, q);
    // The extender's memory (goal: per 1,000 nodes and per 10,000 pods, issue #18).
    let (peak, now) = running
        .side
        .as_ref()
        .and_then(|p| p.memory())
        .map_or((Value::Null, Value::Null), |(peak, now)| {
            (json!(peak / (1 << 20)), json!(now / (1 << 20)))
        });
    json!({
        "rss_at_start_mib": running.rss_at_start_mib,
        "rss_peak_mib": peak,
        "rss_mib": now,
        "filter_p99_ms": q("filter", 0.99),
        "prioritize_p99_ms": q("prioritize", 0.99),
        "bind_p50_ms": q("bind", 0.5),
        "bind_p99_ms": q("bind", 0.99),
        "evictions": crate::measure::metric_sum(&m, "muster_evictions_total"),
        "barrier_timeouts": crate::measure::metric_sum(&m, "muster_bind_barrier_timeouts_total"),
        "nominations": crate::measure::metric_by_labels(&m, "muster_nominations_total"),
        "dropped_plans": crate::measure::metric_by_labels(&m, "muster_dropped_plans_total"),
        "gang_attempts": crate::measure::metric_by_labels(&m, "muster_gang_scheduling_attempts_total"),
        "fast_placements": crate::measure::metric_sum(&m, "muster_fast_placements_total"),
        "filter_calls": crate::measure::metric_sum(&m, "muster_extender_request_duration_seconds_count{verb=\"filter\"}"),
    })
}

pub fn max_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).fold(0.0, f64::max)
}

pub fn mean_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(f).sum::<f64>() / samples.len() as f64
}

/// Runs `c` only when chosen; returns the schedulers in a fixed order.
pub fn ordered(schedulers: &[Competitor]) -> Vec<Competitor> {
    let mut v = schedulers.to_vec();
    v.sort();
    v.dedup();
    v
}
