//! A seeded Philly-like workload, so the default run needs no trace file.
//!
//! The tables below are statistics of `philly-jobs.csv` (82,247 jobs; see the traces README):
//! gang-size frequencies, and per size class the duration quantiles at 0, 10, 25, 50, 75, 90,
//! 95, 99, 99.9 and 100 %. Durations are drawn by inverting the piecewise log-linear quantile
//! function, which keeps each class's median exactly (1 GPU 1117 s, 4 GPUs 17431 s, 8 GPUs
//! 23683 s ...) and its mean within ~17 % of the trace's. Arrivals are Poisson, with the rate
//! chosen so that the drawn work keeps the given cluster at `load` on average.

use super::{Job, Workload};
use crate::rng::Rng;

/// (GPUs, jobs in the trace with that gang size).
pub const SIZE_COUNTS: [(u32, u32); 10] = [
    (1, 76_627),
    (2, 1_818),
    (4, 1_870),
    (8, 1_643),
    (12, 7),
    (16, 199),
    (24, 7),
    (32, 67),
    (64, 6),
    (128, 3),
];

const QUANTILES: [f64; 10] = [0.0, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.999, 1.0];

/// Duration quantiles (s) by size class: 1, 2, 4, 8 GPUs, and 12+ GPUs pooled.
const DURATIONS: [(u32, [f64; 10]); 5] = [
    (
        1,
        [
            1.0, 62.0, 122.0, 1117.0, 2716.0, 8512.0, 19137.0, 135404.0, 868927.0, 3256045.0,
        ],
    ),
    (
        2,
        [
            2.0, 11.0, 16.0, 21.0, 76.0, 73625.0, 197392.0, 526030.0, 1521148.0, 2582803.0,
        ],
    ),
    (
        4,
        [
            3.0, 138.0, 772.0, 17431.0, 89422.0, 184519.0, 274339.0, 908661.0, 2641566.0, 2750674.0,
        ],
    ),
    (
        8,
        [
            1.0, 216.0, 1871.0, 23683.0, 173288.0, 352409.0, 525631.0, 1066894.0, 2658784.0,
            4628226.0,
        ],
    ),
    (
        12,
        [
            1.0, 69.0, 566.0, 21137.0, 104218.0, 252560.0, 446126.0, 1152387.0, 1710643.0,
            1710643.0,
        ],
    ),
];

/// Virtual-cluster shares of the trace (jobs per cluster), used as queues.
const QUEUES: [(&str, u32); 11] = [
    ("vc-6214e9", 41_226),
    ("vc-11cb48", 16_091),
    ("vc-6c71a0", 9_953),
    ("vc-b436b2", 7_423),
    ("vc-103959", 1_934),
    ("vc-ee9e8c", 1_511),
    ("vc-0e4a51", 1_435),
    ("vc-ed69ec", 1_137),
    ("vc-7f04ca", 723),
    ("vc-2869ce", 422),
    ("vc-e13805", 374),
];

#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub jobs: usize,
    pub seed: u64,
    /// Target average load on `cluster_gpus`.
    pub load: f64,
    pub cluster_gpus: u64,
    /// Sizes above this are not drawn (the cluster could never run them).
    pub max_gpus: u32,
    /// Multiplies the frequency of every multi-GPU size (1 = the trace's mix), to study
    /// gang-heavy workloads.
    pub gang_weight: f64,
}

fn pick<T: Copy>(rng: &mut Rng, table: &[(T, u32)]) -> T {
    let total: u64 = table.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut x = (rng.unit() * total as f64) as u64;
    for &(v, w) in table {
        if x < u64::from(w) {
            return v;
        }
        x -= u64::from(w);
    }
    table[table.len() - 1].0
}

/// Inverse of the piecewise log-linear quantile function of `gpus`' size class.
pub fn duration_quantile(gpus: u32, u: f64) -> f64 {
    let knots = DURATIONS
        .iter()
        .rev()
        .find(|(min, _)| gpus >= *min)
        .map_or(&DURATIONS[0].1, |(_, k)| k);
    let u = u.clamp(0.0, 1.0);
    let seg = QUANTILES
        .windows(2)
        .position(|w| u <= w[1])
        .unwrap_or(QUANTILES.len() - 2);
    let (u0, u1) = (QUANTILES[seg], QUANTILES[seg + 1]);
    let (a, b) = (knots[seg].ln(), knots[seg + 1].ln());
    (a + (b - a) * (u - u0) / (u1 - u0)).exp()
}

pub fn generate(spec: &SyntheticSpec) -> Workload {
    let mut rng = Rng::new(spec.seed);
    let weight = if spec.gang_weight.is_finite() && spec.gang_weight >= 0.0 {
        spec.gang_weight
    } else {
        1.0
    };
    let sizes: Vec<(u32, u32)> = SIZE_COUNTS
        .iter()
        .filter(|(g, _)| *g <= spec.max_gpus.max(1))
        .map(|&(g, c)| {
            let c = if g > 1 {
                (f64::from(c) * weight).round() as u32
            } else {
                c
            };
            (g, c)
        })
        .collect();
    let mut jobs: Vec<Job> = (0..spec.jobs)
        .map(|id| {
            let gpus = pick(&mut rng, &sizes);
            let duration = duration_quantile(gpus, rng.unit()).round().max(1.0) as u64;
            Job {
                id,
                arrival: 0,
                duration,
                gpus,
                queue: pick(&mut rng, &QUEUES).to_string(),
                priority: 0,
            }
        })
        .collect();
    // Poisson arrivals whose mean gap spreads this sample's work at the target load.
    let work: f64 = jobs
        .iter()
        .map(|j| j.duration as f64 * f64::from(j.gpus))
        .sum();
    let span = work / (spec.load.max(1e-3) * spec.cluster_gpus.max(1) as f64);
    let mean_gap = span / spec.jobs.max(1) as f64;
    let mut t: f64 = 0.0;
    for j in &mut jobs {
        j.arrival = t.round() as u64;
        t += rng.exp(mean_gap);
    }
    Workload {
        source: format!(
            "synthetic Philly-like workload: {} jobs, seed {}, load {:.2} on {} GPUs{}",
            spec.jobs,
            spec.seed,
            spec.load,
            spec.cluster_gpus,
            if weight == 1.0 {
                String::new()
            } else {
                format!(", multi-GPU sizes x{weight}")
            }
        ),
        jobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_function_hits_the_knots() {
        assert!((duration_quantile(1, 0.5) - 1117.0).abs() < 1e-6);
        assert!((duration_quantile(8, 0.5) - 23683.0).abs() < 1e-3);
        assert!((duration_quantile(64, 0.0) - 1.0).abs() < 1e-9);
        assert!(duration_quantile(4, 0.3) > 772.0 && duration_quantile(4, 0.3) < 17431.0);
    }
}
