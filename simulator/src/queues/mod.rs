//! Queues in the simulator: which leaf queue each job belongs to, each queue's guarantee,
//! limit and weight, and the core's [`QueueTree`] built from them.
//!
//! `--queues vc` makes every virtual cluster of the workload a leaf under one root
//! ([`ROOT`]), guaranteed GPUs in proportion to its demand (GPU-seconds requested in the
//! replayed window) so that the guarantees sum to the cluster's GPUs. `--queue-file` gives
//! the leaves explicitly ([`file`]); jobs of other virtual clusters go to [`DEFAULT_LEAF`].
//! The same setup feeds both queue policies (`muster-queues` borrows up to each limit,
//! `muster-hard-quota` caps every queue at its guarantee) and the per-queue metrics of every
//! policy, so baselines are measured against the same guarantees.

pub mod file;
pub mod track;

use crate::workload::Job;
use muster_core::queues::Resource;
use muster_core::{QueueError, QueueSpec, QueueTree};
use serde::Serialize;
use std::collections::BTreeMap;

/// The root every leaf queue hangs under (a queue file may not use this name).
pub const ROOT: &str = "cluster";
/// Leaf for jobs whose virtual cluster the queue file does not name (the core's name for
/// the queue of gangs with none set).
pub const DEFAULT_LEAF: &str = muster_core::DEFAULT_QUEUE;

/// One leaf queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueDef {
    pub name: String,
    /// GPUs always available to the queue.
    pub guaranteed: u64,
    /// The most it may hold, borrowing included; `None`: up to the cluster.
    pub limit: Option<u64>,
    pub weight: u64,
}

/// The leaves plus each job's leaf (index into `queues`, by job id).
#[derive(Clone, Debug, Serialize)]
pub struct QueueSetup {
    /// Where the queues came from: "virtual clusters" or the file's path.
    pub source: String,
    pub queues: Vec<QueueDef>,
    #[serde(skip)]
    pub job_leaf: Vec<usize>,
}

/// How `--queues` derives the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMode {
    /// One leaf per virtual cluster, guarantees by demand.
    Vc,
}

impl QueueMode {
    pub fn parse(text: &str) -> Result<QueueMode, String> {
        match text {
            "vc" => Ok(QueueMode::Vc),
            other => Err(format!(
                "--queues {other:?}: the only mode is \"vc\" (one queue per virtual cluster); use --queue-file for explicit queues"
            )),
        }
    }
}

/// Splits `total` in proportion to `weights`, in integers that sum to exactly `total`
/// (largest remainder: floors first, then one more each to the largest fractional parts,
/// ties to the lower index). All-zero weights split evenly. Exact integer arithmetic, so the
/// result does not depend on float rounding.
pub fn largest_remainder(weights: &[u128], total: u64) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let even;
    let weights = if weights.iter().all(|&w| w == 0) {
        even = vec![1u128; weights.len()];
        &even
    } else {
        weights
    };
    let sum: u128 = weights.iter().sum();
    let t = u128::from(total);
    let mut out: Vec<u64> = weights
        .iter()
        .map(|&w| u64::try_from(w * t / sum).unwrap_or(u64::MAX))
        .collect();
    let given: u64 = out.iter().sum();
    let mut by_remainder: Vec<(u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (w * t % sum, i))
        .collect();
    by_remainder.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in by_remainder.iter().take((total - given) as usize) {
        out[i] += 1;
    }
    out
}

impl QueueSetup {
    /// One leaf per virtual cluster of `jobs`, guarantees by demand summing to `gpus`.
    pub fn from_vcs(jobs: &[Job], gpus: u64) -> QueueSetup {
        let mut demand: BTreeMap<&str, u128> = BTreeMap::new();
        for j in jobs {
            *demand.entry(j.queue.as_str()).or_default() +=
                u128::from(j.duration) * u128::from(j.gpus);
        }
        let weights: Vec<u128> = demand.values().copied().collect();
        let shares = largest_remainder(&weights, gpus);
        let queues = demand
            .keys()
            .zip(shares)
            .map(|(name, guaranteed)| QueueDef {
                name: (*name).to_string(),
                guaranteed,
                limit: None,
                weight: 1,
            })
            .collect();
        QueueSetup::new("virtual clusters (guarantees by demand)", queues, jobs)
    }

    /// `queues` as given; jobs whose virtual cluster is not among them go to
    /// [`DEFAULT_LEAF`], added (guarantee 0, no limit) if the list lacks it and a job needs it.
    pub fn new(source: impl Into<String>, mut queues: Vec<QueueDef>, jobs: &[Job]) -> QueueSetup {
        let mut index: BTreeMap<String, usize> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.name.clone(), i))
            .collect();
        let mut job_leaf = Vec::with_capacity(jobs.len());
        for j in jobs {
            let leaf = match index.get(&j.queue) {
                Some(&i) => i,
                None => *index.entry(DEFAULT_LEAF.to_string()).or_insert_with(|| {
                    queues.push(QueueDef {
                        name: DEFAULT_LEAF.into(),
                        guaranteed: 0,
                        limit: None,
                        weight: 1,
                    });
                    queues.len() - 1
                }),
            };
            job_leaf.push(leaf);
        }
        QueueSetup {
            source: source.into(),
            queues,
            job_leaf,
        }
    }

    pub fn leaf_name(&self, job: usize) -> &str {
        self.job_leaf
            .get(job)
            .and_then(|&q| self.queues.get(q))
            .map_or(DEFAULT_LEAF, |q| q.name.as_str())
    }

    /// The core's tree: every leaf under [`ROOT`]. `hard`: each limit is the guarantee (no
    /// borrowing, hence nothing to reclaim).
    pub fn tree(&self, hard: bool) -> Result<QueueTree, QueueError> {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut specs = vec![QueueSpec::new(ROOT)];
        for q in &self.queues {
            let limit = if hard {
                Some(clamp(q.guaranteed))
            } else {
                q.limit.map(clamp)
            };
            specs.push(
                QueueSpec::new(&q.name)
                    .parent(ROOT)
                    .quota(Resource::Gpu, clamp(q.guaranteed), limit)
                    .weight(Resource::Gpu, clamp(q.weight)),
            );
        }
        QueueTree::new(&specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: usize, queue: &str, gpus: u32, duration: u64) -> Job {
        Job {
            id,
            arrival: 0,
            duration,
            gpus,
            queue: queue.into(),
            priority: 0,
        }
    }

    #[test]
    fn largest_remainder_sums_to_the_total_and_follows_the_remainders() {
        // 10 split 1:1:1 -> 3.33 each: the one extra unit goes to the first (tie, lower index).
        assert_eq!(largest_remainder(&[1, 1, 1], 10), vec![4, 3, 3]);
        // Quotas 5.6, 2.8, 1.6 -> floors 5, 2, 1; remainders .6, .8, .6 -> 2nd, then 1st.
        assert_eq!(largest_remainder(&[56, 28, 16], 10), vec![6, 3, 1]);
        // Exactly proportional when it divides.
        assert_eq!(largest_remainder(&[3, 1], 512), vec![384, 128]);
        // Tiny demand may round to nothing; the sum still holds.
        let g = largest_remainder(&[1_000_000, 1, 1], 8);
        assert_eq!(g, vec![8, 0, 0]);
        assert_eq!(largest_remainder(&[0, 0], 5), vec![3, 2], "no demand: even");
        assert!(largest_remainder(&[], 5).is_empty());
        for total in [0, 1, 7, 511, 512] {
            let w = [17u128, 4, 0, 99, 1, 1];
            assert_eq!(largest_remainder(&w, total).iter().sum::<u64>(), total);
        }
    }

    #[test]
    fn virtual_clusters_get_guarantees_by_demand() {
        // GPU-seconds: a 8x1000 + 8x1000 = 16000, b 4x1000 = 4000, c 1x1 = 1 (of 20001).
        let jobs = vec![
            job(0, "vc-a", 8, 1000),
            job(1, "vc-b", 4, 1000),
            job(2, "vc-a", 8, 1000),
            job(3, "vc-c", 1, 1),
        ];
        let s = QueueSetup::from_vcs(&jobs, 512);
        let g: Vec<(&str, u64)> = s
            .queues
            .iter()
            .map(|q| (q.name.as_str(), q.guaranteed))
            .collect();
        // 409.58 / 102.39 / 0.03 -> 409 + 102 + 0 = 511; the one left goes to a (.58).
        assert_eq!(g, vec![("vc-a", 410), ("vc-b", 102), ("vc-c", 0)]);
        assert_eq!(s.job_leaf, vec![0, 1, 0, 2]);
        assert!(s.queues.iter().all(|q| q.limit.is_none() && q.weight == 1));
        let tree = s.tree(false).unwrap();
        assert_eq!(tree.len(), 4, "root plus three leaves");
        assert!(s.tree(true).is_ok());
    }

    #[test]
    fn unknown_virtual_clusters_go_to_default() {
        let defs = vec![QueueDef {
            name: "vc-a".into(),
            guaranteed: 8,
            limit: Some(16),
            weight: 2,
        }];
        let jobs = vec![job(0, "vc-a", 1, 1), job(1, "vc-z", 1, 1)];
        let s = QueueSetup::new("file", defs, &jobs);
        assert_eq!(s.queues.len(), 2);
        assert_eq!(s.leaf_name(1), DEFAULT_LEAF);
        assert_eq!(s.queues[1].guaranteed, 0);
        assert_eq!(s.leaf_name(0), "vc-a");
    }
}
