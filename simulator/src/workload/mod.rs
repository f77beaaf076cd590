//! Jobs to simulate: from a Philly trace file or a seeded synthetic generator.
//!
//! A job needing G GPUs on nodes with `gpn` GPUs becomes a gang of `ceil(G / gpn)` pods: all
//! but the last take `gpn` GPUs (a whole node each), the last takes the remainder (so 12 GPUs
//! on 8-GPU nodes are 8 + 4, never rounded up to 16).

pub mod philly;
pub mod synthetic;

use serde::Serialize;

/// Priority of the high-priority fraction of jobs (the rest have 0).
pub const HIGH_PRIORITY: i32 = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: usize,
    /// Submission second, relative to the workload's first arrival.
    pub arrival: u64,
    /// Run time in seconds with an ideal placement.
    pub duration: u64,
    pub gpus: u32,
    /// Trace virtual cluster (tenant), used as the gang's queue and namespace.
    pub queue: String,
    pub priority: i32,
}

impl Job {
    /// GPUs of each pod of this job's gang.
    pub fn pod_sizes(&self, gpus_per_node: u32) -> Vec<u32> {
        let gpn = gpus_per_node.max(1);
        let pods = self.gpus.div_ceil(gpn).max(1);
        (0..pods)
            .map(|i| {
                if i + 1 < pods {
                    gpn
                } else {
                    self.gpus - gpn * (pods - 1)
                }
            })
            .collect()
    }
}

/// A workload plus a description of where it came from.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub source: String,
    pub jobs: Vec<Job>,
}

impl Workload {
    pub fn gpu_seconds(&self) -> f64 {
        self.jobs
            .iter()
            .map(|j| j.duration as f64 * f64::from(j.gpus))
            .sum()
    }

    /// Arrival span in seconds (first to last arrival).
    pub fn span(&self) -> u64 {
        let first = self.jobs.iter().map(|j| j.arrival).min().unwrap_or(0);
        let last = self.jobs.iter().map(|j| j.arrival).max().unwrap_or(0);
        last - first
    }

    /// Offered load on `gpus` GPUs: work over capacity during the arrival span.
    pub fn offered_load(&self, gpus: u64) -> f64 {
        let span = self.span().max(1) as f64;
        self.gpu_seconds() / (span * gpus.max(1) as f64)
    }

    /// Sorts by arrival and renumbers ids densely (ids index per-job state in the engine).
    pub fn normalise(&mut self) {
        self.jobs.sort_by_key(|j| (j.arrival, j.id));
        let first = self.jobs.first().map_or(0, |j| j.arrival);
        for (i, j) in self.jobs.iter_mut().enumerate() {
            j.id = i;
            j.arrival -= first;
        }
    }

    /// Marks about `fraction` of jobs high priority, deterministically for `seed`.
    pub fn assign_priorities(&mut self, fraction: f64, seed: u64) {
        let mut rng = crate::rng::Rng::new(seed ^ 0x7072_696f);
        for j in &mut self.jobs {
            j.priority = if rng.unit() < fraction {
                HIGH_PRIORITY
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(gpus: u32) -> Job {
        Job {
            id: 0,
            arrival: 0,
            duration: 1,
            gpus,
            queue: "q".into(),
            priority: 0,
        }
    }

    #[test]
    fn pods_are_whole_nodes_plus_remainder() {
        assert_eq!(job(1).pod_sizes(8), vec![1]);
        assert_eq!(job(8).pod_sizes(8), vec![8]);
        assert_eq!(job(12).pod_sizes(8), vec![8, 4]);
        assert_eq!(job(32).pod_sizes(8), vec![8, 8, 8, 8]);
        assert_eq!(job(6).pod_sizes(4), vec![4, 2]);
    }
}
