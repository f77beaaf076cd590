//! Per-queue accounting during a run (any policy, so baselines are measured against the same
//! guarantees): GPUs each leaf holds, its waiting jobs in policy order, and time integrals
//! of being below the guarantee, of borrowing, and of Jain's fairness index.

use super::QueueSetup;
use crate::engine::QueueKey;
use crate::metrics::Stats;
use serde::Serialize;
use std::collections::BTreeSet;

/// Jain's fairness index of `xs`: (sum x)^2 / (n * sum x^2), 1 when all are equal, 1/n when
/// one takes everything. `None` for no values; all zeros count as equal (1).
pub fn jain(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq == 0.0 {
        return Some(1.0);
    }
    Some(sum * sum / (xs.len() as f64 * sq))
}

pub struct QueueTrack<'a> {
    pub setup: &'a QueueSetup,
    /// GPUs held by each leaf's pods (placed, running or not).
    pub alloc: Vec<u32>,
    /// Waiting jobs per leaf, in the policy's order.
    pub lanes: Vec<BTreeSet<QueueKey>>,
    /// The GPU time-average covers the arrival window only, like the run's other averages.
    until: u64,
    start: Option<u64>,
    last: Option<u64>,
    below_secs: Vec<f64>,
    borrowed_gpu_secs: Vec<f64>,
    alloc_gpu_secs: Vec<f64>,
    peak: Vec<u32>,
    jain_sum: f64,
    jain_secs: f64,
    /// Gangs of each leaf evicted by another queue's reclaim, and the GPU-seconds they lost.
    reclaimed: Vec<u64>,
    reclaim_lost: Vec<f64>,
    /// Gangs of each leaf started by reclaiming.
    started_by_reclaim: Vec<u64>,
}

impl<'a> QueueTrack<'a> {
    pub fn new(setup: &'a QueueSetup, until: u64) -> QueueTrack<'a> {
        let n = setup.queues.len();
        QueueTrack {
            setup,
            alloc: vec![0; n],
            lanes: vec![BTreeSet::new(); n],
            until,
            start: None,
            last: None,
            below_secs: vec![0.0; n],
            borrowed_gpu_secs: vec![0.0; n],
            alloc_gpu_secs: vec![0.0; n],
            peak: vec![0; n],
            jain_sum: 0.0,
            jain_secs: 0.0,
            reclaimed: vec![0; n],
            reclaim_lost: vec![0.0; n],
            started_by_reclaim: vec![0; n],
        }
    }

    pub fn leaf(&self, job: usize) -> usize {
        self.setup.job_leaf.get(job).copied().unwrap_or(0)
    }

    pub fn guaranteed(&self, q: usize) -> u64 {
        self.setup.queues[q].guaranteed
    }

    /// A leaf below its guarantee has work waiting while another borrows: reclaim could
    /// help (never under hard quotas, where nobody borrows).
    pub fn any_starved(&self) -> bool {
        let n = self.alloc.len();
        (0..n).any(|q| !self.lanes[q].is_empty() && u64::from(self.alloc[q]) < self.guaranteed(q))
            && (0..n).any(|q| u64::from(self.alloc[q]) > self.guaranteed(q))
    }

    pub fn placed(&mut self, job: usize, gpus: u32) {
        let q = self.leaf(job);
        self.alloc[q] += gpus;
        self.peak[q] = self.peak[q].max(self.alloc[q]);
    }

    pub fn released(&mut self, job: usize, gpus: u32) {
        let q = self.leaf(job);
        self.alloc[q] = self.alloc[q].saturating_sub(gpus);
    }

    pub fn reclaimed(&mut self, job: usize, lost_gpu_secs: f64) {
        let q = self.leaf(job);
        self.reclaimed[q] += 1;
        self.reclaim_lost[q] += lost_gpu_secs;
    }

    pub fn started_by_reclaim(&mut self, job: usize) {
        let q = self.leaf(job);
        self.started_by_reclaim[q] += 1;
    }

    /// Accounts the current state (as the last cycle left it) from the last call until `now`.
    pub fn advance(&mut self, now: u64) {
        self.start.get_or_insert(now);
        let last = self.last.unwrap_or(now);
        let dt = now.saturating_sub(last) as f64;
        let dt_window = now.min(self.until).saturating_sub(last.min(self.until)) as f64;
        self.last = Some(now.max(last));
        if dt == 0.0 {
            return;
        }
        let mut ratios = Vec::new();
        for q in 0..self.alloc.len() {
            let a = u64::from(self.alloc[q]);
            let g = self.guaranteed(q);
            let waiting = !self.lanes[q].is_empty();
            if waiting && a < g {
                self.below_secs[q] += dt;
            }
            self.borrowed_gpu_secs[q] += dt * a.saturating_sub(g) as f64;
            self.alloc_gpu_secs[q] += dt_window * a as f64;
            // Fairness among backlogged queues: a queue whose work all runs is satisfied,
            // and a queue with no guarantee has no entitlement to compare against.
            if waiting && g > 0 {
                ratios.push(a as f64 / g as f64);
            }
        }
        if let Some(j) = jain(&ratios) {
            self.jain_sum += j * dt;
            self.jain_secs += dt;
        }
    }

    /// Per-queue results from (job, queueing delay, JCT) of every job (`None`: never started /
    /// never finished).
    pub fn report(&self, jobs: &[(usize, Option<f64>, Option<f64>)]) -> QueueMetrics {
        let n = self.alloc.len();
        let mut jct: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut delay: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut count = vec![0usize; n];
        for &(job, start, end) in jobs {
            let q = self.leaf(job);
            count[q] += 1;
            delay[q].extend(start);
            jct[q].extend(end);
        }
        let span = self
            .last
            .unwrap_or(0)
            .min(self.until)
            .saturating_sub(self.start.unwrap_or(0)) as f64;
        let queues = (0..n)
            .map(|q| QueueResult {
                name: self.setup.queues[q].name.clone(),
                guaranteed: self.guaranteed(q),
                jobs: count[q],
                completed: jct[q].len(),
                jct: Stats::of(&mut jct[q]),
                queueing_delay: Stats::of(&mut delay[q]),
                below_guarantee_secs: self.below_secs[q],
                allocated_avg: self.alloc_gpu_secs[q] / span.max(1.0),
                borrowed_gpu_hours: self.borrowed_gpu_secs[q] / 3600.0,
                peak_allocated: self.peak[q],
                reclaimed: self.reclaimed[q],
                reclaim_lost_gpu_hours: self.reclaim_lost[q] / 3600.0,
                started_by_reclaim: self.started_by_reclaim[q],
            })
            .collect();
        QueueMetrics {
            jain_avg: if self.jain_secs > 0.0 {
                self.jain_sum / self.jain_secs
            } else {
                1.0
            },
            below_guarantee_secs: self.below_secs.iter().sum(),
            reclaims: self.reclaimed.iter().sum(),
            reclaim_lost_gpu_hours: self.reclaim_lost.iter().sum::<f64>() / 3600.0,
            queues,
        }
    }
}

/// One policy's queue metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueMetrics {
    /// Jain's index of allocated / guarantee over backlogged queues with a guarantee,
    /// time-averaged over the run (instants with no such queue left out).
    pub jain_avg: f64,
    /// Sum over queues of the time each was below its guarantee with work waiting.
    pub below_guarantee_secs: f64,
    /// Gangs evicted by reclaim.
    pub reclaims: u64,
    pub reclaim_lost_gpu_hours: f64,
    pub queues: Vec<QueueResult>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueResult {
    pub name: String,
    pub guaranteed: u64,
    pub jobs: usize,
    pub completed: usize,
    pub jct: Stats,
    pub queueing_delay: Stats,
    /// Time below its guarantee while it had work waiting (s).
    pub below_guarantee_secs: f64,
    /// Time-average of GPUs held, over the arrival window.
    pub allocated_avg: f64,
    /// GPU-hours held above the guarantee.
    pub borrowed_gpu_hours: f64,
    pub peak_allocated: u32,
    /// Its gangs evicted by other queues' reclaim, and the GPU-hours they lost.
    pub reclaimed: u64,
    pub reclaim_lost_gpu_hours: f64,
    /// Its gangs started by reclaiming from others.
    pub started_by_reclaim: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_known_values() {
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[1.0, 1.0, 1.0, 1.0]), Some(1.0));
        assert_eq!(jain(&[0.0, 0.0]), Some(1.0));
        // One of four takes everything: 1/n.
        assert_eq!(jain(&[5.0, 0.0, 0.0, 0.0]), Some(0.25));
        // (1+2+3)^2 / (3 * 14) = 36/42.
        let j = jain(&[1.0, 2.0, 3.0]).unwrap();
        assert!((j - 36.0 / 42.0).abs() < 1e-12, "{j}");
        // Scale-free.
        assert_eq!(jain(&[2.0, 4.0]), jain(&[0.5, 1.0]));
        assert!((jain(&[2.0, 4.0]).unwrap() - 0.9).abs() < 1e-12);
    }
}
