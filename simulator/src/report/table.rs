//! The comparison table: one row per metric, one column per policy.

use super::duration;
use crate::run::Results;
use std::fmt::Write;

pub fn render(r: &Results) -> String {
    let mut out = String::new();
    let w = &r.workload;
    let c = &r.cluster;
    let _ = writeln!(out, "workload: {}", w.source);
    let _ = writeln!(
        out,
        "          {} jobs ({} high priority{}), {:.0} GPU-hours, arrivals over {}, offered load {:.2}",
        w.jobs,
        w.high_priority_jobs,
        if w.dropped_too_large > 0 {
            format!(", {} larger than the cluster left out", w.dropped_too_large)
        } else {
            String::new()
        },
        w.gpu_hours,
        duration(w.arrival_span as f64),
        w.offered_load
    );
    let _ = writeln!(
        out,
        "cluster:  {} x {} ({} GPUs/node, {} GPUs{})\n",
        c.nodes,
        c.topology,
        c.gpus_per_node,
        c.gpus,
        if c.racks > 1 {
            format!(", {} racks", c.racks)
        } else {
            String::new()
        }
    );
    let p = &r.policies;
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&crate::metrics::PolicyReport) -> String| {
        rows.push((name.to_string(), p.iter().map(f).collect()));
    };
    row("jobs completed", &|x| format!("{}/{}", x.completed, x.jobs));
    row("JCT avg", &|x| duration(x.jct.avg));
    row("JCT p50", &|x| duration(x.jct.p50));
    row("JCT p95", &|x| duration(x.jct.p95));
    row("queueing avg", &|x| duration(x.queueing_delay.avg));
    row("queueing p50", &|x| duration(x.queueing_delay.p50));
    row("queueing p95", &|x| duration(x.queueing_delay.p95));
    row("queueing avg, high prio", &|x| {
        duration(x.high_priority_delay_avg)
    });
    row("GPU allocation", &|x| pct(x.allocation_ratio));
    row("GPU busy (running jobs)", &|x| pct(x.busy_ratio));
    row("makespan", &|x| duration(x.makespan));
    row("preemptions", &|x| x.preemptions.to_string());
    row("GPU-hours lost to preemption", &|x| {
        format!("{:.0}", x.lost_gpu_hours)
    });
    row("stranded free GPUs (avg)", &|x| {
        format!("{:.1}", x.stranded_gpus_avg)
    });
    row("whole-node request blocked by frag.", &|x| {
        pct(x.fragmentation_blocked)
    });
    row("partially placed jobs", &|x| x.partial_jobs.to_string());
    row("GPUs held by partial jobs (avg)", &|x| {
        format!("{:.1}", x.partial_gpus_avg)
    });
    row("slowdown (avg run factor)", &|x| {
        format!("{:.3}", x.slowdown_avg)
    });
    row("runs slowed by placement", &|x| x.slowed_runs.to_string());
    row("stopped", &|x| match (&x.deadlock, x.hit_time_bound) {
        (Some(d), _) => format!(
            "DEADLOCK at {}: {} jobs hold {} GPUs",
            duration(d.at as f64),
            d.stuck_jobs,
            d.held_gpus
        ),
        (None, true) => "time bound".into(),
        (None, false) => "-".into(),
    });
    let name_w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let col_w: Vec<usize> = (0..p.len())
        .map(|i| {
            rows.iter()
                .map(|(_, v)| v[i].len())
                .chain([p[i].policy.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(out, "{:name_w$}", "");
    for (i, x) in p.iter().enumerate() {
        let _ = write!(out, "  {:>w$}", x.policy, w = col_w[i]);
    }
    out.push('\n');
    for (name, vals) in &rows {
        let _ = write!(out, "{name:name_w$}");
        for (i, v) in vals.iter().enumerate() {
            let _ = write!(out, "  {v:>w$}", w = col_w[i]);
        }
        out.push('\n');
    }
    out
}

pub fn timings(r: &Results) -> String {
    let mut out = String::from("timings (wall clock):");
    for t in &r.timings {
        let _ = write!(
            out,
            "  {} {:.0} ms ({} cycles, {:.0} us/cycle)",
            t.policy, t.wall_ms, t.cycles, t.us_per_cycle
        );
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
