//! (b) Contention: 1.5x more gang demand than GPUs (default gangs of 8 pods x 8 GPUs, so every
//! pod takes a whole node), members interleaved across gangs at submission. A gang runs for
//! `run_seconds` once every member is bound, then the benchmark deletes it. Measured: gangs
//! partially placed over time (their GPUs are held by jobs that cannot start: with a
//! gang-unaware scheduler, deadlock), GPU allocation ratio, and the time until every gang ran.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Ctx, GPUS_PER_NODE, extender_stats, max_of, mean_of, series, series_json, wait_reaping,
};
use crate::competitors::Competitor;
use crate::measure::Tracker;
use crate::report::{median_of, ratio, write_svg};
use crate::svg;
use crate::workload::{Gang, create_namespace, order, submit};

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let nodes = ctx.args.nodes.unwrap_or(1000);
    let size = ctx.args.size.unwrap_or(8);
    let gpus = GPUS_PER_NODE;
    let capacity = u64::from(nodes * GPUS_PER_NODE);
    let gangs_n = ctx.args.gangs.unwrap_or_else(|| {
        (capacity as f64 * 1.5 / (size as f64 * f64::from(gpus))).ceil() as usize
    });
    let run_s = ctx.args.run_seconds.unwrap_or(10.0);
    let timeout = Duration::from_secs(ctx.args.timeout.unwrap_or(240));
    let demand = gangs_n as u64 * size as u64 * u64::from(gpus);
    ctx.report.params = json!({"nodes": nodes, "gpus_per_node": GPUS_PER_NODE, "gangs": gangs_n,
        "gang_size": size, "gpus_per_pod": gpus, "demand_gpus": demand, "capacity_gpus": capacity,
        "run_seconds": run_s, "timeout_seconds": timeout.as_secs(), "interleaved": true,
        "qps": ctx.args.qps, "reps": ctx.args.reps});
    let mut plot_partial = Vec::new();
    let mut plot_alloc = Vec::new();
    for rep in 0..ctx.args.reps {
        for c in ctx.schedulers.clone() {
            let mut running = ctx.start(c, nodes, rep).await?;
            let client = running.client();
            let tracker = Tracker::start(&client, GPUS_PER_NODE).await?;
            let ns = "contention";
            create_namespace(&client, ns).await?;
            let gangs: Vec<Gang> = (0..gangs_n)
                .map(|g| Gang {
                    run_seconds: Some(run_s),
                    ..Gang::new(format!("c-g{g}"), size, gpus)
                })
                .collect();
            tracker.add_gangs(&gangs);
            let t_start = Instant::now();
            let t0 = tracker.seconds(t_start);
            let pod_order = order(&gangs, true);
            let on_create = |g: usize, i: usize| tracker.created(&gangs[g].pod_name(i));
            let submitting = submit(&client, c, ns, &gangs, &pod_order, &on_create);
            // Reap while submitting too: gangs may complete before the last pod is created.
            let reaper = async {
                loop {
                    super::reap(&tracker, &client, ns);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                r = submitting => r?,
                _ = reaper => {}
            }
            let n = gangs.len();
            let all = wait_reaping(
                &mut running,
                &tracker,
                ns,
                timeout,
                Duration::from_secs(60),
                move |st| st.completed_gangs() >= n,
            )
            .await?;
            let t_end = Instant::now();
            let (completed, last_complete) = {
                let st = tracker.lock();
                let last = st.gangs.iter().filter_map(|g| g.complete_at).max();
                (st.completed_gangs(), last)
            };
            let all_ran_s = if all {
                last_complete.map(|t| t.duration_since(t_start).as_secs_f64())
            } else {
                None
            };
            let samples = tracker.samples_since(t0);
            // Allocation while work was waiting (until the last gang started, or the timeout).
            let busy_until = all_ran_s.unwrap_or(t_end.duration_since(t_start).as_secs_f64());
            let busy: Vec<_> = samples
                .iter()
                .filter(|s| s.t - t0 <= busy_until)
                .cloned()
                .collect();
            let alloc = mean_of(&busy, |s| s.allocated_gpus as f64) / capacity as f64;
            let useful = mean_of(&busy, |s| {
                s.allocated_gpus.saturating_sub(s.stranded_gpus) as f64
            }) / capacity as f64;
            let end_partial = samples.last().map_or(0, |s| s.partial_gangs);
            eprintln!(
                "   {completed}/{n} gangs ran; all ran after {}; max partial {}, at end {end_partial}; allocation {:.0}% (useful {:.0}%)",
                all_ran_s.map_or("never (timeout)".into(), |s| format!("{s:.1}s")),
                max_of(&samples, |s| s.partial_gangs as f64),
                alloc * 100.0,
                useful * 100.0
            );
            if rep == 0 {
                plot_partial.push((
                    c.name().to_string(),
                    series(&samples, t0, |s| s.partial_gangs as f64),
                ));
                plot_alloc.push((
                    c.name().to_string(),
                    series(&samples, t0, |s| {
                        100.0 * s.allocated_gpus.saturating_sub(s.stranded_gpus) as f64
                            / capacity as f64
                    }),
                ));
            }
            ctx.report.runs.push(json!({
                "scheduler": c.name(), "rep": rep, "gangs": n, "completed_gangs": completed,
                "all_ran": all, "all_ran_seconds": all_ran_s,
                "max_partial_gangs": max_of(&samples, |s| s.partial_gangs as f64),
                "partial_gangs_at_end": end_partial,
                "max_stranded_gpus": max_of(&samples, |s| s.stranded_gpus as f64),
                "allocation_ratio": alloc, "useful_allocation_ratio": useful,
                "deadlocked": !all && end_partial > 0,
                "series": series_json(&samples, t0),
                // Muster's own counters (nominations, dropped plans): why a run took its time.
                "extender": extender_stats(&running).await,
            }));
            drop(tracker);
            drop(running);
        }
    }
    let runs = ctx.report.runs.clone();
    let of = |c: Competitor, key: &str| median_of(&runs, |r| r["scheduler"] == c.name(), key);
    let plain_t = of(Competitor::Plain, "all_ran_seconds");
    for &c in &ctx.schedulers {
        let mine: Vec<&Value> = runs.iter().filter(|r| r["scheduler"] == c.name()).collect();
        ctx.report.summary.push(json!({
            "scheduler": c.name(),
            "runs": mine.len(),
            "runs_all_ran": mine.iter().filter(|r| r["all_ran"] == true).count(),
            "runs_deadlocked": mine.iter().filter(|r| r["deadlocked"] == true).count(),
            "all_ran_seconds": of(c, "all_ran_seconds"),
            "completed_gangs": of(c, "completed_gangs"),
            "max_partial_gangs": of(c, "max_partial_gangs"),
            "partial_gangs_at_end": of(c, "partial_gangs_at_end"),
            "allocation_ratio": of(c, "allocation_ratio"),
            "useful_allocation_ratio": of(c, "useful_allocation_ratio"),
            "ratio_all_ran_seconds_vs_plain": ratio(of(c, "all_ran_seconds"), plain_t),
        }));
    }
    let title = format!(
        "Contention: {gangs_n} gangs x {size} pods x {gpus} GPUs on {nodes} nodes (1.5x demand), interleaved"
    );
    let a = svg::lines(
        &format!("{title}: gangs partially placed"),
        "seconds since submission started",
        "partially placed gangs (>= 1 s)",
        &plot_partial,
    );
    write_svg(
        &ctx.args.out,
        "contention-partial.svg",
        &a,
        ctx.args.publish,
    )?;
    let b = svg::lines(
        &format!("{title}: GPUs running whole gangs"),
        "seconds since submission started",
        "% of GPUs held by whole gangs",
        &plot_alloc,
    );
    write_svg(
        &ctx.args.out,
        "contention-allocation.svg",
        &b,
        ctx.args.publish,
    )?;
    Ok(())
}
