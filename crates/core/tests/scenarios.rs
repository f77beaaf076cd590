//! Planner behaviour on small, named scenes.

use muster_api::machines::builtin;
use muster_core::{
    Cluster, Gang, GangKey, LabelRequirement, NodeInfo, PlannerConfig, PodId, PodRequest,
    WaitReason,
};
use std::collections::HashSet;

fn nodes(machine: &str, count: usize) -> Vec<NodeInfo> {
    let spec = builtin(machine).unwrap();
    (0..count)
        .map(|i| NodeInfo::from_machine(&format!("n{i}"), spec))
        .collect()
}

fn cluster(machine: &str, count: usize) -> Cluster {
    Cluster::new(nodes(machine, count)).unwrap()
}

/// A running single-pod gang holding `gpus` on `node`.
fn busy(id: &str, node: &str, gpus: Vec<u32>) -> muster_core::PlacedPod {
    muster_core::PlacedPod {
        id: PodId(id.into()),
        gang: GangKey::new("x", id),
        node: node.into(),
        resources: muster_core::Resources::new(1000, 1 << 30, gpus.len() as u32),
        gpus,
        priority: 0,
        started_at: 0,
        preemptible: true,
        terminating: false,
        ends_by: None,
    }
}

/// The nodes a plan puts `gang` on.
fn nodes_used<'p>(plan: &'p muster_core::Plan, gang: &GangKey) -> HashSet<&'p str> {
    plan.placement_for(gang)
        .expect("the gang is placed")
        .assignments
        .iter()
        .map(|a| &*a.node)
        .collect()
}

fn cfg() -> PlannerConfig {
    PlannerConfig::default()
}

fn commit_all(c: &mut Cluster, gangs: &[Gang], now: u64) -> muster_core::Plan {
    let plan = c.plan(gangs, now, &cfg());
    for p in &plan.placements {
        let g = gangs.iter().find(|g| g.key == p.gang).unwrap();
        c.commit(g, &p.assignments, now).unwrap();
    }
    plan
}

#[test]
fn gang_of_four_whole_nodes_lands_on_four_nodes() {
    let mut c = cluster("dgx-a100", 4);
    let g = Gang::uniform("ml", "llm", 4, 8, 0, 0);
    let plan = commit_all(&mut c, std::slice::from_ref(&g), 0);
    let placed = plan.placement_for(&g.key).unwrap();
    let used: HashSet<&str> = placed.assignments.iter().map(|a| &*a.node).collect();
    assert_eq!(used.len(), 4);
    assert_eq!(c.free_gpu_total(), 0);
}

#[test]
fn gang_too_big_for_free_capacity_places_nothing_and_says_why() {
    let c = cluster("dgx-a100", 4);
    let g = Gang::uniform("ml", "llm", 5, 8, 0, 0);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert!(plan.placements.is_empty());
    let w = plan.waiting_for(&g.key).unwrap();
    assert_eq!(w.reason, WaitReason::TooLarge, "{}", w.message);
    assert!(w.message.contains("needs 40 GPUs"), "{}", w.message);
}

#[test]
fn busy_cluster_reports_capacity_with_counts() {
    let mut c = cluster("dgx-a100", 5);
    commit_all(&mut c, &[Gang::uniform("ml", "first", 2, 8, 0, 0)], 0);
    let g = Gang::uniform("ml", "llm", 4, 8, 0, 1);
    let w = c
        .plan(std::slice::from_ref(&g), 1, &cfg())
        .waiting_for(&g.key)
        .cloned()
        .unwrap();
    assert_eq!(w.reason, WaitReason::Capacity);
    assert!(
        w.message
            .contains("needs 4 pods x 8 GPUs: 3 nodes with 8 free GPUs"),
        "{}",
        w.message
    );
}

#[test]
fn two_interleaved_gangs_one_runs_whole_the_other_waits_whole() {
    let mut c = cluster("dgx-a100", 4);
    let a = Gang::uniform("ml", "a", 3, 8, 0, 10);
    let b = Gang::uniform("ml", "b", 3, 8, 0, 11);
    let plan = commit_all(&mut c, &[b.clone(), a.clone()], 11);
    assert_eq!(
        plan.placement_for(&a.key).unwrap().assignments.len(),
        3,
        "older first"
    );
    assert!(plan.placement_for(&b.key).is_none());
    assert_eq!(c.gang_pods(&b.key).count(), 0);
    // When a finishes, b runs whole.
    for i in 0..3 {
        c.remove_pod(&PodId::new(format!("ml/a-{i}")));
    }
    let plan = commit_all(&mut c, std::slice::from_ref(&b), 20);
    assert_eq!(plan.placement_for(&b.key).unwrap().assignments.len(), 3);
}

#[test]
fn fragmentation_is_named_when_gpus_are_free_but_scattered() {
    let mut c = cluster("dgx-a100", 2);
    for (i, node) in ["n0", "n1"].iter().enumerate() {
        c.add_pod(busy(&format!("half-{i}"), node, vec![0, 1, 2, 3]))
            .unwrap();
    }
    let g = Gang::uniform("ml", "big", 1, 8, 0, 1);
    let w = c
        .plan(std::slice::from_ref(&g), 1, &cfg())
        .waiting_for(&g.key)
        .cloned()
        .unwrap();
    assert_eq!(w.reason, WaitReason::Fragmentation, "{}", w.message);
    assert!(
        w.message.contains("8 GPUs are free but fragmented"),
        "{}",
        w.message
    );
}

#[test]
fn best_fit_keeps_whole_nodes_whole() {
    let mut c = cluster("dgx-a100", 3);
    commit_all(&mut c, &[Gang::uniform("ml", "half", 1, 4, 0, 0)], 0);
    commit_all(&mut c, &[Gang::uniform("ml", "other", 1, 4, 0, 1)], 1);
    let nodes_used: HashSet<String> = c.pods().map(|p| p.node.clone()).collect();
    assert_eq!(nodes_used.len(), 1, "two 4-GPU pods share one node");
    let g = Gang::uniform("ml", "big", 2, 8, 0, 2);
    assert!(
        c.plan(std::slice::from_ref(&g), 2, &cfg())
            .placement_for(&g.key)
            .is_some()
    );
}

#[test]
fn four_gpu_pod_on_dgx1_gets_a_fully_nvlinked_quad() {
    let mut c = cluster("dgx1-v100", 1);
    let g = Gang::uniform("ml", "quad", 1, 4, 0, 0);
    let plan = commit_all(&mut c, std::slice::from_ref(&g), 0);
    let gpus = &plan.placement_for(&g.key).unwrap().assignments[0].gpus;
    assert!(
        gpus == &vec![0, 1, 2, 3] || gpus == &vec![4, 5, 6, 7],
        "{gpus:?}"
    );
}

#[test]
fn multi_node_gang_stays_in_one_nvlink_domain() {
    let spec = builtin("gb200-nvl72").unwrap();
    let mut all = Vec::new();
    for (d, count) in [("rack-a", 3), ("rack-b", 5)] {
        for i in 0..count {
            let mut n = NodeInfo::from_machine(&format!("{d}-{i}"), spec);
            n.domain = Some(d.to_string());
            all.push(n);
        }
    }
    let c = Cluster::new(all).unwrap();
    // 3 trays fit rack-a exactly: the tighter domain is chosen, rack-b stays whole.
    let g = Gang::uniform("ml", "g", 3, 4, 0, 0);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    let doms: HashSet<&str> = plan
        .placement_for(&g.key)
        .unwrap()
        .assignments
        .iter()
        .map(|a| &a.node[..6])
        .collect();
    assert_eq!(doms, HashSet::from(["rack-a"]));
    // 4 trays only fit rack-b.
    let g = Gang::uniform("ml", "g4", 4, 4, 0, 0);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    let doms: HashSet<&str> = plan
        .placement_for(&g.key)
        .unwrap()
        .assignments
        .iter()
        .map(|a| &a.node[..6])
        .collect();
    assert_eq!(doms, HashSet::from(["rack-b"]));
}

#[test]
fn high_priority_gang_preempts_whole_lower_gangs_only() {
    let mut c = cluster("dgx-a100", 4);
    let low1 = Gang::uniform("team-b", "low1", 2, 8, 0, 0);
    let low2 = Gang::uniform("team-b", "low2", 2, 8, 0, 1);
    commit_all(&mut c, std::slice::from_ref(&low1), 0);
    commit_all(&mut c, std::slice::from_ref(&low2), 1);
    assert_eq!(c.free_gpu_total(), 0);

    let same = Gang::uniform("team-a", "same", 1, 8, 0, 2);
    let plan = c.plan(std::slice::from_ref(&same), 2, &cfg());
    assert!(plan.preemptions.is_empty(), "equal priority never preempts");
    assert_eq!(
        plan.waiting_for(&same.key).unwrap().reason,
        WaitReason::Capacity
    );

    let high = Gang::uniform("team-a", "high", 1, 8, 1000, 3);
    let plan = c.plan(std::slice::from_ref(&high), 3, &cfg());
    let p = &plan.preemptions[0];
    assert_eq!(
        p.victims.len(),
        1,
        "one victim gang is enough: {}",
        p.message
    );
    assert_eq!(p.victims[0].pods.len(), 2, "the victim is evicted whole");
    assert_eq!(
        p.victims[0].gang,
        GangKey::new("team-b", "low2"),
        "newest victim first"
    );

    let whole = Gang::uniform("team-a", "all", 4, 8, 1000, 3);
    let plan = c.plan(std::slice::from_ref(&whole), 3, &cfg());
    assert_eq!(plan.preemptions[0].victims.len(), 2);
}

#[test]
fn preempted_pods_terminating_are_awaited_not_doubled() {
    let mut c = cluster("dgx-a100", 2);
    commit_all(&mut c, &[Gang::uniform("b", "low", 2, 8, 0, 0)], 0);
    let high = Gang::uniform("a", "high", 1, 8, 10, 1);
    let plan = c.plan(std::slice::from_ref(&high), 1, &cfg());
    for v in &plan.preemptions[0].victims {
        for p in &v.pods {
            c.mark_terminating(p);
        }
    }
    let plan = c.plan(std::slice::from_ref(&high), 2, &cfg());
    assert!(plan.preemptions.is_empty());
    let w = plan.waiting_for(&high.key).unwrap();
    assert_eq!(w.reason, WaitReason::WaitingForVictims);
    assert_eq!(w.reserved_nodes.len(), 1);
}

#[test]
fn preemption_policy_never_only_explains() {
    let mut c = cluster("dgx-a100", 1);
    commit_all(&mut c, &[Gang::uniform("b", "low", 1, 8, 0, 0)], 0);
    let mut high = Gang::uniform("a", "high", 1, 8, 10, 1);
    high.can_preempt = false;
    let plan = c.plan(std::slice::from_ref(&high), 1, &cfg());
    assert!(plan.preemptions.is_empty());
    let msg = &plan.waiting_for(&high.key).unwrap().message;
    assert!(
        msg.contains("would fit after preempting b/low (priority 0)"),
        "{msg}"
    );
}

#[test]
fn missing_members_wait_with_a_count() {
    let c = cluster("dgx-a100", 4);
    let mut g = Gang::uniform("ml", "g", 2, 8, 0, 0);
    g.min_member = 4;
    let w = c
        .plan(std::slice::from_ref(&g), 0, &cfg())
        .waiting
        .remove(0);
    assert_eq!(w.reason, WaitReason::MissingMembers);
    assert_eq!(
        w.message,
        "waiting for 2 more members: 2 of the 4 required exist"
    );
}

#[test]
fn selector_that_matches_nothing_is_unresolvable() {
    let c = cluster("dgx-a100", 3);
    let mut g = Gang::uniform("ml", "g", 1, 8, 0, 0);
    g.pending[0].selector = vec![LabelRequirement::equals("nvidia.com/gpu.product", "H200")];
    let w = c
        .plan(std::slice::from_ref(&g), 0, &cfg())
        .waiting
        .remove(0);
    assert_eq!(w.reason, WaitReason::NoMatchingNode);
    assert!(w.reason.unresolvable());
    assert!(
        w.message
            .contains("3 fail its node selector (nvidia.com/gpu.product=H200)"),
        "{}",
        w.message
    );
}

#[test]
fn elastic_members_beyond_minimum_are_placed_when_room() {
    let c = cluster("dgx-a100", 3);
    let mut g = Gang::uniform("ml", "g", 4, 8, 0, 0);
    g.min_member = 2;
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert_eq!(plan.placement_for(&g.key).unwrap().assignments.len(), 3);
}

#[test]
fn long_waiting_big_gang_reserves_nodes_small_gangs_cannot_take() {
    let mut c = cluster("dgx-a100", 2);
    // One 4-GPU pod on each node: an 8-GPU gang of 2 cannot fit.
    commit_all(&mut c, &[Gang::uniform("x", "a", 1, 4, 0, 0)], 0);
    commit_all(&mut c, &[Gang::uniform("x", "b", 1, 8, 0, 0)], 0);
    c.remove_pod(&PodId::new("x/b-0"));
    commit_all(&mut c, &[Gang::uniform("x", "c", 1, 4, 0, 0)], 0);
    let nodes_used: HashSet<String> = c.pods().map(|p| p.node.clone()).collect();
    assert_eq!(nodes_used.len(), 1);
    let big = Gang::uniform("ml", "big", 2, 8, 0, 0);
    let small = Gang::uniform("ml", "small", 1, 1, 0, 5);
    // Before the threshold, the small gang backfills the free node.
    let early = c.plan(&[big.clone(), small.clone()], 10, &cfg());
    assert!(early.placement_for(&small.key).is_some());
    // After it, the big gang holds the nodes and the small one waits.
    let late = c.plan(&[big.clone(), small.clone()], 4000, &cfg());
    assert_eq!(late.waiting_for(&big.key).unwrap().reserved_nodes.len(), 2);
    let w = late.waiting_for(&small.key).unwrap();
    assert!(
        w.message.contains("held for an older gang"),
        "{}",
        w.message
    );
}

#[test]
fn cpu_only_pods_avoid_gpu_nodes() {
    let mut all = nodes("dgx-a100", 1);
    let mut cpu = NodeInfo::from_machine("cpu-0", builtin("dgx-a100").unwrap());
    cpu.gpus.clear();
    cpu.topology = None;
    cpu.allocatable.gpus = 0;
    all.push(cpu);
    let c = Cluster::new(all).unwrap();
    let g = Gang {
        pending: vec![PodRequest::gpus("ml/cpu-0", 0)],
        ..Gang::uniform("ml", "cpu", 1, 0, 0, 0)
    };
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert_eq!(
        &*plan.placement_for(&g.key).unwrap().assignments[0].node,
        "cpu-0"
    );
}

#[test]
fn reservation_holds_the_node_closest_to_free() {
    let mut c = cluster("dgx-a100", 2);
    c.add_pod(busy("seven", "n0", (0..7).collect())).unwrap();
    c.add_pod(busy("one", "n1", vec![0])).unwrap();
    let g = Gang::uniform("ml", "whole", 1, 8, 0, 0);
    let plan = c.plan(std::slice::from_ref(&g), 4000, &cfg());
    assert_eq!(plan.waiting_for(&g.key).unwrap().reserved_nodes, vec!["n1"]);
}

/// A gang restarted whole: its old pods still terminate on the nodes, two of its four new
/// members exist. Terminating pods are not members, so the two wait for the other two.
#[test]
fn terminating_members_do_not_count_toward_the_minimum() {
    let mut c = cluster("dgx-a100", 8);
    let key = GangKey::new("ml", "rs");
    for i in 0..4 {
        let mut old = busy(&format!("old-{i}"), &format!("n{i}"), (0..8).collect());
        old.gang = key.clone();
        old.terminating = true;
        c.record_pod(old).unwrap();
    }
    let mut g = Gang::uniform("ml", "rs", 4, 8, 0, 0);
    g.pending.truncate(2);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert!(plan.placements.is_empty(), "{plan:?}");
    assert_eq!(
        plan.waiting_for(&key).map(|w| w.reason),
        Some(WaitReason::MissingMembers)
    );

    // All four new members: placed whole on the four free nodes.
    let g = Gang::uniform("ml", "rs", 4, 8, 0, 0);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert_eq!(
        plan.placement_for(&key).map(|p| p.assignments.len()),
        Some(4)
    );

    // A live member counts: one of the old pods was never deleted.
    let mut c = cluster("dgx-a100", 8);
    let mut kept = busy("kept", "n0", (0..8).collect());
    kept.gang = key.clone();
    c.record_pod(kept).unwrap();
    c.mark_terminating(&PodId::new("kept"));
    let mut g = Gang::uniform("ml", "rs", 4, 8, 0, 0);
    g.pending.truncate(3);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert!(
        plan.placements.is_empty(),
        "marked terminating: not a member"
    );
}

/// `metadata.name` requirements (matchFields, and nodes kube-scheduler refused for a pod)
/// match the node's name, not a label.
#[test]
fn node_name_requirements_match_the_node_name() {
    let c = cluster("dgx-a100", 2);
    let mut g = Gang::uniform("ml", "one", 1, 8, 0, 0);
    g.pending[0].selector = vec![LabelRequirement::NotIn(
        muster_core::FIELD_NODE_NAME.into(),
        vec!["n0".into()],
    )];
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    let a = &plan.placement_for(&g.key).unwrap().assignments;
    assert_eq!(&*a[0].node, "n1");

    g.pending[0].selector = vec![LabelRequirement::In(
        muster_core::FIELD_NODE_NAME.into(),
        vec!["n0".into()],
    )];
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert_eq!(
        &*plan.placement_for(&g.key).unwrap().assignments[0].node,
        "n0"
    );

    g.pending[0].selector = vec![LabelRequirement::NotIn(
        muster_core::FIELD_NODE_NAME.into(),
        vec!["n0".into(), "n1".into()],
    )];
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert!(plan.placements.is_empty());
}

/// A member excluded from some nodes is placed before its unconstrained peers of the same
/// size, so the peers do not take the only nodes it may use.
#[test]
fn a_constrained_member_is_placed_before_its_peers() {
    let c = cluster("dgx-a100", 4);
    let mut g = Gang::uniform("ml", "v", 4, 8, 0, 0);
    g.pending[2].selector = vec![LabelRequirement::NotIn(
        muster_core::FIELD_NODE_NAME.into(),
        vec!["n0".into(), "n1".into(), "n3".into()],
    )];
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    let placed = plan
        .placement_for(&g.key)
        .expect("the gang fits: v-2 on n2");
    let a = placed
        .assignments
        .iter()
        .find(|a| a.pod == g.pending[2].id)
        .unwrap();
    assert_eq!(&*a.node, "n2");
}

/// One worker per node (required anti-affinity among the gang's own pods): 4 one-GPU
/// members take 4 nodes, not one; with 3 nodes the gang waits.
#[test]
fn one_per_node_members_spread_over_nodes() {
    let c = cluster("dgx-a100", 4);
    let mut g = Gang::uniform("ml", "spread", 4, 1, 0, 0);
    for p in &mut g.pending {
        p.one_per_node = true;
    }
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    let used = nodes_used(&plan, &g.key);
    assert_eq!(used.len(), 4);

    let small = cluster("dgx-a100", 3);
    assert!(
        small
            .plan(std::slice::from_ref(&g), 0, &cfg())
            .placements
            .is_empty()
    );
}

/// nodeSelectorTerms are ORed: a pod may go to a node matching any term.
#[test]
fn node_terms_are_ored() {
    let mut ns = nodes("dgx-a100", 3);
    ns[0].labels.push(("zone".into(), "a".into()));
    ns[2].labels.push(("zone".into(), "c".into()));
    let c = Cluster::new(ns).unwrap();
    let mut g = Gang::uniform("ml", "terms", 2, 8, 0, 0);
    for p in &mut g.pending {
        p.node_terms = vec![
            vec![LabelRequirement::equals("zone", "a")],
            vec![LabelRequirement::equals("zone", "c")],
        ];
    }
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    let used = nodes_used(&plan, &g.key);
    assert_eq!(used, HashSet::from(["n0", "n2"]));
}

/// A gang of 10,000 members on 16 nodes: it waits with a reason, without panicking.
#[test]
fn a_gang_of_ten_thousand_waits_with_a_reason() {
    let c = cluster("dgx-a100", 16);
    let g = Gang::uniform("ml", "huge", 10_000, 1, 0, 0);
    let plan = c.plan(std::slice::from_ref(&g), 0, &cfg());
    assert!(plan.placements.is_empty());
    let w = plan.waiting_for(&g.key).expect("waits");
    assert!(w.message.contains("10000"), "{}", w.message);
}
