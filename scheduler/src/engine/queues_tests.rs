//! Rounds with queues, through the engine: reclaim evicts whole gangs, metrics and Queue
//! status follow the plan.

use super::*;
use crate::cache::CacheObjects;
use crate::snapshot;
use serde_json::json;

/// An 8-GPU node (GpuNodes count as listed, so it takes GPU pods).
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

/// A member of gang `gang` (2 members of 4 GPUs each) in `queue` (pod label), bound to `node`
/// and running, or pending.
fn member(gang: &str, i: u32, queue: &str, node: Option<&str>) -> Pod {
    let mut spec = json!({
        "schedulerName": "muster",
        "containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "4", "cpu": "1"}}}],
    });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{gang}-{i}"), "namespace": "ml", "uid": format!("uid-{gang}-{i}"),
            "resourceVersion": "1", "creationTimestamp": status::rfc3339(now_secs()),
            "labels": {"muster.dev/queue": queue},
            "annotations": {"muster.dev/gang": gang, "muster.dev/min-available": "2"},
        },
        "spec": spec,
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }},
    }))
    .unwrap()
}

fn queue(name: &str, gpu: serde_json::Value) -> muster_crds::Queue {
    serde_json::from_value(json!({
        "apiVersion": "muster.dev/v1alpha1", "kind": "Queue",
        "metadata": {"name": name}, "spec": {"gpu": gpu},
    }))
    .unwrap()
}

/// Team A runs two gangs (16 GPUs, 8 borrowed from team B's guarantee); team B's gang waits.
fn engine() -> Arc<Engine> {
    engine_with(vec![
        member("a1", 0, "team-a", Some("n1")),
        member("a1", 1, "team-a", Some("n1")),
        member("a2", 0, "team-a", Some("n2")),
        member("a2", 1, "team-a", Some("n2")),
        member("b1", 0, "team-b", None),
        member("b1", 1, "team-b", None),
    ])
}

fn engine_with(pods: Vec<Pod>) -> Arc<Engine> {
    engine_over(pods, |c| c)
}

fn engine_over(pods: Vec<Pod>, adjust: impl FnOnce(Cache) -> Cache) -> Arc<Engine> {
    engine_reporting(pods, adjust, false)
}

fn engine_reporting(
    pods: Vec<Pod>,
    adjust: impl FnOnce(Cache) -> Cache,
    report: bool,
) -> Arc<Engine> {
    let cache = Cache::from_objects(CacheObjects {
        nodes: vec![node("n1"), node("n2")],
        pods,
        ..Default::default()
    })
    .with_queue_objects(
        vec![
            queue("team-a", json!({"guaranteed": 8})),
            queue("team-b", json!({"guaranteed": 8, "limit": 12})),
        ],
        Vec::new(),
        Vec::new(),
    );
    let cache = adjust(cache);
    // Never called in these tests' assertions (evictions to it fail quietly).
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    Engine::new(
        cache,
        client.clone(),
        client,
        EngineConfig {
            planner: muster_core::PlannerConfig::default(),
            barrier_timeout: Duration::from_secs(1),
            report,
            nominate: false,
        },
        crate::metrics::Metrics::new().unwrap(),
    )
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_queue_below_its_guarantee_reclaims_one_whole_borrowing_gang() {
    let engine = engine();
    engine.round(None).await;
    let st = engine.state.lock().await;
    let mut evicting: Vec<&str> = st.evicting.keys().map(String::as_str).collect();
    evicting.sort();
    let whole_a1 = vec!["uid-a1-0", "uid-a1-1"];
    let whole_a2 = vec!["uid-a2-0", "uid-a2-1"];
    assert!(
        evicting == whole_a1 || evicting == whole_a2,
        "one whole team-a gang is evicted, nothing else: {evicting:?}"
    );
    let waits = st.verdicts.get(&GangKey::new("ml", "b1"));
    assert!(
        matches!(waits, Some(Answer::Wait { .. })),
        "b1 waits for its victims: {waits:?}"
    );
    assert!(
        st.base.as_ref().is_some_and(|b| !b.open),
        "no fast placement while the reclaim's room is held"
    );
    let text = engine.metrics.render();
    assert_eq!(
        sample(&text, r#"muster_reclaims_total{queue="team-b"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "muster_preemptions_total"), Some(1.0));
}

#[tokio::test]
async fn queue_metrics_follow_the_round() {
    let engine = engine();
    engine.round(None).await;
    let text = engine.metrics.render();
    let m = |s: &str| sample(&text, s);
    let gpu = |metric: &str, q: &str| {
        m(&format!(
            r#"{metric}{{queue="{q}",resource="nvidia.com/gpu"}}"#
        ))
    };
    assert_eq!(gpu("muster_queue_allocated", "team-a"), Some(16.0));
    assert_eq!(gpu("muster_queue_guaranteed", "team-a"), Some(8.0));
    assert_eq!(gpu("muster_queue_borrowed", "team-a"), Some(8.0));
    assert_eq!(gpu("muster_queue_allocated", "team-b"), Some(0.0));
    assert_eq!(gpu("muster_queue_limit", "team-b"), Some(12.0));
    assert_eq!(
        gpu("muster_queue_limit", "team-a"),
        None,
        "no limit, no series"
    );
    assert_eq!(
        m(r#"muster_queue_allocated{queue="team-a",resource="cpu"}"#),
        Some(4.0),
        "CPU in cores"
    );
    assert_eq!(
        m(r#"muster_queue_pending_gangs{queue="team-b"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"muster_queue_running_gangs{queue="team-a"}"#),
        Some(2.0)
    );
    // Nothing waiting, nothing reclaimed: 0, not an absent series.
    assert_eq!(m(r#"muster_pending_gangs{queue="team-a"}"#), Some(0.0));
    assert_eq!(m(r#"muster_reclaims_total{queue="team-a"}"#), Some(0.0));
    let share = m(r#"muster_queue_share{queue="team-a"}"#).unwrap();
    assert!(
        share > 1.0,
        "team-a holds more than its fair share: {share}"
    );

    // A queue that disappears loses its series.
    let statuses: Vec<_> = Vec::new();
    queues::record_metrics(&engine.metrics, &statuses);
    let text = engine.metrics.render();
    assert!(!text.contains("muster_queue_allocated{"), "{text}");
    assert!(!text.contains("muster_queue_pending_gangs{"), "{text}");
}

#[tokio::test]
async fn queue_status_is_written_once_per_change() {
    let engine = engine();
    engine.round(None).await;
    let plan = {
        let snap = snapshot::build(&engine.cache, &Default::default(), now_secs());
        let tree = queues::from_cache(&engine.cache);
        snap.cluster.plan_with_queues(
            &snap.pending,
            now_secs(),
            &engine.config.planner,
            &tree.tree,
        )
    };
    let names = vec!["team-a".to_string(), "team-b".to_string()];
    let problems = std::collections::BTreeMap::new();
    let mut reported = HashMap::new();
    let first = queues::status_updates(&names, &plan.queues, &problems, &mut reported, 1_000);
    assert_eq!(first.len(), 2);
    let b = &first.iter().find(|(n, _)| n == "team-b").unwrap().1;
    assert_eq!(b["pendingGangs"], 1);
    assert_eq!(b["allocated"]["nvidia.com/gpu"], "0");
    assert_eq!(b["guaranteed"]["nvidia.com/gpu"], "8");
    let below = &b["conditions"][1];
    assert_eq!(below["type"], "BelowGuarantee");
    assert_eq!(below["status"], "True", "{below}");
    assert!(below["lastTransitionTime"].is_string());
    assert_eq!(b["conditions"][0]["status"], "True", "Valid");
    let a = &first.iter().find(|(n, _)| n == "team-a").unwrap().1;
    assert_eq!(a["allocatedGpus"], 16);
    assert_eq!(a["borrowed"]["nvidia.com/gpu"], "8");
    assert_eq!(a["runningGangs"], 2);

    let again = queues::status_updates(&names, &plan.queues, &problems, &mut reported, 1_000);
    assert!(again.is_empty(), "unchanged: nothing written");

    let problems = std::collections::BTreeMap::from([(
        "team-a".to_string(),
        vec!["queue not used: a problem".to_string()],
    )]);
    let changed = queues::status_updates(&names, &plan.queues, &problems, &mut reported, 1_000);
    assert_eq!(changed.len(), 1, "only the queue whose status changed");
    let status = &changed[0].1;
    assert_eq!(status["message"], "queue not used: a problem");
    assert_eq!(status["conditions"][0]["type"], "Valid");
    assert_eq!(status["conditions"][0]["status"], "False");
}

/// Between rounds, a gang is placed on its own (the fast path) only within its queue's limit:
/// team B (limit 12 GPUs) runs 8, so a second 8-GPU gang must wait even with 8 GPUs free.
#[tokio::test]
async fn the_fast_path_keeps_queue_limits() {
    let engine = engine_with(vec![
        member("b0", 0, "team-b", Some("n1")),
        member("b0", 1, "team-b", Some("n1")),
        member("b2", 0, "team-b", None),
        member("b2", 1, "team-b", None),
    ]);
    engine.round(None).await;
    let mut st = engine.state.lock().await;
    let key = GangKey::new("ml", "b2");
    let Some(Answer::Wait { message, .. }) = st.verdicts.get(&key).cloned() else {
        panic!(
            "the round places nothing above the limit: {:?}",
            st.verdicts
        );
    };
    assert!(message.contains("limit"), "{message}");
    assert!(
        st.base.as_ref().is_some_and(|b| b.open),
        "the fast path is open"
    );
    // As if b2 had appeared after the round.
    st.verdicts.clear();
    let pod = member("b2", 0, "team-b", None);
    let answer = engine.try_fast(&mut st, &pod, "uid-b2-0");
    assert!(
        !matches!(answer, Some(Answer::Node(_))),
        "placed above its queue's limit: {answer:?}"
    );
    assert!(!st.plans.contains_key(&key));
}

/// Until the Queues are listed, no round plans (it would ignore their limits).
#[tokio::test]
async fn no_round_before_the_queues_are_listed() {
    let pods = vec![
        member("b2", 0, "team-b", None),
        member("b2", 1, "team-b", None),
    ];
    let engine = engine_over(pods.clone(), Cache::with_queues_unlisted);
    engine.round(None).await;
    let st = engine.state.lock().await;
    assert!(
        st.plans.is_empty() && st.base.is_none(),
        "planned before Queues were listed"
    );
    drop(st);
    let listed = engine_with(pods);
    listed.round(None).await;
    assert!(
        listed
            .state
            .lock()
            .await
            .plans
            .contains_key(&GangKey::new("ml", "b2"))
    );
}

/// A Queue status write that fails (here: no API server) is written again at the next round.
#[tokio::test]
async fn a_failed_queue_status_write_is_retried() {
    let engine = engine_reporting(vec![member("b2", 0, "team-b", None)], |c| c, true);
    engine.round(None).await;
    assert!(
        engine
            .state
            .lock()
            .await
            .queue_reported
            .contains_key("team-b")
    );
    let started = std::time::Instant::now();
    while engine
        .state
        .lock()
        .await
        .queue_reported
        .contains_key("team-b")
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a failed write stays remembered as written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
