//! The core at scale: 5,000 nodes x 8 GPUs, 1,000 pending gangs of 1 to 64 pods.
//!
//! `cargo bench -p muster-core --bench placement`. Figures to compare: kube-scheduler's native
//! gang scheduling needs ~3.7 ms per 3-pod pod-group attempt at 5,000 nodes (REFERENCE.md §8).

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use muster_core::{Gang, PlannerConfig};
use std::hint::black_box;
use std::time::Duration;

mod common;

/// The allocator of the binaries that run the core (`muster-scheduler`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{cluster, pending};

fn benches(c: &mut Criterion) {
    let half = cluster(0.5);
    let config = PlannerConfig::default();
    let gangs = pending(1_000);

    let three = [Gang::uniform("bench", "three", 3, 8, 0, 0)];
    c.bench_function("attempt/3x8-gpu gang, 5000 nodes half full", |b| {
        b.iter(|| black_box(half.plan(black_box(&three), 0, &config)))
    });
    let big = [Gang::uniform("bench", "big", 64, 8, 0, 0)];
    c.bench_function("attempt/64x8-gpu gang, 5000 nodes half full", |b| {
        b.iter(|| black_box(half.plan(black_box(&big), 0, &config)))
    });
    let single = [Gang::uniform("bench", "one", 1, 2, 0, 0)];
    c.bench_function("attempt/1x2-gpu pod, 5000 nodes half full", |b| {
        b.iter(|| black_box(half.plan(black_box(&single), 0, &config)))
    });
    let mut group = c.benchmark_group("cycle");
    group.sample_size(10);
    group.bench_function("1000 mixed gangs, 5000 nodes half full", |b| {
        b.iter(|| black_box(half.plan(black_box(&gangs), 0, &config)))
    });
    group.finish();

    // Preemption: a full cluster of priority-0 pods, a priority-100 gang of 8 whole nodes.
    let full = cluster(0.97);
    let preemptor = [Gang::uniform("bench", "vip", 8, 8, 100, 0)];
    let mut group = c.benchmark_group("preemption");
    group.sample_size(10);
    group.bench_function("search/8x8-gpu gang, 5000 nodes 97% full", |b| {
        b.iter_batched(
            || (),
            |_| {
                let plan = full.plan(black_box(&preemptor), 0, &config);
                assert_eq!(plan.preemptions.len(), 1, "{:?}", plan.waiting);
                black_box(plan)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A round's cost against the queue's length (issue #18): most of a long queue cannot fit, and
/// should cost little to say so.
fn queue_length(c: &mut Criterion) {
    let half = cluster(0.5);
    let config = PlannerConfig::default();
    let mut group = c.benchmark_group("round");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in [100, 1_000, 10_000, 50_000] {
        let gangs = pending(n);
        group.bench_with_input(
            BenchmarkId::new("pending gangs, 5000 nodes half full", n),
            &gangs,
            |b, g| b.iter(|| black_box(half.plan(black_box(g), 0, &config))),
        );
    }
    group.finish();
}

criterion_group!(placement, benches, queue_length);
criterion_main!(placement);
