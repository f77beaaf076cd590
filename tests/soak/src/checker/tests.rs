//! The checker on synthetic watch events: it must see what it is there to see, and not more.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::Checker;
use crate::SoakConfig;
use crate::setup::Stores;
use crate::state::Shared;

fn checker(partial: Duration) -> (Checker, Arc<Shared>) {
    let stores = Stores {
        pods: reflector::store().0,
        nodes: reflector::store().0,
        gpu_nodes: reflector::store().0,
    };
    let shared = Arc::new(Shared::new());
    let mut config = SoakConfig::new(4, Duration::from_secs(60), 1);
    config.partial_bound = partial;
    (Checker::new(&config, stores, shared.clone()), shared)
}

fn pod(name: &str, gang: &str, min: u32, node: Option<&str>, ids: &[&str]) -> Pod {
    let mut ann = json!({"muster.dev/gang": gang, "muster.dev/min-available": min.to_string()});
    if !ids.is_empty() {
        ann["muster.dev/gpu-ids"] = json!(ids.join(","));
        ann["muster.dev/gpu-node"] = json!(node);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "annotations": ann},
        "spec": {"nodeName": node, "containers": [{"name": "c",
            "resources": {"limits": {"nvidia.com/gpu": ids.len().max(1).to_string()}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}
    }))
    .unwrap()
}

fn count(shared: &Shared, kind: &str) -> u64 {
    let (v, _) = shared.take_findings();
    v.by_kind.get(kind).map_or(0, |k| k.0)
}

#[test]
fn one_uuid_on_two_live_pods_is_a_violation_and_a_deleted_holder_is_not() {
    let (mut c, shared) = checker(Duration::from_secs(30));
    c.on_event(Event::Apply(pod("a", "ga", 1, Some("n1"), &["GPU-1"])));
    // The first holder is being deleted: its GPU may be handed on.
    let mut gone = pod("a", "ga", 1, Some("n1"), &["GPU-1"]);
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    c.on_event(Event::Apply(gone));
    c.on_event(Event::Apply(pod("b", "gb", 1, Some("n1"), &["GPU-1"])));
    assert_eq!(count(&shared, "duplicate-gpu"), 0);
    c.on_event(Event::Apply(pod(
        "c",
        "gc",
        1,
        Some("n1"),
        &["GPU-2", "GPU-1"],
    )));
    assert_eq!(count(&shared, "duplicate-gpu"), 1);
}

#[test]
fn a_gang_bound_below_its_minimum_is_partial_unless_the_soak_disturbed_it() {
    let (mut c, shared) = checker(Duration::ZERO);
    c.on_event(Event::Apply(pod("p0", "g", 3, Some("n1"), &["GPU-1"])));
    c.on_event(Event::Apply(pod("p1", "g", 3, Some("n1"), &["GPU-2"])));
    c.on_event(Event::Apply(pod("p2", "g", 3, None, &[])));
    c.on_tick();
    std::thread::sleep(Duration::from_millis(20));
    c.on_tick();
    assert_eq!(count(&shared, "partial-gang"), 1);

    // A gang that had its minimum at once is not partial later on.
    for i in 0..2 {
        c.on_event(Event::Apply(pod(
            &format!("q{i}"),
            "h",
            2,
            Some("n2"),
            &[&format!("GPU-h{i}")],
        )));
    }
    c.on_event(Event::Delete(pod("q1", "h", 2, Some("n2"), &["GPU-h1"])));
    // Disturbed by the soak: exempt.
    shared.disturb("k");
    c.on_event(Event::Apply(pod("k0", "k", 2, Some("n3"), &["GPU-k0"])));
    c.on_tick();
    std::thread::sleep(Duration::from_millis(20));
    c.on_tick();
    assert_eq!(count(&shared, "partial-gang"), 0);
    assert_eq!(c.stats.partial_exempted, 1);
}
