//! `kubectl muster top jobs [-n NS | -A]`: one row per gang.

use crate::render::{Cell, Color, Rendered, Style, Table, list, to_value};
use crate::scene::{Analysis, Scene, pod_gpus, pod_node, pod_phase};
use muster_core::GangKey;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRow {
    pub namespace: String,
    pub name: String,
    /// Where the gang is defined (`PodGroup.muster.dev`, `annotation muster.dev/gang`, ...).
    pub kind: String,
    /// The job object that made the gang (`PyTorchJob/pt-a`, `RayCluster/ray`, `Job/x`).
    pub owner: Option<String>,
    pub queue: String,
    pub priority: i32,
    pub ready: u32,
    pub min_member: u32,
    pub members: u32,
    pub gpus_requested: u32,
    pub gpus_allocated: u32,
    pub phase: String,
    /// Seconds waited so far (since creation, or since the last preemption); none once running.
    pub waiting_seconds: Option<i64>,
    pub nodes: Vec<String>,
    /// The scheduler's reason, as a fresh plan gives it.
    pub reason: Option<String>,
}

/// Gangs in `namespace` (`None`: all), sorted by namespace and name.
pub fn rows(scene: &Scene, analysis: &Analysis, namespace: Option<&str>) -> Vec<JobRow> {
    let snap = &analysis.snapshot;
    let gang_pods = scene.gang_pods();
    let preempted = scene.preemptions();
    let mut keys: BTreeSet<GangKey> = gang_pods.keys().cloned().collect();
    for pg in &scene.pod_groups {
        if let (Some(ns), Some(name)) = (&pg.metadata.namespace, &pg.metadata.name) {
            keys.insert(GangKey::new(ns.clone(), name.clone()));
        }
    }
    keys.retain(|k| namespace.is_none_or(|ns| k.namespace == ns));
    keys.into_iter()
        .map(|key| {
            let pods = gang_pods.get(&key).cloned().unwrap_or_default();
            let live: Vec<_> = pods
                .iter()
                .filter(|p| !matches!(pod_phase(p), "Succeeded" | "Failed"))
                .collect();
            let gpus_requested = live.iter().map(|p| pod_gpus(p)).sum();
            let gpus_allocated = live
                .iter()
                .filter(|p| pod_node(p).is_some())
                .map(|p| pod_gpus(p))
                .sum();
            let nodes: BTreeSet<String> = live
                .iter()
                .filter_map(|p| pod_node(p))
                .map(str::to_string)
                .collect();
            let pg = scene.pod_groups.iter().find(|g| {
                g.metadata.namespace.as_deref() == Some(&key.namespace)
                    && g.metadata.name.as_deref() == Some(&key.name)
            });
            let (kind, queue, priority, min, members, ready, bound, created, problem, done) =
                match snap.gangs.get(&key) {
                    Some(i) => (
                        i.source.kind().to_string(),
                        i.queue.clone(),
                        i.priority,
                        i.min_member,
                        i.members,
                        i.running,
                        i.bound,
                        i.created_at as i64,
                        i.problem.clone(),
                        (i.succeeded, i.failed),
                    ),
                    None => (
                        "PodGroup.muster.dev".to_string(),
                        pg.and_then(|g| g.spec.queue.clone())
                            .unwrap_or_else(|| "default".into()),
                        pg.and_then(|g| g.spec.priority_class_name.as_deref())
                            .and_then(|c| scene.priority_of_class(c))
                            .unwrap_or(0),
                        pg.map_or(1, |g| g.spec.min_member.max(1) as u32),
                        0,
                        0,
                        0,
                        pg.and_then(|g| g.metadata.creation_timestamp.as_ref())
                            .map_or(scene.now, |t| t.0.as_second()),
                        None,
                        (0, 0),
                    ),
                };
            let pending = snap.pending.iter().find(|g| g.key == key);
            let priority = pending.map_or(priority, |g| g.priority.max(priority));
            let waiting = analysis.plan.waiting_for(&key);
            let preempting = analysis.plan.preemptions.iter().find(|p| p.gang == key);
            let last_preempted = preempted.get(&key);
            let phase = if problem.is_some() {
                "Invalid"
            } else if done.0 >= min {
                "Succeeded"
            } else if done.1 > 0 && done.0 + done.1 >= members && members > 0 {
                "Failed"
            } else if ready >= min {
                "Running"
            } else if bound >= min {
                "Scheduled"
            } else if preempting.is_some() {
                "Preempting"
            } else if analysis.plan.placement_for(&key).is_some() {
                "Scheduling"
            } else if last_preempted.is_some() {
                "Preempted"
            } else {
                "Pending"
            };
            let since = last_preempted.map_or(created, |p| p.at.max(created));
            let reason = problem
                .or_else(|| waiting.map(|w| w.message.clone()))
                .or_else(|| preempting.map(|p| p.message.clone()))
                .or_else(|| last_preempted.map(|p| format!("preempted by {}", p.by)));
            JobRow {
                owner: scene.gang_owner(&key, &pods),
                kind,
                queue,
                priority,
                ready,
                min_member: min,
                members,
                gpus_requested,
                gpus_allocated,
                waiting_seconds: (!matches!(phase, "Running" | "Succeeded" | "Failed"))
                    .then(|| scene.now - since),
                phase: phase.to_string(),
                nodes: nodes.into_iter().collect(),
                reason,
                namespace: key.namespace,
                name: key.name,
            }
        })
        .collect()
}

pub fn phase_color(phase: &str) -> Option<Color> {
    match phase {
        "Running" | "Succeeded" => Some(Color::Green),
        "Scheduled" | "Scheduling" | "Preempting" => Some(Color::Cyan),
        "Pending" => Some(Color::Yellow),
        "Failed" | "Invalid" | "Preempted" => Some(Color::Red),
        _ => None,
    }
}

pub fn render(
    scene: &Scene,
    analysis: &Analysis,
    namespace: Option<&str>,
    wide: bool,
    style: &Style,
) -> Rendered {
    let rows = rows(scene, analysis, namespace);
    let mut headers = Vec::new();
    if namespace.is_none() {
        headers.push("NAMESPACE");
    }
    headers.extend([
        "NAME",
        "OWNER",
        "QUEUE",
        "PRIORITY",
        "READY/MIN/TOTAL",
        "GPUS",
        "PHASE",
        "WAITING",
        "NODES",
    ]);
    if wide {
        headers.extend(["KIND", "REASON"]);
    }
    let mut table = Table::new(&headers);
    for r in &rows {
        let mut row = Vec::new();
        if namespace.is_none() {
            row.push(Cell::new(r.namespace.as_str()));
        }
        row.extend([
            Cell::new(r.name.as_str()),
            Cell::new(r.owner.as_deref().unwrap_or("-")),
            Cell::new(r.queue.as_str()),
            Cell::new(r.priority.to_string()),
            Cell::colored(
                format!("{}/{}/{}", r.ready, r.min_member, r.members),
                (r.members < r.min_member).then_some(Color::Yellow),
            ),
            Cell::new(format!("{}/{}", r.gpus_allocated, r.gpus_requested)),
            Cell::colored(r.phase.as_str(), phase_color(&r.phase)),
            Cell::new(
                r.waiting_seconds
                    .map_or_else(|| "-".into(), |s| style.age(s)),
            ),
            Cell::new(list(&r.nodes, if wide { 8 } else { 3 })),
        ]);
        if wide {
            row.push(Cell::new(r.kind.as_str()));
            row.push(Cell::new(r.reason.clone().unwrap_or_else(|| "-".into())));
        }
        table.push(row);
    }
    let pending = rows
        .iter()
        .filter(|r| !matches!(r.phase.as_str(), "Running" | "Succeeded" | "Failed"))
        .count();
    let footer = vec![format!(
        "Gangs: {}   running: {}   waiting: {pending}   GPUs allocated/requested: {}/{}",
        rows.len(),
        rows.iter().filter(|r| r.phase == "Running").count(),
        rows.iter().map(|r| r.gpus_allocated).sum::<u32>(),
        rows.iter().map(|r| r.gpus_requested).sum::<u32>(),
    )];
    Rendered {
        table,
        footer,
        data: serde_json::json!({"kind": "GangList", "items": to_value(&rows)}),
    }
}
