//! Queues in a round: the tree from the Queue objects the cache shows now, their problems
//! (logged once per change), the `muster_queue_*` metrics, and the status of Muster's Queues.
//!
//! Volcano's Queues are planned with but their status is never written: Volcano's controller
//! owns it.

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::queues::{self, QueueBuild};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use muster_core::{QueueStatus, queues::QueueAmounts};
use muster_crds::Queue;
use prometheus::core::Collector;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The tree to plan with, from every Queue object in the cache.
pub(crate) fn from_cache(cache: &Cache) -> QueueBuild {
    let muster = cache.queues.state();
    let volcano = cache.volcano_queues.state();
    queues::from_objects(
        muster.iter().map(|q| q.as_ref()),
        volcano.iter().map(|q| q.as_ref()),
    )
}

/// Logs what changed in the queues' problems since the last round (not every round: the
/// same bad object would otherwise log every few seconds).
pub(super) fn log_problems(
    last: &mut BTreeMap<String, Vec<String>>,
    now: &BTreeMap<String, Vec<String>>,
) {
    if last == now {
        return;
    }
    for (queue, problems) in now {
        if last.get(queue) != Some(problems) {
            for problem in problems {
                tracing::warn!(queue = %queue, %problem, "queue problem");
            }
        }
    }
    for queue in last.keys().filter(|q| !now.contains_key(*q)) {
        tracing::info!(queue = %queue, "queue problems resolved");
    }
    last.clone_from(now);
}

const RESOURCES: [&str; 3] = ["nvidia.com/gpu", "cpu", "memory"];

/// GPUs (count), CPU (cores), memory (bytes), as the metrics report them.
fn metric_values(a: &QueueAmounts) -> [f64; 3] {
    [
        a.gpus as f64,
        a.cpu_millis as f64 / 1000.0,
        a.memory_bytes as f64,
    ]
}

/// Sets every `muster_queue_*` gauge from a round's queue statuses, removing the series of
/// queues (or limits) that are gone.
pub(super) fn record_metrics(metrics: &Metrics, statuses: &[QueueStatus]) {
    let mut wanted: [HashMap<Vec<String>, f64>; 4] = Default::default();
    let mut gangs: [HashMap<Vec<String>, i64>; 2] = Default::default();
    let mut share: HashMap<Vec<String>, f64> = HashMap::new();
    for s in statuses {
        let amounts = [
            (0, metric_values(&s.allocated)),
            (1, metric_values(&s.guaranteed)),
            (2, metric_values(&s.borrowed)),
        ];
        for (i, values) in amounts {
            for (r, v) in RESOURCES.iter().zip(values) {
                wanted[i].insert(vec![s.name.clone(), r.to_string()], v);
            }
        }
        let limits = [s.limit.gpus, s.limit.cpu_millis, s.limit.memory_bytes];
        for ((r, v), raw) in RESOURCES.iter().zip(metric_values(&s.limit)).zip(limits) {
            // u64::MAX: no limit, no series.
            if raw != u64::MAX {
                wanted[3].insert(vec![s.name.clone(), r.to_string()], v);
            }
        }
        gangs[0].insert(vec![s.name.clone()], i64::from(s.pending_gangs));
        gangs[1].insert(vec![s.name.clone()], i64::from(s.running_gangs));
        let ratio = if s.share_ppm == u64::MAX {
            f64::INFINITY
        } else {
            s.share_ppm as f64 / 1e6
        };
        share.insert(vec![s.name.clone()], ratio);
    }
    let q = &metrics.queues;
    let vecs = [&q.allocated, &q.guaranteed, &q.borrowed, &q.limit];
    for (vec, want) in vecs.into_iter().zip(&wanted) {
        sync_gauges(vec, want);
    }
    sync_gauges(&q.share, &share);
    // Every queue has a reclaim counter from its first round (0 until it reclaims), so a rate
    // per queue is 0 rather than no series; counters of deleted queues stay, as counters do.
    for s in statuses {
        q.reclaims.with_label_values(&[&s.name]);
    }
    for (vec, want) in [&q.pending_gangs, &q.running_gangs].into_iter().zip(&gangs) {
        sync_gauges(vec, want);
    }
}

/// Sets a gauge vector to exactly these series: others are removed.
fn sync_gauges<P: prometheus::core::Atomic>(
    vec: &prometheus::core::GenericGaugeVec<P>,
    want: &HashMap<Vec<String>, P::T>,
) {
    for labels in current_labels(&vec.collect()) {
        if !want.contains_key(&labels) {
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            let _ = vec.remove_label_values(&refs);
        }
    }
    for (labels, v) in want {
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        vec.with_label_values(&refs).set(*v);
    }
}

/// The label values (in declaration order) of every series a vector holds now.
fn current_labels(families: &[prometheus::proto::MetricFamily]) -> Vec<Vec<String>> {
    families
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| {
            m.get_label()
                .iter()
                .map(|l| l.value().to_string())
                .collect()
        })
        .collect()
}

/// A resource map of a Queue's status: `nvidia.com/gpu`, `cpu`, `memory` as quantities.
fn quantities(a: &QueueAmounts) -> serde_json::Value {
    let cpu = if a.cpu_millis.is_multiple_of(1000) {
        (a.cpu_millis / 1000).to_string()
    } else {
        format!("{}m", a.cpu_millis)
    };
    let memory = if a.memory_bytes.is_multiple_of(1 << 30) && a.memory_bytes > 0 {
        format!("{}Gi", a.memory_bytes >> 30)
    } else {
        a.memory_bytes.to_string()
    };
    serde_json::json!({"nvidia.com/gpu": a.gpus.to_string(), "cpu": cpu, "memory": memory})
}

/// Below its guarantee on some resource while gangs wait: why, if so.
fn below_guarantee(s: &QueueStatus) -> Option<String> {
    if s.pending_gangs == 0 {
        return None;
    }
    let pairs = [
        ("GPUs", s.allocated.gpus, s.guaranteed.gpus),
        ("mCPU", s.allocated.cpu_millis, s.guaranteed.cpu_millis),
        (
            "bytes of memory",
            s.allocated.memory_bytes,
            s.guaranteed.memory_bytes,
        ),
    ];
    let (what, have, guaranteed) = pairs.into_iter().find(|(_, a, g)| a < g)?;
    Some(format!(
        "allocated {have} of {guaranteed} guaranteed {what} while {} gang(s) wait",
        s.pending_gangs
    ))
}

fn condition(kind: &str, on: bool, reason: &str, message: String) -> serde_json::Value {
    serde_json::json!({
        "type": kind,
        "status": if on { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

/// The status of one Muster Queue: what the plan saw, `message` and a `Valid` condition with
/// its problems, and (when planned with) a `BelowGuarantee` condition.
pub(super) fn queue_status(
    status: Option<&QueueStatus>,
    problems: Option<&Vec<String>>,
    cluster_gpus: u64,
) -> serde_json::Value {
    let zero = QueueAmounts::default();
    let amounts = |f: fn(&QueueStatus) -> &QueueAmounts| status.map_or(&zero, f);
    let problems = problems.filter(|p| !p.is_empty()).map(|p| p.join("; "));
    let mut conditions = vec![match &problems {
        Some(why) => condition("Valid", false, "Invalid", why.clone()),
        None => condition("Valid", true, "Valid", String::new()),
    }];
    if let Some(s) = status {
        conditions.push(match below_guarantee(s) {
            Some(why) => condition("BelowGuarantee", true, "GangsWaitBelowGuarantee", why),
            None => condition(
                "BelowGuarantee",
                false,
                "GuaranteeHeldOrIdle",
                String::new(),
            ),
        });
    }
    // Of the cluster's GPUs, the part the queue is entitled to now (the CRD's `share`).
    let share = match (status, cluster_gpus) {
        (Some(s), total) if total > 0 => {
            format!("{:.3}", s.fair_share.gpus as f64 / total as f64)
        }
        _ => "0".to_string(),
    };
    serde_json::json!({
        "allocated": quantities(amounts(|s| &s.allocated)),
        "guaranteed": quantities(amounts(|s| &s.guaranteed)),
        "borrowed": quantities(amounts(|s| &s.borrowed)),
        "lent": quantities(amounts(|s| &s.lent)),
        "fairShare": quantities(amounts(|s| &s.fair_share)),
        "allocatedGpus": amounts(|s| &s.allocated).gpus,
        "pendingGangs": status.map_or(0, |s| s.pending_gangs),
        "runningGangs": status.map_or(0, |s| s.running_gangs),
        "share": share,
        "message": problems,
        "conditions": conditions,
    })
}

/// Status writes for Muster's Queues whose status changed since it was last written
/// (`reported`: queue name -> what was written).
pub(super) fn status_updates(
    names: &[String],
    statuses: &[QueueStatus],
    problems: &BTreeMap<String, Vec<String>>,
    reported: &mut HashMap<String, String>,
    now: u64,
) -> Vec<(String, serde_json::Value)> {
    let present: HashSet<&String> = names.iter().collect();
    reported.retain(|q, _| present.contains(q));
    let by_name: HashMap<&str, &QueueStatus> =
        statuses.iter().map(|s| (s.name.as_str(), s)).collect();
    // Roots split the cluster: their fair shares add up to its GPUs.
    let cluster_gpus = statuses
        .iter()
        .filter(|s| s.parent.is_none())
        .map(|s| s.fair_share.gpus)
        .sum();
    let mut out = Vec::new();
    for name in names {
        let mut status = queue_status(
            by_name.get(name.as_str()).copied(),
            problems.get(name),
            cluster_gpus,
        );
        // Deduped on everything but timestamps.
        let fingerprint = status.to_string();
        if reported.get(name) == Some(&fingerprint) {
            continue;
        }
        reported.insert(name.clone(), fingerprint);
        // Written only on change, so "now" is when the conditions last moved.
        if let Some(conditions) = status["conditions"].as_array_mut() {
            for c in conditions {
                c["lastTransitionTime"] = serde_json::Value::String(super::status::rfc3339(now));
            }
        }
        out.push((name.clone(), status));
    }
    out
}

/// Writes Queue statuses (the status subresource, a merge patch of every field); returns the
/// queues whose write failed, so that they are written again at the next round.
pub(super) async fn write_status(
    client: Client,
    updates: Vec<(String, serde_json::Value)>,
) -> Vec<String> {
    let api: Api<Queue> = Api::all(client);
    let mut failed = Vec::new();
    for (name, status) in updates {
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(queue = %name, error = %e, "writing Queue status");
            failed.push(name);
        }
    }
    failed
}
