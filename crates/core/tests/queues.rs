//! Queues: limits, borrowing, reclaim, fair share and their explanations, on named scenes.

use muster_api::machines::builtin;
use muster_core::queues::Resource;
use muster_core::{
    Cluster, Gang, GangKey, NodeInfo, PlacedPod, Plan, PlannerConfig, PodId, QueueSpec, QueueTree,
    QueueWait, Resources, WaitReason,
};

fn cluster(nodes: usize) -> Cluster {
    let spec = builtin("dgx-a100").unwrap();
    Cluster::new((0..nodes).map(|i| NodeInfo::from_machine(&format!("n{i}"), spec))).unwrap()
}

/// A running gang of `pods` x 8 GPUs (whole nodes from `first`), in `queue`.
fn run(c: &mut Cluster, name: &str, queue: &str, first: usize, pods: usize, priority: i32) {
    let key = GangKey::new("run", name);
    for p in 0..pods {
        c.add_pod(PlacedPod {
            id: PodId::new(format!("{name}-{p}")),
            gang: key.clone(),
            node: format!("n{}", first + p),
            resources: Resources::new(1000, 1 << 30, 8),
            gpus: (0..8).collect(),
            priority,
            started_at: 0,
            preemptible: true,
            terminating: false,
            ends_by: None,
        })
        .unwrap();
    }
    c.set_gang_queue(&key, queue);
}

fn gang(name: &str, queue: &str, pods: u32, priority: i32) -> Gang {
    let mut g = Gang::uniform("ns", name, pods, 8, priority, 0);
    g.queue = queue.into();
    g
}

fn gpus(name: &str, guaranteed: i64, limit: Option<i64>) -> QueueSpec {
    QueueSpec::new(name).quota(Resource::Gpu, guaranteed, limit)
}

fn plan(c: &Cluster, pending: &[Gang], tree: &QueueTree) -> Plan {
    c.plan_with_queues(pending, 0, &PlannerConfig::default(), tree)
}

fn status<'p>(p: &'p Plan, q: &str) -> &'p muster_core::QueueStatus {
    p.queues.iter().find(|s| s.name == q).unwrap()
}

#[test]
fn a_queue_at_its_limit_waits_and_says_so() {
    let mut c = cluster(4);
    run(&mut c, "r1", "research", 0, 2, 0);
    let tree = QueueTree::new(&[gpus("research", 0, Some(16)), QueueSpec::new("other")]).unwrap();
    let p = plan(&c, &[gang("more", "research", 1, 0)], &tree);
    let w = p.waiting_for(&GangKey::new("ns", "more")).unwrap();
    assert_eq!(w.queue, Some(QueueWait::AtLimit));
    assert_eq!(
        w.message,
        "queue research is at its limit 16/16 GPUs; the gang needs 8 more"
    );
    // Another queue takes the free GPUs meanwhile.
    let p = plan(&c, &[gang("o", "other", 2, 0)], &tree);
    assert!(p.placement_for(&GangKey::new("ns", "o")).is_some());
    assert_eq!(status(&p, "research").allocated.gpus, 16);
    assert_eq!(status(&p, "research").running_gangs, 1);
    assert_eq!(status(&p, "other").pending_gangs, 1);
}

#[test]
fn a_parents_limit_covers_its_children() {
    let mut c = cluster(4);
    run(&mut c, "a1", "a", 0, 2, 0);
    let tree = QueueTree::new(&[
        gpus("org", 0, Some(16)),
        QueueSpec::new("a").parent("org"),
        QueueSpec::new("b").parent("org"),
    ])
    .unwrap();
    let p = plan(&c, &[gang("b1", "b", 1, 0)], &tree);
    let w = p.waiting_for(&GangKey::new("ns", "b1")).unwrap();
    assert!(
        w.message
            .starts_with("queue org is at its limit 16/16 GPUs"),
        "{}",
        w.message
    );
    // Workloads only in leaves, and only in queues that exist.
    let p = plan(
        &c,
        &[gang("x", "org", 1, 0), gang("y", "nope", 1, 0)],
        &tree,
    );
    let x = p.waiting_for(&GangKey::new("ns", "x")).unwrap();
    assert_eq!(x.queue, Some(QueueWait::InvalidQueue));
    assert!(x.message.contains("only leaf queues hold workloads"));
    let y = p.waiting_for(&GangKey::new("ns", "y")).unwrap();
    assert_eq!(y.message, "queue nope does not exist");
}

/// team-b borrows team-a's idle guarantee: 32 GPUs, 16 guaranteed each, b runs on all 4 nodes.
fn borrowed() -> Cluster {
    let mut c = cluster(4);
    run(&mut c, "b-old", "team-b", 0, 1, 0);
    run(&mut c, "b-mid", "team-b", 1, 1, 0);
    run(&mut c, "b-new1", "team-b", 2, 1, 0);
    run(&mut c, "b-new2", "team-b", 3, 1, 1);
    c
}

#[test]
fn borrowing_shows_in_status() {
    let c = borrowed();
    let tree = QueueTree::new(&[gpus("team-a", 16, None), gpus("team-b", 16, None)]).unwrap();
    let p = plan(&c, &[], &tree);
    let b = status(&p, "team-b");
    assert_eq!(
        (b.allocated.gpus, b.borrowed.gpus, b.lent.gpus),
        (32, 16, 0)
    );
    let a = status(&p, "team-a");
    assert_eq!((a.allocated.gpus, a.borrowed.gpus, a.lent.gpus), (0, 0, 16));
    assert_eq!(a.limit.gpus, u64::MAX, "no limit");
    let tree = QueueTree::new(&[gpus("team-a", 16, Some(24)), gpus("team-b", 16, None)]).unwrap();
    assert_eq!(status(&plan(&c, &[], &tree), "team-a").limit.gpus, 24);
}

#[test]
fn a_queue_below_its_guarantee_reclaims_whole_borrowing_gangs() {
    let c = borrowed();
    let tree = QueueTree::new(&[gpus("team-a", 16, None), gpus("team-b", 16, None)]).unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 2, -5)], &tree);
    assert_eq!(p.preemptions.len(), 1, "{:?}", p.waiting);
    let r = &p.preemptions[0];
    assert!(r.reclaim);
    assert_eq!(
        r.message,
        "reclaiming 16 GPUs borrowed by team-b (2 gangs) for queue team-a, below its guarantee"
    );
    // Lowest priority first: b-new2 (priority 1) stays.
    let mut victims: Vec<&str> = r.victims.iter().map(|v| v.gang.name.as_str()).collect();
    victims.sort_unstable();
    assert!(!victims.contains(&"b-new2"), "{victims:?}");
    assert_eq!(victims.len(), 2);
}

#[test]
fn reclaim_stops_at_the_victims_guarantee() {
    let c = borrowed();
    // team-a asks 24 (beyond its guarantee of 16): no reclaim, it waits for capacity.
    let tree = QueueTree::new(&[gpus("team-a", 16, None), gpus("team-b", 16, None)]).unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 3, 0)], &tree);
    assert!(p.preemptions.is_empty());
    // team-b guaranteed 24: only 8 borrowed, not enough for 16.
    let tree = QueueTree::new(&[gpus("team-a", 8, None), gpus("team-b", 24, None)]).unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 2, 0)], &tree);
    assert!(p.preemptions.is_empty(), "{:?}", p.preemptions);
    let p = plan(&c, &[gang("a1", "team-a", 1, 0)], &tree);
    assert_eq!(p.preemptions[0].victims.len(), 1);
}

#[test]
fn a_lender_without_reclaim_waits_and_says_what_reclaim_would_take() {
    let c = borrowed();
    let tree = QueueTree::new(&[
        gpus("team-a", 16, None).reclaimable(false),
        gpus("team-b", 16, None),
    ])
    .unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 2, 0)], &tree);
    let w = p.waiting_for(&GangKey::new("ns", "a1")).unwrap();
    assert_eq!(w.queue, Some(QueueWait::ReclaimRefused));
    assert!(
        w.message.contains(
            "would fit after reclaiming 16 GPUs borrowed by team-b (2 gangs), but queue team-a lends without reclaim"
        ),
        "{}",
        w.message
    );
}

#[test]
fn priority_preemption_stays_inside_the_queue() {
    let c = borrowed();
    let tree = QueueTree::new(&[QueueSpec::new("team-a"), QueueSpec::new("team-b")]).unwrap();
    let vip = gang("vip", "team-a", 1, 100);
    assert_eq!(
        c.plan(std::slice::from_ref(&vip), 0, &PlannerConfig::default())
            .preemptions
            .len(),
        1
    );
    let p = plan(&c, std::slice::from_ref(&vip), &tree);
    assert!(
        p.preemptions.is_empty(),
        "no guarantee, no eviction in other queues"
    );
    let mut vip_b = vip.clone();
    vip_b.queue = "team-b".into();
    let p = plan(&c, &[vip_b], &tree);
    assert_eq!(p.preemptions.len(), 1);
    assert!(!p.preemptions[0].reclaim);
}

#[test]
fn the_queue_furthest_below_its_share_goes_first() {
    let mut c = cluster(4);
    run(&mut c, "r1", "research", 0, 2, 0);
    run(&mut c, "v1", "vision", 2, 1, 0);
    let tree = QueueTree::new(&[QueueSpec::new("research"), QueueSpec::new("vision")]).unwrap();
    // research holds 16 of a 16 share, vision 8 of 16: vision's younger gang goes first.
    let mut r = gang("r2", "research", 1, 0);
    r.created_at = 0;
    let mut v = gang("v2", "vision", 1, 0);
    v.created_at = 10;
    let p = plan(&c, &[r, v], &tree);
    assert!(p.placement_for(&GangKey::new("ns", "v2")).is_some());
    let w = p.waiting_for(&GangKey::new("ns", "r2")).unwrap();
    assert_eq!(w.queue, Some(QueueWait::FairShare));
    assert!(
        w.message
            .starts_with("waiting for fair share: research 1.0 of its share, vision 0.5"),
        "{}",
        w.message
    );
    assert_eq!(status(&p, "vision").fair_share.gpus, 16);
    assert_eq!(status(&p, "research").share_ppm, 1_000_000);
}

#[test]
fn an_empty_tree_plans_exactly_like_plan() {
    let c = borrowed();
    let pending = [gang("x", "whatever", 1, 5), gang("y", "default", 2, 0)];
    let cfg = PlannerConfig::default();
    assert_eq!(
        c.plan_with_queues(&pending, 0, &cfg, &QueueTree::default()),
        c.plan(&pending, 0, &cfg)
    );
    let w = c.plan(&pending, 0, &cfg);
    assert!(w.queues.is_empty());
    assert!(
        w.waiting
            .iter()
            .all(|w| w.reason != WaitReason::MissingMembers)
    );
}

#[test]
fn a_borrower_that_protects_what_it_borrows_is_not_reclaimed() {
    // Volcano's `reclaimable: false` on the borrower: what team-b uses beyond its guarantee is
    // not taken back; team-a waits and is told why.
    let c = borrowed();
    let tree = QueueTree::new(&[
        gpus("team-a", 16, None),
        gpus("team-b", 16, None).borrowed_reclaimable(false),
    ])
    .unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 2, -5)], &tree);
    assert!(p.preemptions.is_empty(), "{:?}", p.preemptions);
    let w = p.waiting_for(&GangKey::new("ns", "a1")).unwrap();
    assert!(
        w.message
            .contains("team-b keeps what it borrows (borrowed capacity not reclaimable)"),
        "{}",
        w.message
    );
}

#[test]
fn a_closed_queue_admits_no_gang_and_says_so() {
    let c = cluster(2);
    let tree = QueueTree::new(&[gpus("team-a", 16, None).closed(true)]).unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 1, 0)], &tree);
    assert!(p.placements.is_empty());
    let w = p.waiting_for(&GangKey::new("ns", "a1")).unwrap();
    assert_eq!(w.queue, Some(QueueWait::Closed));
    assert_eq!(w.message, "queue team-a is closed: it admits no new gangs");
}

/// A running gang of one pod of `gpus` GPUs from GPU `first` of `node`, in `queue`.
fn run_gpus(c: &mut Cluster, name: &str, queue: &str, node: usize, first: u32, gpus: u32) {
    let key = GangKey::new("run", name);
    c.add_pod(PlacedPod {
        id: PodId::new(format!("{name}-0")),
        gang: key.clone(),
        node: format!("n{node}"),
        resources: Resources::new(1000, 1 << 30, gpus),
        gpus: (first..first + gpus).collect(),
        priority: 0,
        started_at: 0,
        preemptible: true,
        terminating: false,
        ends_by: None,
    })
    .unwrap();
    c.set_gang_queue(&key, queue);
}

#[test]
fn two_gangs_of_a_queue_both_reclaim_in_one_round() {
    // team-a borrows all 16 GPUs with four 4-GPU gangs, g0 and g1 on n0, g2 and g3 on n1. Two
    // 4-GPU gangs of team-b (guaranteed 8) both reclaim: the first reclaim's node still has
    // a borrower to give up.
    let mut c = cluster(2);
    for g in 0..4u32 {
        run_gpus(
            &mut c,
            &format!("g{g}"),
            "team-a",
            (g / 2) as usize,
            (g % 2) * 4,
            4,
        );
    }
    let tree = QueueTree::new(&[gpus("team-a", 8, None), gpus("team-b", 8, None)]).unwrap();
    let mut x = Gang::uniform("ns", "x", 1, 4, 0, 0);
    x.queue = "team-b".into();
    let mut y = Gang::uniform("ns", "y", 1, 4, 0, 1);
    y.queue = "team-b".into();
    let p = plan(&c, &[x, y], &tree);
    assert_eq!(p.preemptions.len(), 2, "{:?}", p.waiting);
    let mut gpus_taken: Vec<(String, u32)> = p
        .preemptions
        .iter()
        .flat_map(|r| r.assignments.iter())
        .flat_map(|a| a.gpus.iter().map(|&g| (a.node.to_string(), g)))
        .collect();
    let n = gpus_taken.len();
    gpus_taken.sort();
    gpus_taken.dedup();
    assert_eq!(
        gpus_taken.len(),
        n,
        "a GPU promised twice: {:?}",
        p.preemptions
    );
}

#[test]
fn a_limit_message_speaks_in_the_limits_unit() {
    let c = cluster(2);
    let tree = QueueTree::new(&[
        QueueSpec::new("memq").quota(Resource::Memory, 0, Some(1536 << 20)),
        gpus("small", 0, Some(2)),
    ])
    .unwrap();
    let mut m = Gang::uniform("ns", "m", 2, 1, 0, 0);
    m.queue = "memq".into();
    let mut s = Gang::uniform("ns", "s", 3, 1, 0, 0);
    s.queue = "small".into();
    let p = plan(&c, &[m, s], &tree);
    let msg = |n: &str| {
        p.waiting_for(&GangKey::new("ns", n))
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        msg("m"),
        "queue memq would go above its limit: 0/1536 MiB memory held, the gang needs 32768 MiB"
    );
    assert_eq!(
        msg("s"),
        "queue small would go above its limit: 0/2 GPUs held, the gang needs 3 GPUs"
    );
}

#[test]
fn a_closed_queues_waiting_gangs_count_as_pending() {
    let c = cluster(2);
    let tree = QueueTree::new(&[gpus("team-a", 16, None).closed(true)]).unwrap();
    let p = plan(&c, &[gang("a1", "team-a", 1, 0)], &tree);
    assert_eq!(status(&p, "team-a").pending_gangs, 1);
}

#[test]
fn gpus_of_gangs_in_no_queue_are_not_shared_out() {
    // 16 GPUs; a running gang of a queue that does not exist holds 8. The two queues split
    // the other 8, not 16.
    let mut c = cluster(2);
    run(&mut c, "ghost", "gone", 0, 1, 0);
    let tree = QueueTree::new(&[gpus("a", 0, None), gpus("b", 0, None)]).unwrap();
    let p = plan(&c, &[gang("x", "a", 1, 0), gang("y", "b", 1, 0)], &tree);
    let share = status(&p, "a").fair_share.gpus + status(&p, "b").fair_share.gpus;
    assert_eq!(share, 8, "{:?}", p.queues);
}

#[test]
fn the_fair_share_note_only_where_the_room_taken_would_have_fitted() {
    // One node, 3 GPUs free; team-b holds 5. team-a (further below its share) places 2 first.
    // z (2 GPUs) would have fitted in what team-a took: it waits for fair share. y (8 GPUs)
    // would never have fitted: its reason is capacity alone.
    let mut c = cluster(1);
    run_gpus(&mut c, "b-run", "team-b", 0, 0, 5);
    let tree = QueueTree::new(&[gpus("team-a", 0, None), gpus("team-b", 0, None)]).unwrap();
    let mut x = Gang::uniform("ns", "x", 1, 2, 0, 0);
    x.queue = "team-a".into();
    let mut y = Gang::uniform("ns", "y", 2, 4, 0, 1);
    y.queue = "team-b".into();
    let mut z = Gang::uniform("ns", "z", 1, 2, 0, 2);
    z.queue = "team-b".into();
    let p = plan(&c, &[x, y, z], &tree);
    assert_eq!(p.placements.len(), 1, "{:?}", p.waiting);
    let w = |n: &str| p.waiting_for(&GangKey::new("ns", n)).unwrap().clone();
    assert_eq!(
        w("z").queue,
        Some(QueueWait::FairShare),
        "{}",
        w("z").message
    );
    assert_eq!(w("y").queue, None, "{}", w("y").message);
    assert!(!w("y").message.contains("fair share"), "{}", w("y").message);
}
