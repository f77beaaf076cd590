//! Queues in the simulator: one queue floods the cluster, a second arrives later. With
//! `muster-queues` the second reclaims its guarantee at once; with `muster` (no queues) it
//! waits until the flood's first jobs end; with `muster-hard-quota` nobody ever borrows.

mod common;

use muster_sim::engine::{self, RunLimits, RunOutput};
use muster_sim::policies::{
    self,
    muster::{MusterConfig, QueueTrees},
};
use muster_sim::queues::track::QueueResult;
use muster_sim::queues::{QueueDef, QueueSetup};
use muster_sim::slowdown::SlowdownModel;
use muster_sim::topo::Topo;
use muster_sim::workload::Job;
use std::sync::Arc;

fn job(id: usize, queue: &str, arrival: u64, duration: u64, gpus: u32) -> Job {
    Job {
        id,
        arrival,
        duration,
        gpus,
        queue: queue.into(),
        priority: 0,
    }
}

/// 16 GPUs (2 x 8). Queue a: twelve 4-GPU jobs of 10,000 s at t=0 (four run, eight wait).
/// Queue b: two 4-GPU jobs of 2,000 s at t=1000. Each queue is guaranteed 8 GPUs.
fn flood() -> (Topo, Vec<Job>, QueueSetup) {
    let topo = Topo::new("dgx-a100", 2, None).unwrap();
    let mut jobs: Vec<Job> = (0..12).map(|i| job(i, "a", 0, 10_000, 4)).collect();
    jobs.push(job(12, "b", 1000, 2000, 4));
    jobs.push(job(13, "b", 1000, 2000, 4));
    let def = |name: &str| QueueDef {
        name: name.into(),
        guaranteed: 8,
        limit: None,
        weight: 1,
    };
    let setup = QueueSetup::new("test", vec![def("a"), def("b")], &jobs);
    (topo, jobs, setup)
}

fn simulate(policy: &str, topo: &Topo, jobs: &[Job], setup: &QueueSetup) -> RunOutput {
    let config = MusterConfig {
        queues: Some(QueueTrees {
            borrowing: Arc::new(setup.tree(false).unwrap()),
            hard: Arc::new(setup.tree(true).unwrap()),
        }),
        ..MusterConfig::default()
    };
    let mut p = policies::by_name(policy, &config).unwrap();
    let limits = RunLimits {
        time_bound: 1_000_000,
        checkpoint_secs: 0,
        metrics_until: 1000,
        declared: Default::default(),
    };
    engine::run_with(
        p.as_mut(),
        topo,
        jobs,
        &SlowdownModel::default(),
        &limits,
        Some(setup),
        || {},
    )
    .unwrap()
}

fn queue<'a>(out: &'a RunOutput, name: &str) -> &'a QueueResult {
    let q = out.report.queues.as_ref().expect("queue metrics");
    q.queues.iter().find(|q| q.name == name).unwrap()
}

#[test]
fn a_late_queue_reclaims_its_guarantee_from_a_flood() {
    let (topo, jobs, setup) = flood();
    let with = simulate("muster-queues", &topo, &jobs, &setup);
    let without = simulate("muster", &topo, &jobs, &setup);
    for out in [&with, &without] {
        assert_eq!(out.report.completed, jobs.len(), "{}", out.report.policy);
    }
    // muster-queues: b is below its guarantee, a above: two of a's gangs are reclaimed and
    // b's jobs start on arrival.
    assert_eq!(with.jobs[12].first_start, Some(1000));
    assert_eq!(with.jobs[13].first_start, Some(1000));
    let m = with.report.queues.as_ref().unwrap();
    assert_eq!(m.reclaims, 2);
    assert_eq!(queue(&with, "a").reclaimed, 2);
    assert_eq!(queue(&with, "b").started_by_reclaim, 2);
    // Restart from scratch (checkpoints off): 1,000 s of 4 GPUs lost per victim.
    assert!((m.reclaim_lost_gpu_hours - 8000.0 / 3600.0).abs() < 1e-9);
    assert!((with.report.lost_gpu_hours - m.reclaim_lost_gpu_hours).abs() < 1e-9);
    assert_eq!(
        queue(&with, "a").peak_allocated,
        16,
        "a borrowed b's idle guarantee"
    );
    assert_eq!(queue(&with, "b").below_guarantee_secs, 0.0);
    // muster (no queues): b waits for the first wave of a's jobs to end; then its short jobs
    // go ahead of the eight older long ones (response ratio 5.5 against 2).
    assert_eq!(without.jobs[12].first_start, Some(10_000));
    assert_eq!(without.jobs[13].first_start, Some(10_000));
    let b_with = queue(&with, "b").queueing_delay.avg;
    let b_without = queue(&without, "b").queueing_delay.avg;
    assert_eq!((b_with, b_without), (0.0, 9_000.0));
    assert!(b_with < b_without);
    assert_eq!(without.report.queues.as_ref().unwrap().reclaims, 0);
    assert_eq!(queue(&without, "b").below_guarantee_secs, 9_000.0);
}

#[test]
fn hard_quota_never_borrows() {
    let (topo, jobs, setup) = flood();
    let hard = simulate("muster-hard-quota", &topo, &jobs, &setup);
    assert_eq!(hard.report.completed, jobs.len());
    let m = hard.report.queues.as_ref().unwrap();
    assert_eq!(m.reclaims, 0);
    assert_eq!(hard.report.preemptions, 0);
    for q in &m.queues {
        assert!(
            u64::from(q.peak_allocated) <= q.guaranteed,
            "{} peaked at {} over its guarantee {}",
            q.name,
            q.peak_allocated,
            q.guaranteed
        );
        assert_eq!(q.borrowed_gpu_hours, 0.0, "{}", q.name);
    }
    // a never holds more than its 8 GPUs, so b finds room on arrival without reclaim...
    assert_eq!(hard.jobs[12].first_start, Some(1000));
    // ...and a's twelve jobs run two at a time: six waves of 10,000 s.
    let a_end = (0..12).filter_map(|i| hard.jobs[i].end).max();
    assert_eq!(a_end, Some(60_000));
    assert_eq!(queue(&hard, "a").peak_allocated, 8);
}

#[test]
fn queue_flags_run_every_policy_with_per_queue_metrics() {
    let r = common::run(&["--jobs", "1500", "--nodes", "8", "--queues", "vc"]);
    let setup = r.queues.as_ref().unwrap();
    assert_eq!(
        setup.queues.iter().map(|q| q.guaranteed).sum::<u64>(),
        r.cluster.gpus,
        "guarantees add up to the cluster"
    );
    let names: Vec<&str> = r.policies.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(names, policies::ALL.to_vec());
    for p in &r.policies {
        let m = p.queues.as_ref().unwrap();
        assert_eq!(m.queues.len(), setup.queues.len());
        assert_eq!(
            m.queues.iter().map(|q| q.jobs).sum::<usize>(),
            r.workload.jobs
        );
        assert!((0.0..=1.0 + 1e-9).contains(&m.jain_avg), "{}", p.policy);
        if p.policy != "muster-queues" {
            assert_eq!(m.reclaims, 0, "{} never reclaims", p.policy);
        }
        if p.policy == "muster-hard-quota" {
            for q in &m.queues {
                assert!(u64::from(q.peak_allocated) <= q.guaranteed, "{}", q.name);
            }
        }
    }
    let table = muster_sim::report::queues::render(&r);
    assert!(
        table.contains("Jain") && table.contains("muster-hard-quota"),
        "{table}"
    );
    assert!(muster_sim::report::queues::render(&common::run(&["--jobs", "50"])).is_empty());
}

#[test]
fn queue_options_fail_clearly() {
    let err = |flags: &[&str]| {
        muster_sim::run(&common::args(flags), &indicatif::ProgressBar::hidden())
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(&["--policies", "muster-queues"]).contains("needs --queues"));
    assert!(err(&["--queues", "tenant"]).contains("the only mode is \"vc\""));
    let dir = std::env::temp_dir().join(format!("muster-sim-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "- name: vc-a\n  guaranteed: -1\n").unwrap();
    let e = err(&["--jobs", "50", "--queue-file", bad.to_str().unwrap()]);
    assert!(
        e.contains("bad.yaml") && e.contains("must not be negative"),
        "{e}"
    );
    assert!(err(&["--queue-file", "/nonexistent/q.yaml"]).contains("reading queue file"));
    // A file naming one virtual cluster: the other jobs go to `default`.
    let good = dir.join("good.json");
    std::fs::write(
        &good,
        r#"[{"name": "vc-6214e9", "guaranteed": 32, "limit": 48}]"#,
    )
    .unwrap();
    let r = common::run(&[
        "--jobs",
        "300",
        "--nodes",
        "8",
        "--queue-file",
        good.to_str().unwrap(),
    ]);
    let names: Vec<&str> = r
        .queues
        .as_ref()
        .unwrap()
        .queues
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    assert_eq!(names, vec!["vc-6214e9", "default"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_queue_file_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/queues.yaml");
    let defs = muster_sim::queues::file::load(&path).unwrap();
    assert_eq!(defs.len(), 7);
    assert_eq!(defs.iter().map(|q| q.guaranteed).sum::<u64>(), 512);
    assert!(
        defs.iter()
            .all(|q| q.limit.is_none_or(|l| l >= q.guaranteed))
    );
}
