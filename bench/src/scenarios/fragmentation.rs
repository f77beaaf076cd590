//! (d) Fragmentation: a slice of the Philly trace (read in place, never copied) replayed through
//! the real schedulers at speed. Arrivals and durations are divided by `--speedup` (durations
//! clamped to 2..60 s); a job of G GPUs is a gang of ceil(G/8) pods (8 GPUs each, the last one
//! the remainder), deleted by the benchmark when it has run its time. Without --nodes the
//! cluster is sized so the slice offers about 1.2x its GPUs on average (fragmentation only shows
//! under load). Measured: GPU allocation ratio, GPUs stranded in partially placed gangs, free
//! GPUs in fragments (partly used nodes), time until every job ran.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use muster_sim::workload::philly::{TraceWindow, load};
use serde_json::json;

use super::{Ctx, GPUS_PER_NODE, max_of, mean_of, reap, series, series_json, wait_reaping};
use crate::competitors::Competitor;
use crate::measure::Tracker;
use crate::report::{median_of, ratio, write_svg};
use crate::svg;
use crate::workload::{Gang, create_namespace, order, submit};

struct Job {
    arrival: f64,
    gang: Gang,
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let trace = if ctx.args.trace.is_absolute() {
        ctx.args.trace.clone()
    } else {
        crate::competitors::repo_root().join(&ctx.args.trace)
    };
    let window = TraceWindow {
        start: 30 * 86400,
        max_jobs: Some(ctx.args.jobs),
        time_scale: 1.0 / ctx.args.speedup.max(1.0),
        ..TraceWindow::default()
    };
    let workload = load(&trace, &window)
        .with_context(|| format!("reading the Philly trace {}", trace.display()))?;
    if workload.jobs.is_empty() {
        bail!("no jobs in the trace window");
    }
    let speed = ctx.args.speedup.max(1.0);
    let mut jobs = Vec::new();
    let mut pods_max = 1;
    for j in &workload.jobs {
        let sizes = j.pod_sizes(GPUS_PER_NODE);
        // All members of a gang are alike here: split G GPUs into whole-node pods plus a
        // remainder pod would need per-pod sizes; use ceil(G/8) pods of min(G, 8) GPUs.
        let per_pod = sizes.first().copied().unwrap_or(1);
        pods_max = pods_max.max(sizes.len());
        let run = (j.duration as f64 / speed).clamp(2.0, 60.0);
        jobs.push(Job {
            arrival: j.arrival as f64,
            gang: Gang {
                run_seconds: Some(run),
                ..Gang::new(format!("j{}", j.id), sizes.len(), per_pod)
            },
        });
    }
    let span = jobs.iter().map(|j| j.arrival).fold(0.0, f64::max).max(1.0);
    let gpu_seconds: f64 = jobs
        .iter()
        .map(|j| j.gang.gpu_total() as f64 * j.gang.run_seconds.unwrap_or(0.0))
        .sum();
    let concurrency = gpu_seconds / span;
    let nodes = ctx.args.nodes.unwrap_or_else(|| {
        ((concurrency / 1.2 / f64::from(GPUS_PER_NODE)).ceil() as u32).max(pods_max as u32)
    });
    let capacity = u64::from(nodes * GPUS_PER_NODE);
    let timeout = Duration::from_secs(ctx.args.timeout.unwrap_or(span as u64 + 300));
    ctx.report.params = json!({"trace": trace.display().to_string(), "source": workload.source,
        "jobs": jobs.len(), "speedup": speed, "replay_seconds": span,
        "mean_offered_gpus": concurrency, "nodes": nodes, "capacity_gpus": capacity,
        "duration_clamp_seconds": [2, 60], "qps": ctx.args.qps, "reps": ctx.args.reps,
        "note": "gang members all take min(G, 8) GPUs, so 12-GPU jobs take 16"});
    let mut plot_alloc = Vec::new();
    for rep in 0..ctx.args.reps {
        for c in ctx.schedulers.clone() {
            let mut running = ctx.start(c, nodes, rep).await?;
            let client = running.client();
            let tracker = Tracker::start(&client, GPUS_PER_NODE).await?;
            let ns = "replay";
            create_namespace(&client, ns).await?;
            let gangs: Vec<Gang> = jobs.iter().map(|j| j.gang.clone()).collect();
            tracker.add_gangs(&gangs);
            let t_start = Instant::now();
            let t0 = tracker.seconds(t_start);
            for (k, job) in jobs.iter().enumerate() {
                let at = t_start + Duration::from_secs_f64(job.arrival);
                while Instant::now() < at {
                    reap(&tracker, &client, ns);
                    tokio::time::sleep(Duration::from_millis(100).min(at - Instant::now())).await;
                }
                let one = std::slice::from_ref(&gangs[k]);
                submit(&client, c, ns, one, &order(one, false), &|_, i| {
                    tracker.created(&gangs[k].pod_name(i))
                })
                .await?;
            }
            let n = gangs.len();
            let all = wait_reaping(
                &mut running,
                &tracker,
                ns,
                timeout,
                Duration::from_secs(90),
                move |st| st.completed_gangs() >= n,
            )
            .await?;
            let (completed, last) = {
                let st = tracker.lock();
                (
                    st.completed_gangs(),
                    st.gangs.iter().filter_map(|g| g.complete_at).max(),
                )
            };
            let all_ran_s = all
                .then(|| last.map(|t| t.duration_since(t_start).as_secs_f64()))
                .flatten();
            let samples = tracker.samples_since(t0);
            let until = all_ran_s.unwrap_or(span);
            let window: Vec<_> = samples
                .iter()
                .filter(|s| s.t - t0 <= until)
                .cloned()
                .collect();
            let alloc = mean_of(&window, |s| s.allocated_gpus as f64) / capacity as f64;
            let stranded = mean_of(&window, |s| s.stranded_gpus as f64);
            let fragments = mean_of(&window, |s| s.fragment_gpus as f64);
            eprintln!(
                "   {completed}/{n} jobs ran; all after {}; allocation {:.0}%, stranded {stranded:.1} GPUs, fragments {fragments:.1} GPUs",
                all_ran_s.map_or("never (timeout)".into(), |s| format!("{s:.1}s")),
                alloc * 100.0
            );
            if rep == 0 {
                plot_alloc.push((
                    c.name().to_string(),
                    series(&samples, t0, |s| {
                        100.0 * s.allocated_gpus as f64 / capacity as f64
                    }),
                ));
            }
            ctx.report.runs.push(json!({
                "scheduler": c.name(), "rep": rep, "jobs": n, "completed_jobs": completed,
                "all_ran": all, "all_ran_seconds": all_ran_s, "allocation_ratio": alloc,
                "mean_stranded_gpus": stranded, "max_stranded_gpus": max_of(&samples, |s| s.stranded_gpus as f64),
                "mean_fragment_gpus": fragments, "max_partial_gangs": max_of(&samples, |s| s.partial_gangs as f64),
                "series": series_json(&samples, t0),
            }));
            drop(tracker);
            drop(running);
        }
    }
    let runs = ctx.report.runs.clone();
    let of = |c: Competitor, key: &str| median_of(&runs, |r| r["scheduler"] == c.name(), key);
    let plain_alloc = of(Competitor::Plain, "allocation_ratio");
    for &c in &ctx.schedulers {
        ctx.report.summary.push(json!({
            "scheduler": c.name(),
            "completed_jobs": of(c, "completed_jobs"),
            "all_ran_seconds": of(c, "all_ran_seconds"),
            "allocation_ratio": of(c, "allocation_ratio"),
            "mean_stranded_gpus": of(c, "mean_stranded_gpus"),
            "mean_fragment_gpus": of(c, "mean_fragment_gpus"),
            "max_partial_gangs": of(c, "max_partial_gangs"),
            "ratio_allocation_vs_plain": ratio(of(c, "allocation_ratio"), plain_alloc),
        }));
    }
    let svg = svg::lines(
        &format!(
            "Philly replay: {} jobs at {speed}x on {nodes} nodes: GPUs allocated",
            jobs.len()
        ),
        "seconds since the first arrival",
        "% of GPUs allocated",
        &plot_alloc,
    );
    write_svg(&ctx.args.out, "fragmentation.svg", &svg, ctx.args.publish)?;
    Ok(())
}
