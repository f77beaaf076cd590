//! Property test: skipping gangs equivalent to one that could not fit (issue #18) changes no
//! plan. Scenes repeat a few shapes so that the skip fires, and mix in what changes within a
//! round: reservations, members beyond the minimum, gangs partly running, terminating pods,
//! preemption, taints and one-per-node members.

use muster_api::machines::builtin;
use muster_core::{
    Cluster, Gang, GangKey, LabelRequirement, NodeInfo, PlacedPod, PlannerConfig, PodId, Resources,
    Taint, TaintEffect, Toleration,
};
use proptest::prelude::*;

const MACHINES: [&str; 3] = ["dgx-a100", "dgx1-v100", "l4-pcie-2s"];

/// (pods, GPUs per pod index, extra members, priority, tolerates, one per node, running, created)
type Pending = (u32, usize, u32, i32, bool, bool, u32, u64);

#[derive(Debug, Clone)]
struct Scene {
    /// (machine, rack, tainted)
    nodes: Vec<(usize, u8, bool)>,
    /// (node, GPUs, priority, pods, terminating)
    running: Vec<(usize, u32, i32, u32, bool)>,
    pending: Vec<Pending>,
    max_reservations: usize,
    preemption: bool,
    now: u64,
}

fn scene() -> impl Strategy<Value = Scene> {
    let node = (0..MACHINES.len(), 0u8..2, prop::bool::weighted(0.2));
    let running = (
        0usize..8,
        1u32..=8,
        -2i32..2,
        1u32..=3,
        prop::bool::weighted(0.2),
    );
    let pending = (
        1u32..=5,
        0usize..3,
        0u32..=2,
        -1i32..2,
        any::<bool>(),
        prop::bool::weighted(0.2),
        0u32..=2,
        0u64..4000,
    );
    (
        prop::collection::vec(node, 1..8),
        prop::collection::vec(running, 0..14),
        prop::collection::vec(pending, 1..24),
        0usize..3,
        any::<bool>(),
        0u64..6000,
    )
        .prop_map(
            |(nodes, running, pending, max_reservations, preemption, now)| Scene {
                nodes,
                running,
                pending,
                max_reservations,
                preemption,
                now,
            },
        )
}

fn taint() -> Taint {
    Taint {
        key: "pool".into(),
        value: "reserved".into(),
        effect: TaintEffect::NoSchedule,
    }
}

fn build(scene: &Scene) -> (Cluster, Vec<Gang>) {
    let mut infos = Vec::new();
    for (i, (m, rack, tainted)) in scene.nodes.iter().enumerate() {
        let mut n = NodeInfo::from_machine(&format!("n{i}"), builtin(MACHINES[*m]).unwrap());
        n.domain = Some(format!("r{rack}"));
        n.labels.push(("rack".into(), format!("r{rack}")));
        if *tainted {
            n.taints.push(taint());
        }
        infos.push(n);
    }
    let mut cluster = Cluster::new(infos.clone()).unwrap();
    let add = |cluster: &mut Cluster, gang: GangKey, id: String, node: usize, gpus, prio, t| {
        let target = &infos[node % infos.len()];
        let free = cluster.free_gpus(&target.name).unwrap();
        let take: Vec<u32> = free.iter().take(gpus).map(|&g| g as u32).collect();
        let _ = cluster.add_pod(PlacedPod {
            id: PodId::new(id),
            gang,
            node: target.name.clone(),
            resources: Resources::new(1000, 1 << 30, take.len() as u32),
            gpus: take,
            priority: prio,
            started_at: 0,
            preemptible: true,
            terminating: t,
            ends_by: None,
        });
    };
    for (gi, (node, gpus, priority, pods, terminating)) in scene.running.iter().enumerate() {
        for p in 0..*pods {
            let key = GangKey::new("run", format!("g{gi}"));
            let id = format!("run{gi}-{p}");
            add(
                &mut cluster,
                key,
                id,
                node + p as usize,
                *gpus as usize,
                *priority,
                *terminating,
            );
        }
    }
    let mut gangs = Vec::new();
    for (i, &(pods, g, extra, priority, tolerates, one, running, created)) in
        scene.pending.iter().enumerate()
    {
        let gpus = [1, 2, 8][g];
        let name = format!("g{i}");
        let mut gang = Gang::uniform("p", &name, pods + extra, gpus, priority, created);
        gang.min_member = pods.saturating_add(running);
        for m in &mut gang.pending {
            m.one_per_node = one;
            if tolerates {
                m.tolerations.push(Toleration {
                    key: Some("pool".into()),
                    value: None,
                    effect: None,
                });
            }
            if i % 5 == 4 {
                m.selector.push(LabelRequirement::equals("rack", "r0"));
            }
        }
        // Members already running count towards the minimum.
        for r in 0..running {
            add(
                &mut cluster,
                gang.key.clone(),
                format!("p/{name}-run{r}"),
                i + r as usize,
                gpus as usize,
                // Running members may run at another priority than the gang now asks.
                priority - (r % 2) as i32,
                false,
            );
        }
        gangs.push(gang);
    }
    (cluster, gangs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn skipping_equivalent_gangs_changes_no_plan(scene in scene()) {
        let (cluster, gangs) = build(&scene);
        let skip = PlannerConfig {
            max_reservations: scene.max_reservations,
            preemption: scene.preemption,
            ..PlannerConfig::default()
        };
        let search = PlannerConfig { skip_equivalent: false, ..skip.clone() };
        let with = cluster.plan(&gangs, scene.now, &skip);
        let without = cluster.plan(&gangs, scene.now, &search);
        // Placements, preemptions, reasons, reserved nodes and messages alike.
        prop_assert_eq!(with, without);
    }
}
