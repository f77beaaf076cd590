//! The synthetic workload follows the Philly statistics quoted in the traces README.

use muster_sim::workload::synthetic::{SIZE_COUNTS, SyntheticSpec, generate};

fn sample(jobs: usize, seed: u64) -> muster_sim::workload::Workload {
    generate(&SyntheticSpec {
        jobs,
        seed,
        load: 0.9,
        cluster_gpus: 512,
        max_gpus: 512,
        gang_weight: 1.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn gang_sizes_match_the_trace_within_tolerance() {
    let w = sample(200_000, 3);
    let total: u32 = SIZE_COUNTS.iter().map(|(_, c)| c).sum();
    for (gpus, count) in SIZE_COUNTS {
        let want = f64::from(count) / f64::from(total);
        let got = w.jobs.iter().filter(|j| j.gpus == gpus).count() as f64 / w.jobs.len() as f64;
        // Binomial standard error, with a floor for the rare sizes.
        let tol = 4.0 * (want * (1.0 - want) / w.jobs.len() as f64).sqrt() + 1e-4;
        assert!(
            (got - want).abs() <= tol,
            "{gpus} GPUs: {got:.5} vs {want:.5} (tolerance {tol:.5})"
        );
    }
    let ones = w.jobs.iter().filter(|j| j.gpus == 1).count() as f64 / w.jobs.len() as f64;
    assert!(
        (ones - 0.9317).abs() < 0.003,
        "README: 93.17% one-GPU jobs, got {ones}"
    );
}

#[test]
fn durations_match_the_quoted_percentiles() {
    let w = sample(200_000, 5);
    let all: Vec<f64> = w.jobs.iter().map(|j| j.duration as f64).collect();
    let m = median(all.clone());
    assert!(
        (m - 1144.0).abs() / 1144.0 < 0.10,
        "overall median {m}, README 1144 s"
    );
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!(
        (mean - 13136.0).abs() / 13136.0 < 0.25,
        "mean {mean}, README 13136 s"
    );
    for (gpus, want) in [(1, 1117.0), (4, 17431.0), (8, 23683.0)] {
        let d: Vec<f64> = w
            .jobs
            .iter()
            .filter(|j| j.gpus == gpus)
            .map(|j| j.duration as f64)
            .collect();
        let m = median(d);
        assert!(
            (m - want).abs() / want < 0.15,
            "{gpus} GPUs: median {m}, README {want}"
        );
    }
}

#[test]
fn arrivals_are_ordered_and_offer_the_target_load() {
    let mut w = sample(5_000, 9);
    w.normalise();
    assert!(w.jobs.windows(2).all(|p| p[0].arrival <= p[1].arrival));
    assert_eq!(w.jobs[0].arrival, 0);
    let load = w.offered_load(512);
    assert!((load - 0.9).abs() < 0.05, "offered load {load}");
    assert!(w.jobs.iter().enumerate().all(|(i, j)| j.id == i));
}

#[test]
fn same_seed_same_jobs_other_seed_other_jobs() {
    assert_eq!(sample(1000, 1).jobs, sample(1000, 1).jobs);
    assert_ne!(sample(1000, 1).jobs, sample(1000, 2).jobs);
}
