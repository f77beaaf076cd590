//! Per-policy measurements: time integrals of cluster state and per-job outcomes.

use crate::engine::{Phase, Sim};
use crate::queues::track::QueueMetrics;
use crate::workload::HIGH_PRIORITY;
use serde::Serialize;

/// Average and percentiles of a sample (seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
}

impl Stats {
    pub fn of(values: &mut [f64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        values.sort_by(f64::total_cmp);
        let q = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        Stats {
            avg: values.iter().sum::<f64>() / values.len() as f64,
            p50: q(0.5),
            p95: q(0.95),
        }
    }
}

/// Cluster state between two events, integrated over time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// GPUs held by any pod (running or merely placed).
    pub allocated: u32,
    /// GPUs of running jobs.
    pub busy: u32,
    /// Free GPUs on nodes that also have used GPUs.
    pub stranded: u32,
    /// A whole-node request waits although at least a node's worth of GPUs is free.
    pub blocked: bool,
    /// GPUs held by partially placed jobs that cannot run yet.
    pub partial: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Integrals {
    /// Integrate only up to this second (see `RunLimits::metrics_until`).
    pub until: u64,
    pub start: Option<u64>,
    pub last: u64,
    pub allocated: f64,
    pub busy: f64,
    pub stranded: f64,
    pub blocked: f64,
    pub partial: f64,
    /// Allocation steps (time, GPUs allocated) for the plot.
    pub series: Vec<(u64, u32)>,
}

impl Integrals {
    pub fn until(until: u64) -> Integrals {
        Integrals {
            until,
            ..Integrals::default()
        }
    }

    /// Accounts `sample` as the state from the last call until `now`.
    pub fn advance(&mut self, now: u64, sample: &Sample) {
        let start = *self.start.get_or_insert(now);
        let dt = now
            .min(self.until)
            .saturating_sub(self.last.max(start).min(self.until)) as f64;
        self.allocated += dt * f64::from(sample.allocated);
        self.busy += dt * f64::from(sample.busy);
        self.stranded += dt * f64::from(sample.stranded);
        self.partial += dt * f64::from(sample.partial);
        if sample.blocked {
            self.blocked += dt;
        }
        self.last = now.max(self.last);
    }

    pub fn record(&mut self, now: u64, allocated: u32) {
        if self.series.last().map(|&(_, a)| a) != Some(allocated) {
            self.series.push((now, allocated));
        }
    }

    /// Length of the integrated interval.
    pub fn elapsed(&self) -> f64 {
        self.last
            .min(self.until)
            .saturating_sub(self.start.unwrap_or(0)) as f64
    }
}

/// What one policy achieved on the workload.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub jobs: usize,
    pub completed: usize,
    /// Not completed when the policy stopped (deadlock or time bound).
    pub unfinished: usize,
    /// Completion minus arrival, over completed jobs.
    pub jct: Stats,
    /// First start minus arrival, over jobs that started.
    pub queueing_delay: Stats,
    /// Queueing delay of high-priority jobs that started (average).
    pub high_priority_delay_avg: f64,
    /// Time-weighted share of GPUs held by pods (including partially placed, idle ones),
    /// over the arrival window like every time average here.
    pub allocation_ratio: f64,
    /// Time-weighted share of GPUs running jobs (useful work).
    pub busy_ratio: f64,
    /// First arrival to last completion (or to the stop).
    pub makespan: f64,
    /// Victim gangs evicted.
    pub preemptions: u64,
    /// GPU-hours of evicted runs since their last checkpoint.
    pub lost_gpu_hours: f64,
    /// Time-average of free GPUs stranded on partly used nodes.
    pub stranded_gpus_avg: f64,
    /// Share of time a whole-node request waited while a node's worth of GPUs was free.
    pub fragmentation_blocked: f64,
    /// Jobs that ever held some but not all of their pods.
    pub partial_jobs: usize,
    /// Time-average of GPUs held by partially placed jobs.
    pub partial_gpus_avg: f64,
    /// Average run-time factor of the slowdown model over started runs.
    pub slowdown_avg: f64,
    /// Runs slowed by a poor placement.
    pub slowed_runs: usize,
    pub deadlock: Option<Deadlock>,
    /// The policy was stopped by the time bound with work left.
    pub hit_time_bound: bool,
    /// Planning cycles run.
    pub cycles: u64,
    /// Gangs handed to the placement core, over all cycles (0 for the baselines).
    pub gangs_planned: u64,
    /// Per-queue results, when the run has queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<QueueMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Deadlock {
    /// Simulated second when no progress was possible any more.
    pub at: u64,
    /// Partially placed jobs that can never start.
    pub stuck_jobs: usize,
    /// GPUs they hold forever.
    pub held_gpus: u32,
}

/// Wall-clock cost of a policy's run (not part of the deterministic results).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timing {
    pub policy: String,
    pub wall_ms: f64,
    pub scheduling_ms: f64,
    pub cycles: u64,
    pub us_per_cycle: f64,
}

/// One policy's report from the state its run ended in.
pub(crate) fn summarise(
    sim: &Sim<'_>,
    integrals: &Integrals,
    cycles: u64,
    deadlock: Option<Deadlock>,
    hit_time_bound: bool,
) -> PolicyReport {
    let mut jct = Vec::new();
    let mut delay = Vec::new();
    let mut high_delay = Vec::new();
    let mut last_end = 0u64;
    for (j, rt) in sim.jobs.iter().zip(&sim.rt) {
        if let Phase::Done { end } = rt.phase {
            jct.push((end - j.arrival) as f64);
            last_end = last_end.max(end);
        }
        if let Some(s) = rt.first_start {
            delay.push((s - j.arrival) as f64);
            if j.priority >= HIGH_PRIORITY {
                high_delay.push((s - j.arrival) as f64);
            }
        }
    }
    let completed = jct.len();
    let elapsed = integrals.elapsed().max(1.0);
    let capacity = sim.topo.gpu_total() as f64 * elapsed;
    let end = if completed == sim.jobs.len() {
        last_end
    } else {
        integrals.last
    };
    let first = sim.jobs.first().map_or(0, |j| j.arrival);
    PolicyReport {
        policy: sim.policy.clone(),
        jobs: sim.jobs.len(),
        completed,
        unfinished: sim.jobs.len() - completed,
        jct: Stats::of(&mut jct),
        queueing_delay: Stats::of(&mut delay),
        high_priority_delay_avg: Stats::of(&mut high_delay).avg,
        allocation_ratio: integrals.allocated / capacity,
        busy_ratio: integrals.busy / capacity,
        makespan: end.saturating_sub(first) as f64,
        preemptions: sim.preemptions,
        lost_gpu_hours: sim.lost_gpu_seconds / 3600.0,
        stranded_gpus_avg: integrals.stranded / elapsed,
        fragmentation_blocked: integrals.blocked / elapsed,
        partial_jobs: sim.rt.iter().filter(|r| r.ever_partial).count(),
        partial_gpus_avg: integrals.partial / elapsed,
        slowdown_avg: if sim.factors.is_empty() {
            1.0
        } else {
            sim.factors.iter().sum::<f64>() / sim.factors.len() as f64
        },
        slowed_runs: sim.factors.iter().filter(|&&f| f > 1.0).count(),
        deadlock,
        hit_time_bound,
        cycles,
        gangs_planned: sim.gangs_planned,
        queues: sim.queues.as_ref().map(|t| {
            let outcomes: Vec<(usize, Option<f64>, Option<f64>)> = sim
                .jobs
                .iter()
                .zip(&sim.rt)
                .map(|(j, rt)| {
                    let end = match rt.phase {
                        Phase::Done { end } => Some((end - j.arrival) as f64),
                        _ => None,
                    };
                    (j.id, rt.first_start.map(|s| (s - j.arrival) as f64), end)
                })
                .collect();
            t.report(&outcomes)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_integrals() {
        let s = Stats::of(&mut [3.0, 1.0, 2.0, 4.0, 5.0]);
        assert_eq!((s.avg, s.p50), (3.0, 3.0));
        assert_eq!(s.p95, 5.0);
        let mut i = Integrals::until(15);
        i.advance(10, &Sample::default());
        let busy = Sample {
            allocated: 4,
            busy: 4,
            ..Sample::default()
        };
        i.advance(20, &busy);
        assert_eq!(i.allocated, 20.0, "only up to `until`");
        assert_eq!(i.elapsed(), 5.0);
    }
}
