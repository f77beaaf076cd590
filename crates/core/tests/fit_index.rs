//! Property test: the fit index (placing a gang looks only at nodes with room, issue #18)
//! changes no plan. The default plan must equal the plan with every shortcut off and the plan
//! with only the index off. Scenes mix what changes free capacity within a round (placements,
//! rolled-back attempts, preemptors' holds, reservations, backfill) with what filters nodes
//! (taints, cordons, selectors, one-per-node members, CPU-bound and CPU-only pods), with and
//! without queues.

use muster_api::machines::builtin;
use muster_core::{
    Cluster, Gang, GangKey, LabelRequirement, NodeInfo, PlacedPod, PlannerConfig, PodId,
    QueueResource, QueueSpec, QueueTree, Resources, Taint, TaintEffect, Toleration,
};
use proptest::prelude::*;

const MACHINES: [&str; 3] = ["dgx-a100", "dgx1-v100", "l4-pcie-2s"];
const GPUS: [u32; 5] = [0, 1, 2, 4, 8];
const CPUS: [u64; 3] = [500, 4_000, 48_000];

/// (pods, GPUs index, CPU index, extra members, priority, tolerates, one per node, running,
/// created, declared run time, a first member of another shape (GPUs index, CPU index))
type Pending = (
    u32,
    usize,
    usize,
    u32,
    i32,
    bool,
    bool,
    u32,
    u64,
    Option<u64>,
    Option<(usize, usize)>,
);

/// (node, GPUs, CPU index, priority, pods, terminating, declared end)
type Runs = (usize, u32, usize, i32, u32, bool, Option<u64>);

#[derive(Debug, Clone)]
struct Scene {
    /// (machine, rack, tainted, cordoned)
    nodes: Vec<(usize, u8, bool, bool)>,
    running: Vec<Runs>,
    pending: Vec<Pending>,
    /// Single-pod gangs of a few shapes, as most of a long queue is: (GPUs index, tolerates,
    /// created).
    singles: Vec<(usize, bool, u64)>,
    max_reservations: usize,
    preemption: bool,
    now: u64,
    queues: bool,
}

fn scene() -> impl Strategy<Value = Scene> {
    let node = (
        0..MACHINES.len(),
        0u8..3,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
    );
    let running = (
        0usize..12,
        0u32..=8,
        0..CPUS.len(),
        -2i32..2,
        1u32..=3,
        prop::bool::weighted(0.15),
        prop::option::weighted(0.5, 0u64..8000),
    );
    let pending = (
        1u32..=6,
        0..GPUS.len(),
        0..CPUS.len(),
        0u32..=2,
        -1i32..2,
        any::<bool>(),
        prop::bool::weighted(0.2),
        0u32..=2,
        0u64..4000,
        prop::option::weighted(0.3, 100u64..5000),
        // A launcher beside the workers: a gang of two shapes, which can fail after placing
        // its first shape, so that the round gives capacity back.
        prop::option::weighted(0.3, (0..GPUS.len(), 0..CPUS.len())),
    );
    (
        prop::collection::vec(node, 1..12),
        prop::collection::vec(running, 0..20),
        prop::collection::vec(pending, 1..28),
        prop::collection::vec((1usize..3, any::<bool>(), 0u64..4000), 0..24),
        0usize..3,
        any::<bool>(),
        0u64..6000,
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(nodes, running, pending, singles, max_reservations, preemption, now, queues)| Scene {
                nodes,
                running,
                pending,
                singles,
                max_reservations,
                preemption,
                now,
                queues,
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

/// A running pod of `gpus` GPUs (as many as are free) on `node`; ignored if it does not fit.
struct Running {
    gang: GangKey,
    id: String,
    node: usize,
    gpus: usize,
    cpu: u64,
    priority: i32,
    terminating: bool,
    ends_by: Option<u64>,
}

fn add(cluster: &mut Cluster, infos: &[NodeInfo], r: Running) {
    let target = &infos[r.node % infos.len()];
    let Some(free) = cluster.free_gpus(&target.name) else {
        return;
    };
    let take: Vec<u32> = free.iter().take(r.gpus).map(|&g| g as u32).collect();
    let _ = cluster.add_pod(PlacedPod {
        id: PodId::new(r.id),
        gang: r.gang,
        node: target.name.clone(),
        resources: Resources::new(r.cpu, 1 << 30, take.len() as u32),
        gpus: take,
        priority: r.priority,
        started_at: 0,
        preemptible: true,
        terminating: r.terminating,
        ends_by: r.ends_by,
    });
}

fn build(scene: &Scene) -> (Cluster, Vec<Gang>) {
    let mut infos = Vec::new();
    for (i, &(m, rack, tainted, cordoned)) in scene.nodes.iter().enumerate() {
        let mut n = NodeInfo::from_machine(&format!("n{i}"), builtin(MACHINES[m]).unwrap());
        n.domain = Some(format!("r{rack}"));
        n.labels.push(("rack".into(), format!("r{rack}")));
        n.schedulable = !cordoned;
        if tainted {
            n.taints.push(taint());
        }
        infos.push(n);
    }
    let mut cluster = Cluster::new(infos.clone()).unwrap();
    for (gi, &(node, gpus, cpu, priority, pods, terminating, ends_by)) in
        scene.running.iter().enumerate()
    {
        for p in 0..pods {
            let r = Running {
                gang: GangKey::new("run", format!("g{gi}")),
                id: format!("run{gi}-{p}"),
                node: node + p as usize,
                gpus: gpus as usize,
                cpu: CPUS[cpu],
                priority,
                terminating,
                ends_by,
            };
            add(&mut cluster, &infos, r);
        }
    }
    let mut gangs = Vec::new();
    for (i, pending) in scene.pending.iter().enumerate() {
        let &(pods, g, cpu, extra, priority, tolerates, one, running, created, runtime, first) =
            pending;
        let gpus = GPUS[g];
        let name = format!("g{i}");
        let mut gang = Gang::uniform("p", &name, pods + extra, gpus, priority, created);
        gang.min_member = pods.saturating_add(running);
        gang.runtime_limit = runtime;
        gang.queue = format!("q{}", i % 2);
        for m in &mut gang.pending {
            m.resources.cpu_millis = CPUS[cpu];
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
        if let (Some((g, cpu)), Some(m)) = (first, gang.pending.first_mut()) {
            m.resources.gpus = GPUS[g];
            m.resources.cpu_millis = CPUS[cpu];
        }
        // Members already running count towards the minimum.
        for r in 0..running {
            let r = Running {
                gang: gang.key.clone(),
                id: format!("p/{name}-run{r}"),
                node: i + r as usize,
                gpus: gpus as usize,
                cpu: CPUS[cpu],
                // Running members may run at another priority than the gang now asks.
                priority: priority - (r % 2) as i32,
                terminating: false,
                ends_by: None,
            };
            add(&mut cluster, &infos, r);
        }
        gangs.push(gang);
    }
    for (i, &(g, tolerates, created)) in scene.singles.iter().enumerate() {
        let mut gang = Gang::uniform("s", &format!("s{i}"), 1, GPUS[g], 0, created);
        gang.queue = format!("q{}", i % 2);
        for m in &mut gang.pending {
            if tolerates {
                m.tolerations.push(Toleration {
                    key: Some("pool".into()),
                    value: None,
                    effect: None,
                });
            }
        }
        gangs.push(gang);
    }
    (cluster, gangs)
}

/// Two queues sharing the cluster's GPUs, so that queue rounds (with reclaim) are planned too.
fn tree() -> QueueTree {
    let specs = [
        QueueSpec::new("org"),
        QueueSpec::new("q0")
            .parent("org")
            .quota(QueueResource::Gpu, 8, None),
        QueueSpec::new("q1")
            .parent("org")
            .quota(QueueResource::Gpu, 4, None),
    ];
    QueueTree::new(&specs).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_fit_index_changes_no_plan(scene in scene()) {
        let (cluster, gangs) = build(&scene);
        let fast = PlannerConfig {
            max_reservations: scene.max_reservations,
            preemption: scene.preemption,
            ..PlannerConfig::default()
        };
        let no_index = PlannerConfig { index_fits: false, ..fast.clone() };
        let slow = PlannerConfig { skip_equivalent: false, ..no_index.clone() };
        let plan = |config: &PlannerConfig| {
            if scene.queues {
                cluster.plan_with_queues(&gangs, scene.now, config, &tree())
            } else {
                cluster.plan(&gangs, scene.now, config)
            }
        };
        let with = plan(&fast);
        // Placements, preemptions, reasons, reserved nodes and messages alike.
        prop_assert_eq!(&with, &plan(&no_index));
        prop_assert_eq!(&with, &plan(&slow));
    }
}
