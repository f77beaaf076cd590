//! The core at scale: 5,000 nodes x 8 GPUs, 1,000 pending gangs of 1 to 64 pods.
//!
//! `cargo bench -p muster-core --bench placement`. Figures to compare: kube-scheduler's native
//! gang scheduling needs ~3.7 ms per 3-pod pod-group attempt at 5,000 nodes (REFERENCE.md §8).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use muster_api::machines::builtin;
use muster_core::{Cluster, Gang, GangKey, NodeInfo, PlacedPod, PlannerConfig, PodId, Resources};
use std::hint::black_box;

const NODES: usize = 5_000;

/// Deterministic xorshift, so every run measures the same scene.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 5,000 DGX A100 nodes in 50 racks, about `fill` of the GPUs held by priority-0 pods.
fn cluster(fill: f64) -> Cluster {
    let spec = builtin("dgx-a100").expect("fixture");
    let nodes = (0..NODES).map(|i| {
        let mut n = NodeInfo::from_machine(&format!("node-{i:05}"), spec);
        n.domain = Some(format!("rack-{}", i / 100));
        n
    });
    let mut c = Cluster::new(nodes).expect("cluster");
    let mut rng = Rng(0x5eed);
    let target = (NODES as f64 * 8.0 * fill) as u64;
    let mut used = 0;
    let mut id = 0;
    while used < target {
        let node = format!("node-{:05}", rng.below(NODES as u64));
        let want = [1, 2, 4, 8][rng.below(4) as usize];
        let free = c.free_gpus(&node).unwrap_or_default();
        if free.len() < want {
            continue;
        }
        id += 1;
        c.add_pod(PlacedPod {
            id: PodId(format!("run-{id}")),
            gang: GangKey::new("running", format!("g{}", id / 4)),
            node,
            resources: Resources::new(1000, 1 << 30, want as u32),
            gpus: free[..want].iter().map(|&g| g as u32).collect(),
            priority: 0,
            started_at: id,
            preemptible: true,
            terminating: false,
        })
        .expect("fits");
        used += want as u64;
    }
    c
}

/// 1,000 gangs: sizes 1..64 pods, 1/2/4/8 GPUs per pod, skewed small like real traces.
fn pending(count: usize) -> Vec<Gang> {
    let mut rng = Rng(0xfeed);
    (0..count)
        .map(|i| {
            let pods = match rng.below(100) {
                0..=59 => 1,
                60..=79 => 2 + rng.below(3) as u32,
                80..=94 => 8,
                95..=98 => 16 + rng.below(17) as u32,
                _ => 64,
            };
            let gpus = if pods == 1 {
                [1, 2, 4, 8][rng.below(4) as usize]
            } else {
                8
            };
            Gang::uniform("bench", &format!("g{i}"), pods, gpus, 0, i as u64)
        })
        .collect()
}

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

criterion_group!(placement, benches);
criterion_main!(placement);
