//! The order among gangs of equal priority: highest response ratio next by default, oldest
//! first with `GangOrder::Arrival`.

use muster_api::machines::builtin;
use muster_core::{Cluster, Gang, GangOrder, NodeInfo, PlannerConfig, QueueSpec, QueueTree};

/// One DGX A100, idle: room for exactly one 8-GPU gang.
fn one_node() -> Cluster {
    let spec = builtin("dgx-a100").unwrap();
    Cluster::new(vec![NodeInfo::from_machine("n0", spec)]).unwrap()
}

fn gang(name: &str, priority: i32, created_at: u64, runtime: Option<u64>) -> Gang {
    let mut g = Gang::uniform("ml", name, 1, 8, priority, created_at);
    g.runtime_limit = runtime;
    g
}

fn placed(c: &Cluster, gangs: &[Gang], now: u64, config: &PlannerConfig) -> Vec<String> {
    let plan = c.plan(gangs, now, config);
    plan.placements
        .iter()
        .map(|p| p.gang.name.clone())
        .collect()
}

fn arrival() -> PlannerConfig {
    PlannerConfig {
        order: GangOrder::Arrival,
        ..PlannerConfig::default()
    }
}

#[test]
fn a_short_gang_goes_before_an_older_long_one_of_equal_priority() {
    // At t=1200: long has waited 1200 s for a 10 h run (ratio 1.03), short 600 s for a 10 min
    // run (ratio 2).
    let gangs = [
        gang("long", 0, 0, Some(36_000)),
        gang("short", 0, 600, Some(600)),
    ];
    let c = one_node();
    assert_eq!(
        placed(&c, &gangs, 1200, &PlannerConfig::default()),
        ["short"]
    );
    assert_eq!(placed(&c, &gangs, 1200, &arrival()), ["long"]);
}

#[test]
fn priority_comes_before_the_response_ratio() {
    let gangs = [
        gang("long", 1, 0, Some(36_000)),
        gang("short", 0, 600, Some(600)),
    ];
    assert_eq!(
        placed(&one_node(), &gangs, 1200, &PlannerConfig::default()),
        ["long"]
    );
}

#[test]
fn a_long_gang_that_has_waited_outranks_a_short_newcomer() {
    // long: (40000 + 36000) / 36000 = 2.1; short, just submitted: 1.
    let gangs = [
        gang("long", 0, 0, Some(36_000)),
        gang("short", 0, 40_000, Some(600)),
    ];
    assert_eq!(
        placed(&one_node(), &gangs, 40_000, &PlannerConfig::default()),
        ["long"]
    );
}

#[test]
fn a_gang_without_a_declared_runtime_counts_as_a_long_one() {
    let config = PlannerConfig::default();
    let undeclared = config.undeclared_runtime_secs;
    // Both waited 1000 s; the declared run is shorter than the assumed one.
    let gangs = [
        gang("undeclared", 0, 0, None),
        gang("declared", 0, 0, Some(undeclared / 2)),
    ];
    assert_eq!(placed(&one_node(), &gangs, 1000, &config), ["declared"]);
    // Declaring more than the assumption does not help.
    let gangs = [
        gang("undeclared", 0, 0, None),
        gang("declared", 0, 0, Some(undeclared * 2)),
    ];
    assert_eq!(placed(&one_node(), &gangs, 1000, &config), ["undeclared"]);
}

#[test]
fn without_declared_runtimes_the_order_is_arrival() {
    // Eight gangs of mixed sizes, none declaring a run time, on one node: whatever fits first
    // in arrival order must be what the default order places too.
    let gangs: Vec<Gang> = (0..8u32)
        .map(|i| {
            let mut g = Gang::uniform(
                "ml",
                &format!("g{i}"),
                1,
                1 + (i * 3) % 8,
                0,
                10 * u64::from(8 - i),
            );
            g.runtime_limit = None;
            g
        })
        .collect();
    let c = one_node();
    for now in [100, 5_000, 1_000_000] {
        let default = c.plan(&gangs, now, &PlannerConfig::default());
        assert_eq!(default, c.plan(&gangs, now, &arrival()), "at t={now}");
    }
}

#[test]
fn queues_order_their_gangs_the_same_way() {
    let tree = QueueTree::new(&[QueueSpec::new("research")]).unwrap();
    let gangs: Vec<Gang> = [
        gang("long", 0, 0, Some(36_000)),
        gang("short", 0, 600, Some(600)),
    ]
    .into_iter()
    .map(|mut g| {
        g.queue = "research".into();
        g
    })
    .collect();
    let c = one_node();
    let names = |config: &PlannerConfig| -> Vec<String> {
        let plan = c.plan_with_queues(&gangs, 1200, config, &tree);
        plan.placements
            .iter()
            .map(|p| p.gang.name.clone())
            .collect()
    };
    assert_eq!(names(&PlannerConfig::default()), ["short"]);
    assert_eq!(names(&arrival()), ["long"]);
}
