//! Backfilling a starving gang's reservation with gangs that declare they end in time.

use muster_api::machines::builtin;
use muster_core::{
    Cluster, Gang, GangKey, GangOrder, NodeInfo, PlacedPod, PlannerConfig, PodId, Resources,
};

/// Oldest first, so that the big gang heads the line and the small ones come behind it (with
/// the default response-ratio order, the shorter small gangs would go first; see order.rs).
fn config() -> PlannerConfig {
    PlannerConfig {
        order: GangOrder::Arrival,
        ..PlannerConfig::default()
    }
}

/// Two DGX A100s: n0 fully used until t=3000, n1 half used until t=2500 (declared ends).
fn busy_until(ends: [Option<u64>; 2]) -> Cluster {
    let spec = builtin("dgx-a100").unwrap();
    let nodes: Vec<NodeInfo> = (0..2)
        .map(|i| NodeInfo::from_machine(&format!("n{i}"), spec))
        .collect();
    let mut c = Cluster::new(nodes).unwrap();
    for (i, (gpus, end)) in [(8u32, ends[0]), (4, ends[1])].into_iter().enumerate() {
        c.add_pod(PlacedPod {
            id: PodId::new(format!("run{i}")),
            gang: GangKey::new("x", format!("run{i}")),
            node: format!("n{i}"),
            resources: Resources::new(1000, 1 << 30, gpus),
            gpus: (0..gpus).collect(),
            priority: 0,
            started_at: 0,
            preemptible: false,
            terminating: false,
            ends_by: end,
        })
        .unwrap();
    }
    c
}

/// A 16-GPU gang waiting since t=0 (so it reserves both nodes at t=1900), then 4-GPU gangs.
fn queue(runtimes: &[Option<u64>]) -> Vec<Gang> {
    let mut gangs = vec![Gang::uniform("ml", "big", 2, 8, 0, 0)];
    for (i, r) in runtimes.iter().enumerate() {
        let mut g = Gang::uniform("ml", &format!("small{i}"), 1, 4, 0, 100 + i as u64);
        g.runtime_limit = *r;
        gangs.push(g);
    }
    gangs
}

const NOW: u64 = 1900;

#[test]
fn a_gang_that_ends_before_the_reservation_can_start_backfills_it() {
    let c = busy_until([Some(3000), Some(2500)]);
    // small0 runs past t=3000, small1 declares nothing, small2 ends at 2400.
    let gangs = queue(&[Some(5000), None, Some(500)]);
    let plan = c.plan(&gangs, NOW, &config());
    let big = plan.waiting_for(&gangs[0].key).unwrap();
    assert_eq!(big.reserved_nodes.len(), 2, "{}", big.message);
    assert_eq!(big.reserved_until, Some(3000));
    assert!(big.message.contains("within 1100s"), "{}", big.message);
    let placed: Vec<&str> = plan
        .placements
        .iter()
        .map(|p| p.gang.name.as_str())
        .collect();
    assert_eq!(
        placed,
        vec!["small2"],
        "only the gang that ends in time backfills"
    );
    assert!(plan.waiting_for(&gangs[1].key).is_some());
    assert!(plan.waiting_for(&gangs[2].key).is_some());
}

#[test]
fn without_declared_ends_in_the_way_the_reservation_is_unbounded_and_nobody_backfills() {
    let c = busy_until([None, Some(2500)]);
    let gangs = queue(&[Some(500)]);
    let plan = c.plan(&gangs, NOW, &config());
    let big = plan.waiting_for(&gangs[0].key).unwrap();
    assert_eq!(big.reserved_nodes.len(), 2);
    assert_eq!(big.reserved_until, None);
    assert!(plan.placements.is_empty());
}

#[test]
fn a_failed_gang_of_the_same_shape_does_not_stop_a_shorter_one_from_backfilling() {
    // Equivalence classes: small0 (too long) fails first; small1, same shape, must still be
    // searched, and fits. The plan must be the one planned without the classes.
    let c = busy_until([Some(3000), Some(2500)]);
    let gangs = queue(&[Some(5000), Some(500)]);
    let with = c.plan(&gangs, NOW, &config());
    let without = c.plan(
        &gangs,
        NOW,
        &PlannerConfig {
            skip_equivalent: false,
            ..config()
        },
    );
    assert_eq!(with, without);
    assert!(with.placement_for(&gangs[2].key).is_some(), "{with:?}");
}

#[test]
fn a_committed_gang_ends_by_its_declared_runtime() {
    let mut c = busy_until([None, None]);
    let mut g = Gang::uniform("ml", "short", 1, 4, 0, 0);
    g.runtime_limit = Some(600);
    let plan = c.plan(std::slice::from_ref(&g), 50, &config());
    let p = plan.placement_for(&g.key).unwrap();
    c.commit(&g, &p.assignments, 50).unwrap();
    let pod = c.pod(&p.assignments[0].pod).unwrap();
    assert_eq!(pod.ends_by, Some(650));
}
