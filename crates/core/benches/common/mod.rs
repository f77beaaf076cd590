//! The scene both benches measure: 5,000 DGX A100 nodes, running pods, pending gangs.

#![allow(dead_code)]

use muster_api::machines::builtin;
use muster_core::{Cluster, Gang, GangKey, NodeInfo, PlacedPod, PodId, Resources};

pub const NODES: usize = 5_000;

/// Deterministic xorshift, so every run measures the same scene.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 5,000 DGX A100 nodes in 50 racks, about `fill` of the GPUs held by priority-0 pods.
pub fn cluster(fill: f64) -> Cluster {
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
            id: PodId::new(format!("run-{id}")),
            gang: GangKey::new("running", format!("g{}", id / 4)),
            node,
            resources: Resources::new(1000, 1 << 30, want as u32),
            gpus: free[..want].iter().map(|&g| g as u32).collect(),
            priority: 0,
            started_at: id,
            preemptible: true,
            terminating: false,
            ends_by: None,
        })
        .expect("fits");
        used += want as u64;
    }
    c
}

/// 1,000 gangs: sizes 1..64 pods, 1/2/4/8 GPUs per pod, skewed small like real traces.
pub fn pending(count: usize) -> Vec<Gang> {
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
