//! What a round leaves for kube-scheduler and the background loop: planned pods are nominated
//! only while every waiting pod can still find room, since kube-scheduler re-filters waiting
//! pods on every node, each outstanding nomination included (see `adopt::nominations_pay`); a
//! gang waiting for its victims makes the background loop answer their deletion at once.

use super::background::round_due;
use super::*;
use crate::cache::CacheObjects;
use serde_json::json;

/// An 8-GPU node.
fn node(name: &str) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "resourceVersion": "1"},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .unwrap()
}

/// Pending member `i` of gang `gang` (2 members of 4 GPUs each).
fn member(gang: &str, i: u32) -> Pod {
    with_priority(gang, i, 0, None)
}

/// Member `i` of gang `gang` with `priority`, running on `node` or pending.
fn with_priority(gang: &str, i: u32, priority: i32, node: Option<&str>) -> Pod {
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{gang}-{i}"), "namespace": "ml", "uid": format!("uid-{gang}-{i}"),
            "resourceVersion": "1", "creationTimestamp": status::rfc3339(now_secs()),
            "annotations": {"muster.dev/gang": gang, "muster.dev/min-available": "2"},
        },
        "spec": {
            "schedulerName": "muster",
            "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "4", "cpu": "1"}}}],
        },
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }},
    }))
    .unwrap();
    if let Some(spec) = pod.spec.as_mut() {
        spec.priority = Some(priority);
        spec.node_name = node.map(str::to_string);
    }
    pod
}

/// Two 8-GPU nodes (room for two gangs) and `gangs` pending gangs; nomination on.
fn engine(gangs: &[&str]) -> Arc<Engine> {
    engine_with(
        gangs
            .iter()
            .flat_map(|g| [member(g, 0), member(g, 1)])
            .collect(),
    )
}

fn engine_with(pods: Vec<Pod>) -> Arc<Engine> {
    let cache = Cache::from_objects(CacheObjects {
        nodes: vec![node("n1"), node("n2")],
        pods,
        ..Default::default()
    })
    .with_queue_objects(Vec::new(), Vec::new(), Vec::new());
    // Nominations to it fail quietly; the tests read what the round decided.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    Engine::new(
        cache,
        client.clone(),
        client,
        EngineConfig {
            planner: muster_core::PlannerConfig::default(),
            barrier_timeout: Duration::from_secs(1),
            report: false,
            nominate: true,
        },
        crate::metrics::Metrics::new().unwrap(),
    )
}

fn withheld(engine: &Engine) -> Option<f64> {
    engine.metrics.render().lines().find_map(|l| {
        l.strip_prefix(r#"muster_nominations_total{result="withheld"}"#)?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn planned_pods_are_nominated_while_every_gang_has_room() {
    let engine = engine(&["a", "b"]);
    engine.round(None).await;
    let st = engine.state.lock().await;
    assert_eq!(st.plans.len(), 2, "both gangs fit");
    assert!(st.nominate_now, "nothing waits: nominations pay");
    assert_eq!(withheld(&engine), None);
}

#[tokio::test]
async fn no_nominations_while_a_gang_waits_for_room() {
    let engine = engine(&["a", "b", "c"]);
    engine.round(None).await;
    let st = engine.state.lock().await;
    assert_eq!(st.plans.len(), 2, "two gangs fit, the third waits");
    assert!(!st.nominate_now);
    assert_eq!(
        withheld(&engine),
        Some(4.0),
        "the 4 planned pods are left for kube-scheduler to find, not nominated"
    );
    // The gang that waits still gets its answer.
    assert!(matches!(
        st.verdicts.get(&GangKey::new("ml", "c")),
        Some(Answer::Wait { .. })
    ));
}

#[tokio::test]
async fn a_gang_waiting_for_its_victims_keeps_the_background_loop_prompt() {
    // Both nodes run low-priority gangs; a high-priority gang arrives.
    let engine = engine_with(vec![
        with_priority("low1", 0, 10, Some("n1")),
        with_priority("low1", 1, 10, Some("n1")),
        with_priority("low2", 0, 10, Some("n2")),
        with_priority("low2", 1, 10, Some("n2")),
        with_priority("high", 0, 1000, None),
        with_priority("high", 1, 1000, None),
    ]);
    engine.round(None).await;
    let st = engine.state.lock().await;
    assert_eq!(st.evicting.len(), 2, "one whole low gang is evicted");
    assert!(st.awaiting_victims);
    assert!(
        !st.nominate_now,
        "a preempting gang is retried until its victims are gone"
    );
    drop(st);
    // Once nothing waits for victims, the loop settles bursts again.
    let quiet = engine_with(vec![member("a", 0), member("a", 1)]);
    quiet.round(None).await;
    assert!(!quiet.state.lock().await.awaiting_victims);
}

#[test]
fn a_change_inside_the_spacing_is_planned_when_it_ends_not_dropped() {
    let spacing = Duration::from_millis(500);
    let ms = Duration::from_millis;
    assert_eq!(
        round_due(true, Some(ms(200)), spacing, false),
        Some(ms(300))
    );
    assert_eq!(round_due(true, Some(ms(700)), spacing, false), Some(ms(0)));
    assert_eq!(round_due(true, None, spacing, false), Some(ms(0)));
    assert_eq!(round_due(false, Some(ms(700)), spacing, false), None);
    assert_eq!(round_due(false, Some(ms(100)), spacing, true), Some(ms(0)));
}

#[tokio::test]
async fn capacity_coming_back_while_gangs_wait_for_room_keeps_the_loop_prompt() {
    // Both nodes are full (same priority: no preemption); gang c waits for room.
    let running = [
        with_priority("a", 0, 0, Some("n1")),
        with_priority("a", 1, 0, Some("n1")),
        with_priority("b", 0, 0, Some("n2")),
        with_priority("b", 1, 0, Some("n2")),
    ];
    let mut pods = running.to_vec();
    pods.extend([member("c", 0), member("c", 1)]);
    let engine = engine_with(pods);
    engine.round(None).await;
    {
        let st = engine.state.lock().await;
        assert!(st.waiting_for_room, "c waits for capacity");
        assert!(!engine.room_back(&st), "nothing left yet");
    }
    // A pending pod leaving frees nothing; a bound one does.
    engine
        .cache
        .signals
        .observe(&kube::runtime::watcher::Event::Delete(member("d", 0)));
    assert!(!engine.room_back(&*engine.state.lock().await));
    engine
        .cache
        .signals
        .observe(&kube::runtime::watcher::Event::Delete(running[0].clone()));
    assert!(engine.room_back(&*engine.state.lock().await));
    // A round that saw it is up to date again.
    engine.round(None).await;
    assert!(!engine.room_back(&*engine.state.lock().await));
}

/// `pod` behind Muster's gate.
fn gated(mut pod: Pod) -> Pod {
    if let Some(spec) = pod.spec.as_mut() {
        spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: muster_api::names::GATE_PLACEMENT.into(),
        }]);
    }
    pod
}

/// An engine over `running` plus `arriving`, whose last round saw only `running` (the base the
/// fast path places against), and to which `arriving` was just noted by the pod watch.
async fn arrivals(running: Vec<Pod>, arriving: Vec<Pod>) -> Arc<Engine> {
    let before = engine_with(running.clone());
    before.round(None).await;
    let base = before.state.lock().await.base.take();
    let engine = engine_with(running.into_iter().chain(arriving.clone()).collect());
    engine.state.lock().await.base = base;
    for p in arriving {
        engine
            .cache
            .signals
            .observe(&kube::runtime::watcher::Event::Apply(p));
    }
    engine
}

#[tokio::test]
async fn a_gated_gang_is_placed_as_its_last_member_arrives() {
    let engine = arrivals(
        Vec::new(),
        vec![gated(member("g", 0)), gated(member("g", 1))],
    )
    .await;
    let mut st = engine.state.lock().await;
    engine.place_gated_arrivals(&mut st);
    assert!(
        st.plans.contains_key(&GangKey::new("ml", "g")),
        "placed without a round"
    );
    assert_eq!(engine.metrics.fast_placements.get(), 1);
    assert!(!engine.round_wanted_soon(&st));
}

#[tokio::test]
async fn a_gated_gang_only_a_round_can_place_brings_the_round_forward() {
    // Both nodes full of low-priority gangs; a high-priority gang arrives behind the gate.
    let running = vec![
        with_priority("low1", 0, 10, Some("n1")),
        with_priority("low1", 1, 10, Some("n1")),
        with_priority("low2", 0, 10, Some("n2")),
        with_priority("low2", 1, 10, Some("n2")),
    ];
    let high = vec![
        gated(with_priority("high", 0, 1000, None)),
        gated(with_priority("high", 1, 1000, None)),
    ];
    let engine = arrivals(running, high).await;
    let mut st = engine.state.lock().await;
    engine.place_gated_arrivals(&mut st);
    assert!(st.plans.is_empty(), "no room without preempting");
    assert!(st.arrival_unplaced && engine.round_wanted_soon(&st));
    drop(st);
    // The round plans the preemption; its verdict makes the gang known, so rewrites of its
    // gated members (their explained conditions) bring no further round forward.
    engine.round(None).await;
    let mut st = engine.state.lock().await;
    assert!(st.awaiting_victims, "the round preempts");
    engine
        .cache
        .signals
        .observe(&kube::runtime::watcher::Event::Apply(gated(with_priority(
            "high", 0, 1000, None,
        ))));
    engine.place_gated_arrivals(&mut st);
    assert!(!st.arrival_unplaced);
}

#[tokio::test]
async fn a_gated_gang_a_stale_base_cannot_judge_waits_for_the_usual_round() {
    // On a large, busy cluster nodes change often (readiness, taints): every gang arriving then
    // would otherwise pull rounds forward, and rounds there cost the API server's CPU.
    let engine = arrivals(
        Vec::new(),
        vec![gated(member("g", 0)), gated(member("g", 1))],
    )
    .await;
    let mut st = engine.state.lock().await;
    if let Some(base) = st.base.as_mut() {
        base.node_generation += 1;
    }
    engine.place_gated_arrivals(&mut st);
    assert!(st.plans.is_empty(), "a stale base places nothing");
    assert!(!st.arrival_unplaced && !engine.round_wanted_soon(&st));
}
