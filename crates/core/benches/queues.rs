//! A planning round with queues against the same round with one queue and with none: 5,000
//! nodes half full, 5,000 pending gangs of 1 to 64 pods (and 10,000 with 100 queues); and a
//! reclaim search on a full cluster.
//!
//! `cargo bench -p muster-core --bench queues`. The bar: 100 queues cost about what one
//! does (report both and the ratio).

use criterion::{Criterion, criterion_group, criterion_main};
use muster_core::queues::Resource;
use muster_core::{Cluster, Gang, GangKey, PlannerConfig, QueueSpec, QueueTree};
use std::collections::BTreeSet;
use std::hint::black_box;

mod common;

/// The allocator of the binaries that run the core (`muster-scheduler`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{NODES, Rng, cluster, pending};

const GPUS: i64 = (NODES * 8) as i64;

/// 10 departments x 10 teams; teams guaranteed 80% of the cluster together, a third of them
/// limited to twice their guarantee, weights 1 to 4.
fn hundred() -> (QueueTree, Vec<String>) {
    let mut specs = Vec::new();
    let mut leaves = Vec::new();
    let per = GPUS * 8 / 10 / 100;
    for d in 0..10 {
        specs.push(QueueSpec::new(format!("dept-{d}")));
        for t in 0..10 {
            let i = d * 10 + t;
            let name = format!("team-{d}-{t}");
            let limit = (i % 3 == 0).then_some(per * 2);
            specs.push(
                QueueSpec::new(name.clone())
                    .parent(format!("dept-{d}"))
                    .quota(Resource::Gpu, per, limit)
                    .weight(Resource::Gpu, 1 + (i as i64 % 4)),
            );
            leaves.push(name);
        }
    }
    (QueueTree::new(&specs).expect("valid tree"), leaves)
}

fn one() -> (QueueTree, Vec<String>) {
    let all = QueueSpec::new("all").quota(Resource::Gpu, GPUS, None);
    (
        QueueTree::new(&[all]).expect("valid tree"),
        vec!["all".into()],
    )
}

/// Running gangs and pending gangs spread over `leaves` (skewed: low queues get more).
fn assign(c: &mut Cluster, gangs: &mut [Gang], leaves: &[String]) {
    let mut rng = Rng(0xabc);
    let mut pick = || {
        let n = leaves.len() as u64;
        let q = rng.below(n).min(rng.below(n));
        leaves[q as usize].clone()
    };
    let running: BTreeSet<GangKey> = c.pods().map(|p| p.gang.clone()).collect();
    for key in running {
        c.set_gang_queue(&key, pick());
    }
    for g in gangs {
        g.queue = pick();
    }
}

fn benches(c: &mut Criterion) {
    let config = PlannerConfig::default();
    let base = cluster(0.5);
    let gangs = pending(5_000);
    let mut group = c.benchmark_group("queue round");
    group.sample_size(10);
    group.bench_function("5000 gangs, 5000 nodes half full, no queues", |b| {
        b.iter(|| black_box(base.plan(black_box(&gangs), 0, &config)))
    });
    for (label, (tree, leaves)) in [("1 queue", one()), ("100 queues", hundred())] {
        let mut c = cluster(0.5);
        let mut g = gangs.clone();
        assign(&mut c, &mut g, &leaves);
        let p = c.plan_with_queues(&g, 0, &config, &tree);
        let reclaims = p.preemptions.iter().filter(|p| p.reclaim).count();
        println!(
            "{label}: {} placed, {} reclaims, {} waiting",
            p.placements.len(),
            reclaims,
            p.waiting.len()
        );
        group.bench_function(format!("5000 gangs, 5000 nodes half full, {label}"), |b| {
            b.iter(|| black_box(c.plan_with_queues(black_box(&g), 0, &config, &tree)))
        });
    }
    // Twice the queue: planning cost should grow with the queue, not faster (#18).
    {
        let (tree, leaves) = hundred();
        let mut c = cluster(0.5);
        let mut g = pending(10_000);
        assign(&mut c, &mut g, &leaves);
        group.bench_function("10000 gangs, 5000 nodes half full, 100 queues", |b| {
            b.iter(|| black_box(c.plan_with_queues(black_box(&g), 0, &config, &tree)))
        });
    }
    // The queue bookkeeping alone (order, fair share, limits), without eviction searches.
    let (tree, leaves) = hundred();
    let mut busy = cluster(0.5);
    let mut g = gangs.clone();
    assign(&mut busy, &mut g, &leaves);
    let quiet = PlannerConfig {
        preemption: false,
        ..PlannerConfig::default()
    };
    group.bench_function(
        "5000 gangs, 5000 nodes half full, 100 queues, no reclaim",
        |b| b.iter(|| black_box(busy.plan_with_queues(black_box(&g), 0, &quiet, &tree))),
    );
    group.bench_function(
        "5000 gangs, 5000 nodes half full, no queues, no preemption",
        |b| b.iter(|| black_box(base.plan(black_box(&gangs), 0, &quiet))),
    );
    group.finish();

    // Reclaim: a full cluster where every running gang is team-0-0's, borrowing; a gang of
    // team-9-9 (below its guarantee) needs 8 whole nodes.
    let (tree, _) = hundred();
    let mut full = cluster(0.97);
    let running: BTreeSet<GangKey> = full.pods().map(|p| p.gang.clone()).collect();
    for key in running {
        full.set_gang_queue(&key, "team-0-0");
    }
    let mut vip = Gang::uniform("bench", "vip", 8, 8, 0, 0);
    vip.queue = "team-9-9".into();
    let vip = [vip];
    let mut group = c.benchmark_group("queue reclaim");
    group.sample_size(10);
    group.bench_function("8x8-gpu gang, 100 queues, 5000 nodes 97% full", |b| {
        b.iter(|| {
            let plan = full.plan_with_queues(black_box(&vip), 0, &config, &tree);
            assert_eq!(plan.preemptions.len(), 1, "{:?}", plan.waiting);
            black_box(plan)
        })
    });
    group.finish();
}

criterion_group!(queue_benches, benches);
criterion_main!(queue_benches);
