//! The queue tables (runs with `--queues` / `--queue-file`): one row per policy, then the
//! largest queues one by one under the queue policies and the `muster` baseline.

use super::duration;
use crate::run::Results;
use std::fmt::Write;

/// Queues shown one by one: the largest by demand (others are in the overall rows).
pub const TOP_QUEUES: usize = 6;

/// Policies in the per-queue breakdown: the queue policies and the no-queue baseline.
const BROKEN_DOWN: [&str; 3] = ["muster-queues", "muster-hard-quota", "muster"];

/// Empty when the run has no queues.
pub fn render(r: &Results) -> String {
    let Some(setup) = &r.queues else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "queues: {} ({} queues, {} GPUs guaranteed in all)",
        setup.source,
        setup.queues.len(),
        setup.queues.iter().map(|q| q.guaranteed).sum::<u64>()
    );
    let header = [
        "policy",
        "JCT avg",
        "JCT p95",
        "queueing avg",
        "below guarantee, waiting",
        "Jain (alloc/guar.)",
        "reclaims",
        "GPU-h lost to reclaim",
    ];
    let mut rows = Vec::new();
    for p in &r.policies {
        let Some(q) = &p.queues else { continue };
        rows.push(vec![
            p.policy.clone(),
            duration(p.jct.avg),
            duration(p.jct.p95),
            duration(p.queueing_delay.avg),
            duration(q.below_guarantee_secs),
            format!("{:.3}", q.jain_avg),
            q.reclaims.to_string(),
            format!("{:.0}", q.reclaim_lost_gpu_hours),
        ]);
    }
    out.push_str(&grid(&header, &rows, 1));
    // Largest queues by demand (GPU-seconds asked in the run).
    let mut demand = vec![0f64; setup.queues.len()];
    for j in &r.jobs {
        if let Some(&q) = setup.job_leaf.get(j.id) {
            demand[q] += j.duration as f64 * f64::from(j.gpus);
        }
    }
    let mut order: Vec<usize> = (0..setup.queues.len()).collect();
    order.sort_by(|&a, &b| demand[b].total_cmp(&demand[a]).then(a.cmp(&b)));
    order.truncate(TOP_QUEUES);
    let _ = writeln!(
        out,
        "\nper queue ({} largest by demand of {}; below guar. = time below its guarantee with work waiting):",
        order.len(),
        setup.queues.len()
    );
    let header = [
        "queue",
        "guar.",
        "policy",
        "done",
        "JCT avg",
        "JCT p95",
        "queueing avg",
        "below guar.",
        "GPUs avg",
        "peak",
        "borrowed GPU-h",
        "reclaimed",
        "lost GPU-h",
        "won by reclaim",
    ];
    let mut rows = Vec::new();
    for &q in &order {
        let mut first = true;
        for p in r
            .policies
            .iter()
            .filter(|p| BROKEN_DOWN.contains(&p.policy.as_str()))
        {
            let Some(x) = p.queues.as_ref().and_then(|m| m.queues.get(q)) else {
                continue;
            };
            let (name, guar) = if first {
                (x.name.clone(), x.guaranteed.to_string())
            } else {
                (String::new(), String::new())
            };
            first = false;
            rows.push(vec![
                name,
                guar,
                p.policy.clone(),
                format!("{}/{}", x.completed, x.jobs),
                duration(x.jct.avg),
                duration(x.jct.p95),
                duration(x.queueing_delay.avg),
                duration(x.below_guarantee_secs),
                format!("{:.1}", x.allocated_avg),
                x.peak_allocated.to_string(),
                format!("{:.0}", x.borrowed_gpu_hours),
                x.reclaimed.to_string(),
                format!("{:.1}", x.reclaim_lost_gpu_hours),
                x.started_by_reclaim.to_string(),
            ]);
        }
    }
    out.push_str(&grid(&header, &rows, 3));
    out
}

/// Columns padded to their widest cell; the first `left` columns left-aligned, the rest
/// right-aligned (like the main table's values).
fn grid(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths[i];
            if i > 0 {
                s.push_str("  ");
            }
            if i < left {
                let _ = write!(s, "{c:w$}");
            } else {
                let _ = write!(s, "{c:>w$}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}
