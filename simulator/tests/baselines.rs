//! The published baselines behave as their papers say: EASY backfills without delaying the
//! head job's reservation; Tiresias runs the least-served jobs first, preempting freely but
//! never for nothing.

mod common;

use common::{job, run_policy};
use muster_sim::engine::{DeclaredRuntimes, JobOutcome, RunLimits};
use muster_sim::policies::muster::MusterConfig;
use muster_sim::topo::Topo;
use muster_sim::workload::Job;

fn outcomes(
    policy: &str,
    nodes: usize,
    jobs: &[Job],
    declared: DeclaredRuntimes,
) -> Vec<JobOutcome> {
    let topo = Topo::new("dgx-a100", nodes, None).unwrap();
    let limits = RunLimits {
        time_bound: 1_000_000,
        checkpoint_secs: 0,
        metrics_until: jobs.last().unwrap().arrival.max(1),
        declared,
    };
    run_policy(policy, &MusterConfig::default(), &topo, jobs, &limits).jobs
}

fn start(o: &[JobOutcome], job: usize) -> u64 {
    o[job].first_start.unwrap()
}

/// Two 8-GPU nodes: a 12-GPU job holds a node and a half until t=1000; a 16-GPU head waits for
/// both nodes. Behind it: a 4-GPU job short enough to end before t=1000, and a long one.
fn head_blocked() -> Vec<Job> {
    vec![
        job(0, 0, 1000, 12),
        job(1, 1, 500, 16),
        job(2, 2, 900, 4),
        job(3, 3, 5000, 4),
    ]
}

#[test]
fn easy_backfills_a_job_that_ends_before_the_head_can_start_and_nothing_that_would_delay_it() {
    let o = outcomes("easy", 2, &head_blocked(), DeclaredRuntimes::Exact);
    assert_eq!(start(&o, 2), 2, "the short job backfills at once");
    assert_eq!(
        start(&o, 1),
        1000,
        "the head starts when the first job ends"
    );
    assert!(
        start(&o, 3) >= 1500,
        "the long job would have delayed the head: it waits for it, started {}",
        start(&o, 3)
    );
}

#[test]
fn easy_without_declared_runtimes_backfills_nothing_onto_the_heads_gpus() {
    let o = outcomes("easy", 2, &head_blocked(), DeclaredRuntimes::None);
    assert_eq!(start(&o, 1), 1000);
    assert!(start(&o, 2) >= 1000, "no declaration, no backfill");
}

#[test]
fn easy_backfills_long_jobs_onto_gpus_the_head_will_not_need() {
    // Three nodes, 20 GPUs busy until t=1000: the 16-GPU head will need two of them then, and
    // the half of the third that is free now is spare for good.
    let jobs = vec![job(0, 0, 1000, 20), job(1, 1, 500, 16), job(2, 2, 5000, 4)];
    let o = outcomes("easy", 3, &jobs, DeclaredRuntimes::Exact);
    assert_eq!(start(&o, 1), 1000, "the head is not delayed");
    assert_eq!(
        start(&o, 2),
        2,
        "a long job takes the spare half node at once"
    );
}

#[test]
fn tiresias_preempts_the_most_served_job_for_a_newcomer() {
    // One node, fully used by a long job; a short job arrives after 2 GPU-hours of service.
    let jobs = vec![job(0, 0, 100_000, 8), job(1, 1000, 600, 8)];
    let o = outcomes("tiresias", 1, &jobs, DeclaredRuntimes::None);
    assert_eq!(
        start(&o, 1),
        1000,
        "the newcomer has less service: it runs at once"
    );
    assert_eq!(o[0].evictions, 1);
    assert_eq!(o[1].end, Some(1600));
}

#[test]
fn tiresias_does_not_evict_when_the_eviction_would_not_make_room() {
    // Two nodes. A served job (0) shares node 0 with a fresh one (1); another fresh job (2)
    // holds half of node 1. An 8-GPU newcomer outranks job 0, but evicting it frees only half
    // a node: no room for an 8-GPU pod, so job 0 must keep running.
    let jobs = vec![
        job(0, 0, 100_000, 4),
        job(1, 4000, 100_000, 4),
        job(2, 4001, 100_000, 4),
        job(3, 4002, 600, 8),
    ];
    let o = outcomes("tiresias", 2, &jobs, DeclaredRuntimes::None);
    assert_eq!((start(&o, 1), start(&o, 2)), (4000, 4001));
    assert!(start(&o, 3) > 4002, "no room for the 8-GPU pod");
    assert_eq!(o[0].evictions, 0, "evicting job 0 would not have made room");
}
