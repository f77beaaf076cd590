//! `top queues` and `explain` with queues, on [`crate::testing::queued_scene`].

use super::explain::{explain, parse_target, resolve};
use super::{explain_text, queues};
use crate::render::{Rendered, Style};
use crate::scene::Scene;
use crate::testing::{pending_gang, queued_scene, scene, snapshot};

fn table(r: &Rendered) -> String {
    let mut s = if r.table.headers.is_empty() {
        String::new()
    } else {
        r.table.render(&Style::default())
    };
    for l in &r.footer {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The table row whose first cell (trimmed) is `queue`.
fn row<'a>(text: &'a str, queue: &str) -> Vec<&'a str> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(queue))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

#[test]
fn top_queues_in_tree_order_with_borrowing_lending_and_problems() {
    let s = queued_scene();
    let a = s.analyse();
    let r = queues::render(&a, false);
    let text = table(&r);
    snapshot("unit_top_queues", &text);
    let order: Vec<&str> = text
        .lines()
        .skip(1)
        .take(r.table.rows.len())
        .map(|l| l.split("   ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        ["default", "research", "  nlp", "  vision", "team-b", "volc"],
        "{text}"
    );
    // QUEUE ALLOCATED GUARANTEED LIMIT BORROWED LENT PENDING RUNNING SHARE
    assert_eq!(row(&text, "vision")[1..4], ["8", "8", "-"], "{text}");
    assert_eq!(row(&text, "research")[1..4], ["8", "12", "12"], "{text}");
    let team_b = row(&text, "team-b");
    assert_eq!(team_b[1..8], ["4", "0", "-", "4", "0", "1", "1"], "{text}");
    let nlp = row(&text, "nlp");
    assert_eq!(nlp[1..8], ["0", "4", "8", "0", "4", "2", "0"], "{text}");
    assert!(
        text.contains("broken: queue not used:"),
        "problems listed under the table: {text}"
    );
    assert!(!text.contains("CPU"), "CPU only with -o wide: {text}");

    let wide = table(&queues::render(&a, true));
    assert!(
        wide.lines()
            .next()
            .is_some_and(|h| h.contains("CPU") && h.contains("MEMORY"))
    );
    let items = r.data["items"].as_array().cloned().unwrap_or_default();
    let team_b = items.iter().find(|i| i["name"] == "team-b").cloned();
    let team_b = team_b.unwrap_or_default();
    assert_eq!(team_b["gpus"]["limit"], serde_json::Value::Null);
    assert_eq!(team_b["gpus"]["borrowed"], 4);
    assert_eq!(r.data["kind"], "QueueList");
    assert!(r.data["problems"]["broken"][0].is_string(), "{}", r.data);
}

#[test]
fn top_queues_without_queue_objects() {
    let s = scene();
    let text = table(&queues::render(&s.analyse(), false));
    assert_eq!(
        text,
        "no queues: every gang is planned in one queue (default)\n"
    );
}

/// The explanation of `target` in `s`, as text (no colour, times masked) and as data.
pub(super) fn explained_in(
    s: &Scene,
    target: &str,
    ns: &str,
) -> (String, super::explain::Explanation) {
    let a = s.analyse();
    let t = parse_target(target).unwrap();
    let (key, pod) = resolve(s, ns, &t).unwrap();
    let e = explain(s, &a, &key, pod, &[]);
    let style = Style {
        color: false,
        mask_times: true,
    };
    (explain_text::text(&e, &style), e)
}

pub(super) fn kinds(e: &super::explain::Explanation) -> Vec<&str> {
    e.blockers.iter().map(|b| b.kind.as_str()).collect()
}

#[test]
fn explain_shows_the_queue_and_a_reclaim() {
    let (text, e) = explained_in(&queued_scene(), "podgroup/big-c", "ml");
    snapshot("unit_explain_queue_reclaim", &text);
    assert!(
        text.contains("Queue:         nlp   0/8 GPUs allocated, guaranteed 4, limit 8, share 0.0"),
        "{text}"
    );
    assert!(
        e.verdict.contains("reclaiming 4 GPUs borrowed by team-b"),
        "{text}"
    );
    assert_eq!(kinds(&e), ["queue-reclaim"], "{text}");
    assert!(
        e.unblock[0].contains("reclaiming ml/urgent (queue team-b, 4 GPUs)"),
        "a reclaim is not a priority preemption: {text}"
    );
}

#[test]
fn explain_reclaim_refused() {
    let mut s = queued_scene();
    for q in &mut s.queues {
        if q.metadata.name.as_deref() == Some("nlp")
            && let Some(g) = q.spec.gpu.as_mut()
        {
            g.reclaimable = Some(false);
        }
    }
    let (text, e) = explained_in(&s, "podgroup/big-c", "ml");
    snapshot("unit_explain_queue_reclaim_refused", &text);
    assert_eq!(kinds(&e), ["queue-reclaim"], "{text}");
    assert!(e.verdict.starts_with("waiting (queue-reclaim)"), "{text}");
}

#[test]
fn explain_at_limit_of_an_ancestor() {
    let mut s = queued_scene();
    s.pods.push(pending_gang("ml", "wide-v", 8, "vision"));
    let (text, e) = explained_in(&s, "wide-v", "ml");
    snapshot("unit_explain_queue_limit", &text);
    assert_eq!(kinds(&e), ["queue-limit"], "{text}");
    assert!(
        e.verdict.contains("queue research is at its limit"),
        "{text}"
    );
    assert!(e.unblock[0].contains("limit of queue research"), "{text}");
}

#[test]
fn explain_closed_and_invalid_queues() {
    let mut s = queued_scene();
    s.pods.push(pending_gang("ml", "shut", 1, "volc"));
    s.pods.push(pending_gang("ml", "inner", 1, "research"));
    s.pods.push(pending_gang("ml", "lost", 1, "nope"));
    let (text, e) = explained_in(&s, "shut", "ml");
    snapshot("unit_explain_queue_closed", &text);
    assert_eq!(kinds(&e), ["queue-closed"], "{text}");
    assert!(e.verdict.contains("queue volc is closed"), "{text}");
    let (text, e) = explained_in(&s, "inner", "ml");
    assert_eq!(kinds(&e), ["invalid-queue"], "{text}");
    assert!(
        e.unblock[0].contains("default, nlp, team-b, vision, volc"),
        "{text}"
    );
    let (text, e) = explained_in(&s, "lost", "ml");
    snapshot("unit_explain_queue_invalid", &text);
    assert_eq!(kinds(&e), ["invalid-queue"], "{text}");
    assert!(
        text.contains("Queue:         nope   (no such queue)"),
        "{text}"
    );
}

/// team-b (urgent running: above its share) waits while `default` (nothing held) is served
/// first and takes the room: the free GPUs would fit `solo` otherwise.
#[test]
fn explain_waiting_for_fair_share() {
    let mut s = queued_scene();
    s.pods
        .retain(|p| p.metadata.name.as_deref() != Some("big-c-0"));
    s.pods.push(pending_gang("team-q", "tiny", 2, "default"));
    s.pods.push(pending_gang("ml", "solo", 2, "team-b"));
    let (text, e) = explained_in(&s, "solo", "ml");
    snapshot("unit_explain_queue_fair_share", &text);
    assert_eq!(kinds(&e), ["fair-share"], "{text}");
    assert!(
        e.verdict
            .contains("waiting for fair share: team-b 1.0 of its share, default 0.0"),
        "{text}"
    );
    assert!(e.unblock[0].contains("weight on queue team-b"), "{text}");
    assert!(text.contains("Queue:         team-b   4 GPUs allocated, guaranteed 0, no limit"));
}

#[test]
fn gangs_get_their_queue_by_group_then_pod_label_then_namespace() {
    let mut s = queued_scene();
    // A pod label does not override the PodGroup's queue.
    for p in &mut s.pods {
        if p.metadata.name.as_deref() == Some("train-a-0") {
            p.metadata
                .labels
                .get_or_insert_default()
                .insert("muster.dev/queue".into(), "team-b".into());
        }
    }
    let a = s.analyse();
    let queue = |name: &str| {
        super::jobs::rows(&s, &a, None)
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.queue)
    };
    assert_eq!(queue("train-a").as_deref(), Some("vision"));
    assert_eq!(queue("batch-b").as_deref(), Some("team-b"), "pod label");
    assert_eq!(
        queue("urgent").as_deref(),
        Some("team-b"),
        "namespace annotation"
    );
    assert_eq!(queue("wait-d").as_deref(), Some("nlp"));
    // Running gangs count against their queue, not `default`.
    let default = a.plan.queues.iter().find(|q| q.name == "default");
    assert_eq!(default.map(|q| q.allocated.gpus), Some(0));
}

#[test]
fn top_queues_wide_and_unreadable_objects() {
    let mut s = queued_scene();
    s.queues.push(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "muster.dev/v1alpha1", "kind": "Queue",
            "metadata": {"name": "typo"}, "spec": {"gpu": {"guaranteed": "lots"}}
        }))
        .unwrap(),
    );
    s.volcano_queues.push(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vtypo"}, "spec": {"capability": {"nvidia.com/gpu": "x"}}
        }))
        .unwrap(),
    );
    let text = table(&queues::render(&s.analyse(), true));
    snapshot("unit_top_queues_wide", &text);
    assert!(
        text.contains("  vtypo: queue not used: Volcano Queue: "),
        "{text}"
    );
    assert!(text.contains("  typo: queue not used:"), "{text}");
    assert!(row(&text, "team-b").contains(&"1/0/-"), "CPU cores: {text}");
}

/// With queues, priority preemption stays inside the gang's queue: "more GPUs than the cluster
/// has" would be wrong when other queues hold them.
#[test]
fn explain_capacity_with_queues_names_the_queue_boundary() {
    let (text, e) = explained_in(&queued_scene(), "batch-b", "ml");
    assert_eq!(kinds(&e), ["capacity"], "{text}");
    assert!(
        e.unblock
            .iter()
            .any(|u| u.contains("preempting every preemptible gang of queue team-b")),
        "{text}"
    );
    assert!(!text.contains("more GPUs than the cluster has"), "{text}");
}

/// A gang naming no usable queue is in no row: the footer names it.
#[test]
fn top_queues_lists_gangs_in_no_queue() {
    let mut s = queued_scene();
    s.pods.push(pending_gang("ml", "lost", 1, "nope"));
    s.pods.push(pending_gang("ml", "inner", 1, "research"));
    s.pods.push(pending_gang("ml", "shut", 1, "volc"));
    let r = queues::render(&s.analyse(), false);
    let text = table(&r);
    assert!(
        text.contains("Gangs in no queue:\n  ml/inner: queue research has child queues"),
        "{text}"
    );
    assert!(
        text.contains("  ml/lost: queue nope does not exist\n"),
        "{text}"
    );
    // The core counts a closed queue's waiting gangs in no PENDING: the footer names them.
    assert!(
        text.contains("Gangs a closed queue holds back:\n  ml/shut: queue volc is closed"),
        "{text}"
    );
    assert_eq!(r.data["unqueued"][0]["gang"], "ml/inner", "{}", r.data);
}

#[test]
fn explain_as_data_carries_the_queue() {
    let (_, e) = explained_in(&queued_scene(), "podgroup/big-c", "ml");
    let d = explain_text::data(&e);
    assert_eq!(d["queue"]["name"], "nlp");
    assert_eq!(d["queue"]["limitGpus"], 8);
    assert_eq!(d["queue"]["guaranteedGpus"], 4);
    assert_eq!(d["blockers"][0]["kind"], "queue-reclaim");
    // Without queues there is no queue object in the data.
    let (_, e) = explained_in(&scene(), "podgroup/big-c", "ml");
    assert!(explain_text::data(&e)["queue"].is_null());
}

/// A running borrower that a reclaim evicts is told so, not "nothing blocks it".
#[test]
fn explain_a_gang_being_reclaimed() {
    let (text, e) = explained_in(&queued_scene(), "urgent", "ml");
    assert!(
        e.verdict
            .contains("being evicted: ml/big-c reclaims what queue team-b borrows"),
        "{text}"
    );
}
