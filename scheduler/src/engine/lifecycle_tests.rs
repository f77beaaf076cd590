//! Each transition of a gang plan on its own, against a hand-made cluster.

use super::*;
use muster_core::{GpuInfo, Taint};

const T: Timing = Timing {
    barrier: Duration::from_secs(60),
    unclaimed: Duration::from_secs(180),
    watch_grace: Duration::from_secs(5),
    released: Duration::from_secs(120),
};

#[derive(Default)]
struct FakeWorld {
    pods: HashMap<(String, String), PodFacts>,
    nodes: HashMap<String, NodeInfo>,
    min: Option<Result<u32, String>>,
}

impl World for FakeWorld {
    fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts> {
        self.pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
    fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.get(name).cloned()
    }
    fn gang_min(&self, _: &GangKey, _: &GangSource) -> Result<u32, String> {
        self.min.clone().unwrap_or(Ok(2))
    }
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        allocatable: Resources::new(64_000, 1 << 40, 2),
        labels: Vec::new(),
        taints: Vec::new(),
        schedulable: true,
        gpus: (0..2)
            .map(|i| GpuInfo {
                id: format!("GPU-{name}-{i}"),
                model: "A100".into(),
                memory_mib: 40_000,
                healthy: true,
            })
            .collect(),
        topology: None,
        domain: None,
    }
}

fn slot(name: &str, node: &str) -> Slot {
    Slot {
        namespace: "ml".into(),
        name: name.into(),
        node: node.into(),
        gpus: vec![0],
        gpu_ids: vec![format!("GPU-{node}-0")],
        resources: Resources::new(1000, 1 << 30, 1),
        required: true,
    }
}

/// Two members a (uid-a on n0) and b (uid-b on n1), both in the cluster, min 2.
fn scene(made: Instant) -> (GangKey, LivePlan, FakeWorld) {
    let mut world = FakeWorld::default();
    for (pod, n) in [("a", "n0"), ("b", "n1")] {
        world.pods.insert(
            ("ml".into(), pod.into()),
            PodFacts {
                uid: format!("uid-{pod}"),
                ..PodFacts::default()
            },
        );
        world.nodes.insert(n.into(), node(n));
    }
    let plan = LivePlan {
        pods: HashMap::from([
            ("uid-a".into(), slot("a", "n0")),
            ("uid-b".into(), slot("b", "n1")),
        ]),
        priority: 0,
        queue: "default".into(),
        created_at: 0,
        min_member: 2,
        source: GangSource::Annotation {
            min_available: Ok(2),
        },
        made,
        first_arrival: None,
        arrived: HashMap::new(),
        released: false,
        sent: HashSet::new(),
    };
    (GangKey::new("ml", "g"), plan, world)
}

fn dropped(t: Transition) -> String {
    match t {
        Transition::Drop { reason, .. } => reason,
        other => panic!("expected the plan dropped, got {other:?}"),
    }
}

#[test]
fn a_healthy_plan_is_kept() {
    let now = Instant::now();
    let (g, plan, world) = scene(now);
    assert_eq!(decide(&g, &plan, &world, now, T), Transition::Keep);
}

#[test]
fn the_barrier_times_out_from_the_first_arrival() {
    let now = Instant::now();
    let (g, mut plan, world) = scene(now);
    plan.first_arrival = Some(now);
    let (tx, _rx) = oneshot::channel();
    plan.arrived.insert("uid-a".into(), tx);
    assert_eq!(
        decide(&g, &plan, &world, now + Duration::from_secs(59), T),
        Transition::Keep
    );
    let reason = dropped(decide(&g, &plan, &world, now + Duration::from_secs(61), T));
    assert!(reason.contains("1 of 2 members"), "{reason}");
}

#[test]
fn an_unclaimed_plan_is_dropped() {
    let now = Instant::now();
    let (g, plan, world) = scene(now);
    let reason = dropped(decide(&g, &plan, &world, now + Duration::from_secs(181), T));
    assert!(reason.contains("no member"), "{reason}");
}

#[test]
fn a_deleted_member_makes_the_plan_stale_after_the_watch_grace() {
    let now = Instant::now();
    let (g, plan, mut world) = scene(now);
    world.pods.remove(&("ml".into(), "b".into()));
    assert_eq!(decide(&g, &plan, &world, now, T), Transition::Keep);
    let reason = dropped(decide(&g, &plan, &world, now + Duration::from_secs(6), T));
    assert!(reason.contains("ml/b was deleted"), "{reason}");
}

#[test]
fn a_member_recreated_under_the_same_name_is_not_the_planned_pod() {
    let now = Instant::now();
    let (g, plan, mut world) = scene(now);
    world.pods.insert(
        ("ml".into(), "a".into()),
        PodFacts {
            uid: "uid-a2".into(),
            ..PodFacts::default()
        },
    );
    let reason = dropped(decide(&g, &plan, &world, now, T));
    assert!(reason.contains("replaced"), "{reason}");
}

#[test]
fn a_terminating_member_makes_the_plan_stale() {
    let now = Instant::now();
    let (g, plan, mut world) = scene(now);
    if let Some(p) = world.pods.get_mut(&("ml".into(), "a".into())) {
        p.terminating = true;
    }
    assert!(dropped(decide(&g, &plan, &world, now, T)).contains("being deleted"));
}

#[test]
fn node_changes_make_the_plan_stale() {
    let now = Instant::now();
    let (g, plan, world) = scene(now);
    let mut deleted = FakeWorld { ..world };
    deleted.nodes.remove("n1");
    assert!(dropped(decide(&g, &plan, &deleted, now, T)).contains("n1 was deleted"));

    let (_, _, mut cordoned) = scene(now);
    if let Some(n) = cordoned.nodes.get_mut("n0") {
        n.schedulable = false;
    }
    assert!(dropped(decide(&g, &plan, &cordoned, now, T)).contains("n0 is cordoned"));

    let (_, _, mut tainted) = scene(now);
    let taint = Taint {
        key: "maintenance".into(),
        value: "yes".into(),
        effect: TaintEffect::NoSchedule,
    };
    if let Some(n) = tainted.nodes.get_mut("n0") {
        n.taints.push(taint.clone());
    }
    assert!(dropped(decide(&g, &plan, &tainted, now, T)).contains("taint maintenance=yes"));
    // A member that tolerates the taint keeps the plan; a soft taint never counts.
    if let Some(p) = tainted.pods.get_mut(&("ml".into(), "a".into())) {
        p.tolerations.push(Toleration {
            key: Some("maintenance".into()),
            value: None,
            effect: None,
        });
    }
    assert_eq!(decide(&g, &plan, &tainted, now, T), Transition::Keep);
    if let Some(n) = tainted.nodes.get_mut("n1") {
        n.taints.push(Taint {
            effect: TaintEffect::PreferNoSchedule,
            ..taint
        });
    }
    assert_eq!(decide(&g, &plan, &tainted, now, T), Transition::Keep);
}

#[test]
fn an_unhealthy_or_vanished_planned_gpu_makes_the_plan_stale() {
    let now = Instant::now();
    let (g, plan, mut world) = scene(now);
    if let Some(n) = world.nodes.get_mut("n0") {
        n.gpus[1].healthy = false;
    }
    assert_eq!(
        decide(&g, &plan, &world, now, T),
        Transition::Keep,
        "an unplanned GPU going bad does not matter"
    );
    if let Some(n) = world.nodes.get_mut("n0") {
        n.gpus[0].healthy = false;
    }
    assert!(dropped(decide(&g, &plan, &world, now, T)).contains("GPU-n0-0 on n0 is unhealthy"));
    if let Some(n) = world.nodes.get_mut("n0") {
        n.gpus.remove(0);
    }
    assert!(dropped(decide(&g, &plan, &world, now, T)).contains("no longer on n0"));
}

#[test]
fn a_deleted_or_edited_group_makes_the_plan_stale() {
    let now = Instant::now();
    let (g, plan, mut world) = scene(now);
    world.min = Some(Err(
        "waiting for PodGroup.muster.dev ml/g: it does not exist".into(),
    ));
    assert!(dropped(decide(&g, &plan, &world, now, T)).contains("does not exist"));
    world.min = Some(Ok(3));
    assert!(dropped(decide(&g, &plan, &world, now, T)).contains("from 2 to 3"));
}

#[test]
fn a_released_plan_is_forgotten_once_its_sent_members_show_bound() {
    let now = Instant::now();
    let (g, mut plan, mut world) = scene(now);
    plan.released = true;
    plan.sent = HashSet::from(["uid-a".to_string(), "uid-b".to_string()]);
    // Released plans are not re-validated: their Bindings are on the way.
    world.nodes.clear();
    assert_eq!(decide(&g, &plan, &world, now, T), Transition::Keep);
    for (pod, n) in [("a", "n0"), ("b", "n1")] {
        if let Some(p) = world.pods.get_mut(&("ml".into(), pod.into())) {
            p.node = Some(n.into());
        }
    }
    assert_eq!(decide(&g, &plan, &world, now, T), Transition::Forget);
}

#[test]
fn a_released_plan_waits_for_its_unsent_extras_then_gives_up() {
    let now = Instant::now();
    let (g, mut plan, mut world) = scene(now);
    plan.released = true;
    plan.sent = HashSet::from(["uid-a".to_string()]);
    if let Some(p) = world.pods.get_mut(&("ml".into(), "a".into())) {
        p.node = Some("n0".into());
    }
    assert_eq!(decide(&g, &plan, &world, now, T), Transition::Keep);
    assert_eq!(
        decide(&g, &plan, &world, now + Duration::from_secs(121), T),
        Transition::Forget
    );
}

#[test]
fn the_barrier_is_complete_when_every_required_member_arrived() {
    let now = Instant::now();
    let (_, mut plan, _) = scene(now);
    if let Some(s) = plan.pods.get_mut("uid-b") {
        s.required = false;
    }
    assert!(!plan.barrier_complete());
    let (tx, _rx) = oneshot::channel();
    plan.arrived.insert("uid-a".into(), tx);
    assert!(
        plan.barrier_complete(),
        "an extra does not hold the barrier"
    );
}
