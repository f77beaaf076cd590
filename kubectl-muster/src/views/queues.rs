//! `kubectl muster top queues`: one row per queue, children under their parent, from the
//! plan with queues (the queues' state before the plan, as the scheduler reports it).

use crate::render::{Cell, Color, Rendered, Table, to_value};
use crate::scene::Analysis;
use muster_core::queues::format_ratio;
use muster_core::{QueueStatus, QueueWait};
use serde::Serialize;

pub const NO_QUEUES: &str = "no queues: every gang is planned in one queue (default)";

/// One resource of a queue; `limit` is `None` where it has none.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub allocated: u64,
    pub guaranteed: u64,
    pub limit: Option<u64>,
    pub borrowed: u64,
    pub lent: u64,
    pub fair_share: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRow {
    pub name: String,
    pub parent: Option<String>,
    /// 0 for a root.
    pub depth: usize,
    pub gpus: Amount,
    pub cpu_millis: Amount,
    pub memory_bytes: Amount,
    pub pending_gangs: u32,
    pub running_gangs: u32,
    /// Allocated over fair share on the dominant resource (`format_ratio`).
    pub share: String,
}

fn amount(q: &QueueStatus, pick: fn(&muster_core::queues::QueueAmounts) -> u64) -> Amount {
    let limit = pick(&q.limit);
    Amount {
        allocated: pick(&q.allocated),
        guaranteed: pick(&q.guaranteed),
        limit: (limit != u64::MAX).then_some(limit),
        borrowed: pick(&q.borrowed),
        lent: pick(&q.lent),
        fair_share: pick(&q.fair_share),
    }
}

/// Queues depth first, siblings in the plan's (name) order.
pub fn rows(analysis: &Analysis) -> Vec<QueueRow> {
    let all = &analysis.plan.queues;
    let mut out = Vec::with_capacity(all.len());
    let mut stack: Vec<(&QueueStatus, usize)> = all
        .iter()
        .rev()
        .filter(|q| {
            q.parent
                .as_ref()
                .is_none_or(|p| !all.iter().any(|o| o.name == *p))
        })
        .map(|q| (q, 0))
        .collect();
    while let Some((q, depth)) = stack.pop() {
        out.push(QueueRow {
            name: q.name.clone(),
            parent: q.parent.clone(),
            depth,
            gpus: amount(q, |a| a.gpus),
            cpu_millis: amount(q, |a| a.cpu_millis),
            memory_bytes: amount(q, |a| a.memory_bytes),
            pending_gangs: q.pending_gangs,
            running_gangs: q.running_gangs,
            share: format_ratio(q.share_ppm),
        });
        // A cycle cannot reach here (the core refuses one), but depth bounds the walk anyway.
        if depth < all.len() {
            stack.extend(
                all.iter()
                    .rev()
                    .filter(|c| c.parent.as_deref() == Some(q.name.as_str()))
                    .map(|c| (c, depth + 1)),
            );
        }
    }
    out
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `allocated/guaranteed/limit`, CPU in cores.
fn cpu(a: &Amount) -> String {
    let cores = |m: u64| {
        if m.is_multiple_of(1000) {
            (m / 1000).to_string()
        } else {
            format!("{m}m")
        }
    };
    format!(
        "{}/{}/{}",
        cores(a.allocated),
        cores(a.guaranteed),
        a.limit.map_or_else(|| "-".into(), cores)
    )
}

/// `allocated/guaranteed/limit`, memory in GiB.
fn memory(a: &Amount) -> String {
    let gib = |b: u64| {
        let g = b as f64 / f64::from(1u32 << 30);
        if g.fract() == 0.0 {
            format!("{g:.0}Gi")
        } else {
            format!("{g:.1}Gi")
        }
    };
    format!(
        "{}/{}/{}",
        gib(a.allocated),
        gib(a.guaranteed),
        a.limit.map_or_else(|| "-".into(), gib)
    )
}

pub fn render(analysis: &Analysis, wide: bool) -> Rendered {
    let rows = rows(analysis);
    let problems = &analysis.queues.problems;
    let mut footer = Vec::new();
    let mut table = Table::new(&[]);
    if rows.is_empty() {
        footer.push(NO_QUEUES.to_string());
    } else {
        let mut headers = vec![
            "QUEUE",
            "ALLOCATED",
            "GUARANTEED",
            "LIMIT",
            "BORROWED",
            "LENT",
            "PENDING",
            "RUNNING",
            "SHARE",
        ];
        if wide {
            headers.extend([
                "FAIR SHARE",
                "CPU ALLOC/GUAR/LIMIT",
                "MEMORY ALLOC/GUAR/LIMIT",
            ]);
        }
        table = Table::new(&headers);
        for r in &rows {
            let g = &r.gpus;
            let mut row = vec![
                Cell::new(format!("{}{}", "  ".repeat(r.depth), r.name)),
                Cell::new(g.allocated.to_string()),
                Cell::new(g.guaranteed.to_string()),
                Cell::colored(
                    limit(g.limit),
                    g.limit
                        .is_some_and(|l| g.allocated >= l && l > 0)
                        .then_some(Color::Red),
                ),
                Cell::colored(
                    g.borrowed.to_string(),
                    (g.borrowed > 0).then_some(Color::Yellow),
                ),
                Cell::new(g.lent.to_string()),
                Cell::new(r.pending_gangs.to_string()),
                Cell::new(r.running_gangs.to_string()),
                Cell::new(r.share.as_str()),
            ];
            if wide {
                row.push(Cell::new(g.fair_share.to_string()));
                row.push(Cell::new(cpu(&r.cpu_millis)));
                row.push(Cell::new(memory(&r.memory_bytes)));
            }
            table.push(row);
        }
        footer.push(
            "GPUs: ALLOCATED includes children; BORROWED is above the guarantee, LENT is idle \
             guarantee others use; SHARE is allocated / fair share"
                .to_string(),
        );
    }
    // Gangs of a missing, non-leaf or closed queue: the core counts them in no row's PENDING.
    let waiting_for = |why: QueueWait| {
        let mut v: Vec<(String, String)> = analysis
            .plan
            .waiting
            .iter()
            .filter(|w| w.queue == Some(why))
            .map(|w| (w.gang.to_string(), w.message.clone()))
            .collect();
        v.sort();
        v
    };
    let unqueued = waiting_for(QueueWait::InvalidQueue);
    let held = waiting_for(QueueWait::Closed);
    for (title, list) in [
        ("Gangs in no queue:", &unqueued),
        ("Gangs a closed queue holds back:", &held),
    ] {
        if !list.is_empty() {
            footer.push(String::new());
            footer.push(title.into());
            footer.extend(list.iter().map(|(g, m)| format!("  {g}: {m}")));
        }
    }
    if !problems.is_empty() {
        footer.push(String::new());
        footer.push("Problems:".into());
        for (queue, list) in problems {
            for p in list {
                footer.push(format!("  {queue}: {p}"));
            }
        }
    }
    Rendered {
        table,
        footer,
        data: serde_json::json!({
            "kind": "QueueList",
            "items": to_value(&rows),
            "problems": to_value(problems),
            "unqueued": unqueued
                .iter()
                .map(|(g, m)| serde_json::json!({"gang": g, "reason": m}))
                .collect::<Vec<_>>(),
            "heldByClosedQueues": held
                .iter()
                .map(|(g, m)| serde_json::json!({"gang": g, "reason": m}))
                .collect::<Vec<_>>(),
        }),
    }
}
