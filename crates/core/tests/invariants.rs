//! Property tests: on random clusters and gangs, every plan keeps the core's promises.

use muster_api::machines::builtin;
use muster_core::{
    Cluster, Gang, GangKey, GpuInfo, NodeInfo, PlacedPod, PlannerConfig, PodId, Resources,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const MACHINES: [&str; 4] = ["dgx-a100", "dgx1-v100", "l4-pcie-2s", "gb200-nvl72"];

#[derive(Debug, Clone)]
struct Scene {
    nodes: Vec<(usize, Vec<bool>, Option<u8>)>,
    running: Vec<(usize, u32, i32, u32)>,
    pending: Vec<(u32, u32, u32, i32, bool)>,
}

fn scene() -> impl Strategy<Value = Scene> {
    let node = (
        0..MACHINES.len(),
        prop::collection::vec(prop::bool::weighted(0.95), 8),
        prop::option::of(0u8..3),
    );
    let running = (0usize..12, 1u32..=8, -5i32..5, 1u32..=3);
    let pending = (1u32..=6, 1u32..=8, 0u32..=6, -5i32..10, any::<bool>());
    (
        prop::collection::vec(node, 1..12),
        prop::collection::vec(running, 0..16),
        prop::collection::vec(pending, 1..10),
    )
        .prop_map(|(nodes, running, pending)| Scene {
            nodes,
            running,
            pending,
        })
}

/// Builds the cluster and places the scene's running gangs wherever they fit (first fit).
fn build(scene: &Scene) -> (Cluster, Vec<Gang>) {
    let mut infos = Vec::new();
    for (i, (m, health, domain)) in scene.nodes.iter().enumerate() {
        let mut n = NodeInfo::from_machine(&format!("n{i}"), builtin(MACHINES[*m]).unwrap());
        for (g, h) in n.gpus.iter_mut().zip(health) {
            g.healthy = *h;
        }
        n.domain = domain.map(|d| format!("d{d}"));
        infos.push(n);
    }
    let mut cluster = Cluster::new(infos.clone()).unwrap();
    for (gi, (node, gpus, priority, pods)) in scene.running.iter().enumerate() {
        for p in 0..*pods {
            let target = &infos[(node + p as usize) % infos.len()];
            let free = cluster.free_gpus(&target.name).unwrap();
            let take: Vec<u32> = free
                .iter()
                .take(*gpus as usize)
                .map(|&g| g as u32)
                .collect();
            let _ = cluster.add_pod(PlacedPod {
                id: PodId::new(format!("run{gi}-{p}")),
                gang: GangKey::new("run", format!("g{gi}")),
                node: target.name.clone(),
                resources: Resources::new(1000, 1 << 30, take.len() as u32),
                gpus: take,
                priority: *priority,
                started_at: gi as u64,
                preemptible: true,
                terminating: false,
                ends_by: None,
            });
        }
    }
    let gangs = scene
        .pending
        .iter()
        .enumerate()
        .map(|(i, (pods, gpus, min_extra, priority, can_preempt))| {
            let mut g = Gang::uniform("p", &format!("g{i}"), *pods, *gpus, *priority, i as u64);
            g.min_member = (*pods).saturating_sub(*min_extra).max(1);
            g.can_preempt = *can_preempt;
            g
        })
        .collect();
    (cluster, gangs)
}

fn healthy(c: &Cluster, node: &str) -> Vec<bool> {
    c.node(node)
        .unwrap()
        .gpus
        .iter()
        .map(|g: &GpuInfo| g.healthy)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plans_keep_every_promise(scene in scene(), now in 0u64..1000) {
        let (mut cluster, gangs) = build(&scene);
        let config = PlannerConfig::default();
        let plan = cluster.plan(&gangs, now, &config);
        prop_assert_eq!(&plan, &cluster.plan(&gangs, now, &config), "deterministic");

        // Each gang gets exactly one verdict.
        let mut seen = HashSet::new();
        for k in plan.placements.iter().map(|p| &p.gang)
            .chain(plan.preemptions.iter().map(|p| &p.gang))
            .chain(plan.waiting.iter().map(|w| &w.gang)) {
            prop_assert!(seen.insert(k.clone()), "{} has two verdicts", k);
        }
        prop_assert_eq!(seen.len(), gangs.len());

        let by_key: HashMap<&GangKey, &Gang> = gangs.iter().map(|g| (&g.key, g)).collect();
        // Victims: strictly lower priority, evicted whole, never chosen twice.
        let mut victims = HashSet::new();
        for p in &plan.preemptions {
            let preemptor = by_key[&p.gang];
            for v in &p.victims {
                prop_assert!(v.priority < preemptor.priority);
                prop_assert!(victims.insert(v.gang.clone()));
                let running: HashSet<PodId> = cluster.gang_pods(&v.gang).map(|p| p.id.clone()).collect();
                prop_assert_eq!(running, v.pods.iter().cloned().collect::<HashSet<_>>(), "whole gang");
            }
        }
        for v in &victims {
            let pods: Vec<PodId> = cluster.gang_pods(v).map(|p| p.id.clone()).collect();
            for id in pods {
                cluster.remove_pod(&id);
            }
        }
        // All-or-nothing, and committing never over-commits or shares a GPU (add_pod refuses).
        for (gang_key, assignments) in plan.placements.iter().map(|p| (&p.gang, &p.assignments))
            .chain(plan.preemptions.iter().map(|p| (&p.gang, &p.assignments))) {
            let gang = by_key[gang_key];
            prop_assert!(assignments.len() as u32 >= gang.min_member, "{} placed partially", gang_key);
            for a in assignments {
                let h = healthy(&cluster, &a.node);
                prop_assert!(a.gpus.iter().all(|&g| h[g as usize]), "unhealthy GPU handed out");
            }
            cluster.commit(gang, assignments, 100).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for w in &plan.waiting {
            prop_assert_eq!(cluster.gang_pods(&w.gang).count(), 0, "waiting gang has pods");
            prop_assert!(!w.message.is_empty());
        }
    }

    #[test]
    fn gpu_choice_returns_k_free_gpus(free in 0u64..256, k in 0u32..=8, machine in 0..MACHINES.len()) {
        let m = builtin(MACHINES[machine]).unwrap();
        let full = (1u64 << m.gpu_count()) - 1;
        let free = free & full;
        let t = muster_core::gpu_choice::GpuTable::new(m.topology.clone());
        match t.choose(free, k, 0) {
            Some(set) => {
                prop_assert_eq!(set.count_ones(), k);
                prop_assert_eq!(set & !free, 0);
            }
            None => prop_assert!(free.count_ones() < k),
        }
    }
}
