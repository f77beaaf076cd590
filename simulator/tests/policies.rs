//! Behaviour of the policies: gangs never partially placed, greedy deadlocks, invariants.

mod common;

use common::{job, run_policy};

use muster_sim::engine::{self, RunLimits};
use muster_sim::policies::muster::MusterConfig;
use muster_sim::topo::Topo;
use muster_sim::workload::Job;

fn simulate(policy: &str, topo: &Topo, jobs: &[Job]) -> engine::RunOutput {
    simulate_with(policy, topo, jobs, 0)
}

fn simulate_with(policy: &str, topo: &Topo, jobs: &[Job], checkpoint: u64) -> engine::RunOutput {
    let limits = RunLimits {
        time_bound: 1_000_000,
        checkpoint_secs: checkpoint,
        metrics_until: jobs.last().unwrap().arrival.max(1),
        declared: Default::default(),
    };
    run_policy(policy, &MusterConfig::default(), topo, jobs, &limits)
}

/// Two 8-GPU nodes. Four 4-GPU fillers occupy them; two 12-GPU jobs (pods 8 + 4) queue. As
/// the short fillers end, greedy hands each big job's 4-GPU pod a half node; when the long
/// fillers end, each big job holds half a node and needs a whole one: nothing can ever run.
fn contention() -> Vec<Job> {
    vec![
        job(0, 0, 100, 4),
        job(1, 0, 1000, 4),
        job(2, 0, 150, 4),
        job(3, 0, 1000, 4),
        job(4, 1, 500, 12),
        job(5, 2, 500, 12),
    ]
}

#[test]
fn greedy_deadlocks_where_gangs_do_not() {
    let topo = Topo::new("dgx-a100", 2, None).unwrap();
    let jobs = contention();
    let greedy = simulate("greedy", &topo, &jobs);
    let d = greedy
        .report
        .deadlock
        .clone()
        .expect("greedy must deadlock");
    assert_eq!((d.stuck_jobs, d.held_gpus), (2, 8), "{d:?}");
    assert_eq!(d.at, 1000);
    assert_eq!(greedy.report.partial_jobs, 2);
    assert_eq!(greedy.report.completed, 4);
    assert_eq!(greedy.report.unfinished, 2);
    for name in ["muster", "fifo"] {
        let out = simulate(name, &topo, &jobs);
        let r = &out.report;
        assert_eq!(r.completed, jobs.len(), "{name}");
        assert_eq!(r.partial_jobs, 0, "{name} never partially places");
        assert_eq!(r.partial_gpus_avg, 0.0, "{name}");
        assert!(r.deadlock.is_none(), "{name}");
    }
}

#[test]
fn preempted_jobs_resume_from_their_last_checkpoint() {
    let topo = Topo::new("dgx-a100", 1, None).unwrap();
    let mut urgent = job(1, 4000, 5000, 8);
    urgent.priority = muster_sim::workload::HIGH_PRIORITY;
    let jobs = vec![job(0, 0, 10_000, 8), urgent];
    let out = simulate_with("muster", &topo, &jobs, 1800);
    let (low, high) = (&out.jobs[0], &out.jobs[1]);
    assert_eq!(
        high.first_start,
        Some(4000),
        "evicts the low-priority job at once"
    );
    assert_eq!(high.end, Some(9000));
    assert_eq!(low.evictions, 1);
    // Checkpoints at 1800 and 3600 s of work: 6400 s left after the restart at 9000.
    assert_eq!(low.end, Some(15_400));
    assert_eq!(out.report.preemptions, 1);
    let lost = out.report.lost_gpu_hours;
    assert!((lost - 400.0 * 8.0 / 3600.0).abs() < 1e-9, "{lost}");
    // FIFO never preempts: the urgent job waits for the whole run.
    let fifo = simulate_with("fifo", &topo, &jobs, 1800);
    assert_eq!(fifo.jobs[1].first_start, Some(10_000));
    // Restart from scratch when checkpoints are off.
    let scratch = simulate_with("muster", &topo, &jobs, 0);
    assert_eq!(scratch.jobs[0].end, Some(19_000));
}

#[test]
fn invariants_on_a_synthetic_workload() {
    let r = common::run(&["--jobs", "2500", "--nodes", "16", "--seed", "4"]);
    let gpus = r.cluster.gpus as u32;
    for p in &r.policies {
        assert!(p.allocation_ratio <= 1.0 + 1e-9, "{}", p.policy);
        assert!(p.busy_ratio <= p.allocation_ratio + 1e-9, "{}", p.policy);
        assert!(p.jct.p50 <= p.jct.p95 && p.queueing_delay.p50 <= p.queueing_delay.p95);
        assert!(p.jct.avg >= p.queueing_delay.avg, "{}", p.policy);
        if p.policy != "greedy" {
            assert_eq!(p.partial_jobs, 0, "{}", p.policy);
            assert_eq!(p.completed, p.jobs, "{}", p.policy);
        }
        if !["muster", "tiresias"].contains(&p.policy.as_str()) {
            assert_eq!(p.preemptions, 0, "{} never preempts", p.policy);
        }
    }
    for (name, series) in &r.series {
        assert!(
            series.iter().all(|&(_, a)| a <= gpus),
            "{name} over-allocated"
        );
        assert!(
            series.windows(2).all(|w| w[0].0 <= w[1].0),
            "{name}: time goes forward"
        );
    }
    let by = |n: &str| r.policies.iter().find(|p| p.policy == n).unwrap();
    // Head-of-line blocking is FIFO's defining cost; the gap is large (about 3x) and robust.
    assert!(
        by("muster").jct.avg < by("fifo").jct.avg,
        "muster JCT {} vs fifo {}",
        by("muster").jct.avg,
        by("fifo").jct.avg
    );
}

#[test]
fn poor_links_slow_jobs_down_on_a_pcie_machine() {
    // l4-pcie-2s: GPU pairs on one PCIe switch (PIX) vs across sockets (SYS). The baselines
    // take the lowest free indices whatever their links; the core picks well-linked sets.
    let r = common::run(&["--jobs", "1500", "--nodes", "8", "--topology", "l4-pcie-2s"]);
    for p in &r.policies {
        assert!(p.slowdown_avg >= 1.0, "{}", p.policy);
    }
    let by = |n: &str| r.policies.iter().find(|p| p.policy == n).unwrap();
    assert!(
        by("muster").slowdown_avg <= by("fifo").slowdown_avg,
        "muster {} vs fifo {}",
        by("muster").slowdown_avg,
        by("fifo").slowdown_avg
    );
}

#[test]
fn bad_options_are_rejected_with_a_reason() {
    let err = |flags: &[&str]| {
        muster_sim::run(&common::args(flags), &indicatif::ProgressBar::hidden())
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(&["--policies", "nope"]).contains("unknown policy"));
    assert!(err(&["--topology", "dgx-z9"]).contains("dgx-z9"));
    assert!(err(&["--gpus-per-node", "4"]).contains("8 GPUs per node"));
    assert!(err(&["--window", "1d..2d"]).contains("--trace"));
}

/// Without queues the whole queue is planned, whatever `--plan-window` says (it bounds only
/// the queue policies): a small job behind 300 blocked gangs backfills at once.
#[test]
fn the_whole_queue_is_planned_without_queues() {
    let topo = Topo::new("dgx-a100", 1, None).unwrap();
    let mut jobs = vec![job(0, 0, 10_000, 4)];
    jobs.extend((1..=300).map(|i| job(i, 1, 100, 8)));
    jobs.push(job(301, 2, 100, 1));
    let start = |window: Option<usize>| {
        let config = MusterConfig {
            window,
            ..MusterConfig::default()
        };
        let limits = RunLimits {
            time_bound: 1_000_000,
            checkpoint_secs: 0,
            metrics_until: 2,
            declared: Default::default(),
        };
        let out = run_policy("muster", &config, &topo, &jobs, &limits);
        out.jobs.iter().find(|j| j.job == 301).unwrap().first_start
    };
    assert_eq!(start(None), Some(2));
    assert_eq!(start(Some(256)), Some(2));
}

/// Leaving out the gangs that cannot matter to a cycle's plan (too big for the free GPUs, no
/// preemption, no reservation to take) changes no job's fate, on a queue long enough that
/// most gangs are such and reservations are taken.
#[test]
fn leaving_hopeless_gangs_out_changes_nothing() {
    let topo = Topo::new("dgx-a100", 4, None).unwrap();
    let sizes = [1, 2, 4, 8, 16, 3, 1, 12];
    let jobs: Vec<Job> = (0..400)
        .map(|i| Job {
            priority: if i % 17 == 0 { 100 } else { 0 },
            ..job(
                i,
                i as u64 * 40,
                1_500 + (i as u64 * 7919) % 9_000,
                sizes[i % 8],
            )
        })
        .collect();
    let outcome = |keep_hopeless: bool| {
        let config = MusterConfig {
            keep_hopeless,
            ..MusterConfig::default()
        };
        let limits = RunLimits {
            time_bound: 10_000_000,
            checkpoint_secs: 0,
            metrics_until: jobs.last().unwrap().arrival,
            declared: Default::default(),
        };
        let out = run_policy("muster", &config, &topo, &jobs, &limits);
        let fates: Vec<_> = out
            .jobs
            .iter()
            .map(|j| (j.job, j.first_start, j.end, j.evictions))
            .collect();
        (fates, out.report.preemptions)
    };
    let (pruned, preemptions) = outcome(false);
    assert!(preemptions > 0, "the workload exercises preemption");
    assert_eq!(pruned, outcome(true).0);
}

/// A long queue of small gangs behind an almost full cluster reaches the core only as far as
/// the free GPUs could take (plus the gang that may reserve nodes), and every job's fate is
/// the one planning the whole queue gives.
#[test]
fn a_long_queue_is_handed_to_the_core_only_as_far_as_the_free_gpus_reach() {
    let topo = Topo::new("dgx-a100", 1, None).unwrap();
    let mut jobs = vec![job(0, 0, 20_000, 7)];
    // Pairs arrive together: the core orders them by name, not by index.
    jobs.extend((1..=300).map(|i| job(i, 1 + i as u64 / 2, 100 + i as u64 % 7, 1)));
    let limits = RunLimits {
        time_bound: 10_000_000,
        checkpoint_secs: 0,
        metrics_until: 3,
        declared: Default::default(),
    };
    let outcome = |keep_hopeless: bool| {
        let config = MusterConfig {
            keep_hopeless,
            window: None,
            ..MusterConfig::default()
        };
        let out = run_policy("muster", &config, &topo, &jobs, &limits);
        let fates: Vec<_> = out
            .jobs
            .iter()
            .map(|j| (j.job, j.first_start, j.end))
            .collect();
        (fates, out.report.gangs_planned, out.report.cycles)
    };
    let (pruned, planned, cycles) = outcome(false);
    let (whole, planned_whole, _) = outcome(true);
    let diff: Vec<_> = pruned
        .iter()
        .zip(&whole)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert_eq!(pruned, whole, "first differences: {diff:?}");
    assert!(
        planned_whole > 50 * cycles,
        "the whole queue is long: {planned_whole}"
    );
    assert!(
        planned <= 3 * cycles,
        "{planned} gangs planned in {cycles} cycles"
    );
}

/// With a reservation whose start is bounded by declared run times, the gangs that end in
/// time backfill it; handing the core only the pruned queue (plus those backfillers) gives
/// every job the fate planning the whole queue gives.
#[test]
fn pruning_keeps_the_gangs_that_backfill_a_reservation() {
    let topo = Topo::new("dgx-a100", 2, None).unwrap();
    // 12 GPUs busy until t=20,000; a 16-GPU job waits from t=1 and reserves both nodes at
    // t=1801; 1-GPU jobs keep arriving, short and long, alternating.
    let mut jobs = vec![job(0, 0, 20_000, 12), job(1, 1, 5_000, 16)];
    jobs.extend((2..400).map(|i| {
        let duration = if i % 2 == 0 { 600 } else { 50_000 };
        job(i, 2 + i as u64 * 50, duration, 1)
    }));
    let limits = RunLimits {
        time_bound: 10_000_000,
        checkpoint_secs: 0,
        metrics_until: jobs.last().unwrap().arrival,
        declared: Default::default(),
    };
    let outcome = |keep_hopeless: bool| {
        let config = MusterConfig {
            keep_hopeless,
            ..MusterConfig::default()
        };
        let out = run_policy("muster", &config, &topo, &jobs, &limits);
        out.jobs
            .iter()
            .map(|j| (j.job, j.first_start, j.end))
            .collect::<Vec<_>>()
    };
    let pruned = outcome(false);
    assert_eq!(pruned, outcome(true));
    let big_start = pruned[1].1.unwrap();
    let backfilled: Vec<_> = pruned[2..]
        .iter()
        .filter(|(_, start, _)| start.is_some_and(|s| s > 1_801 && s < big_start))
        .collect();
    assert!(
        !backfilled.is_empty(),
        "short jobs backfill before t={big_start}"
    );
    // None of them delays the reserved gang: each ended by the time it started.
    for (job, _, end) in backfilled {
        assert!(
            end.is_some_and(|e| e <= big_start),
            "job {job} ran past {big_start}"
        );
    }
}
