//! Smoke: a few seconds per scheduler on 8 nodes (64 GPUs), run by the test suite.
//!
//! 1. Hold: one gang of 9 pods x 8 GPUs, which cannot fit (8 nodes). A gang scheduler binds
//!    none of it; plain kube-scheduler binds 8. Then it is deleted.
//! 2. Fill: 4 gangs of 4 pods x 4 GPUs, interleaved, exactly the cluster's 64 GPUs: every
//!    scheduler must bind every pod.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::{Ctx, GPUS_PER_NODE, max_of, series_json};
use crate::measure::Tracker;
use crate::report::write_svg;
use crate::svg;
use crate::workload::{Gang, create_namespace, delete_gang, order, submit};

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let nodes = ctx.args.nodes.unwrap_or(8);
    let gangs_n = ctx.args.gangs.unwrap_or(4);
    let size = ctx.args.size.unwrap_or(4);
    let per_pod = (nodes * GPUS_PER_NODE) / (gangs_n * size).max(1) as u32;
    let hold_wait = Duration::from_secs(8);
    let timeout = Duration::from_secs(ctx.args.timeout.unwrap_or(60));
    ctx.report.params = json!({"nodes": nodes, "hold_gang": {"size": nodes + 1, "gpus_per_pod": GPUS_PER_NODE},
        "gangs": gangs_n, "gang_size": size, "gpus_per_pod": per_pod, "hold_wait_seconds": hold_wait.as_secs()});
    let mut plot = Vec::new();
    for rep in 0..ctx.args.reps {
        for c in ctx.schedulers.clone() {
            let mut running = ctx.start(c, nodes, rep).await?;
            let client = running.client();
            let tracker = Tracker::start(&client, GPUS_PER_NODE).await?;
            let ns = "smoke";
            create_namespace(&client, ns).await?;

            let hold = vec![Gang::new("hold", nodes as usize + 1, GPUS_PER_NODE)];
            let h = tracker.add_gangs(&hold);
            submit(&client, c, ns, &hold, &order(&hold, false), &|g, i| {
                tracker.created(&hold[g].pod_name(i))
            })
            .await?;
            tokio::time::sleep(hold_wait).await;
            running.check_alive()?;
            let hold_bound = tracker.lock().gangs[h].bound;
            tracker.finish(h);
            delete_gang(&client, ns, &hold[0]).await;
            let released = tracker
                .wait(
                    timeout,
                    || running.check_alive(),
                    |st| st.bound_pods() == 0 || st.gangs[h].bound == 0,
                )
                .await?;
            eprintln!(
                "   hold: {hold_bound} of {} pods of an oversized gang bound (released: {released})",
                hold[0].size
            );

            let gangs: Vec<Gang> = (0..gangs_n)
                .map(|g| Gang::new(format!("s-g{g}"), size, per_pod))
                .collect();
            let first = tracker.add_gangs(&gangs);
            let t_start = Instant::now();
            let t0 = tracker.seconds(t_start);
            submit(&client, c, ns, &gangs, &order(&gangs, true), &|g, i| {
                tracker.created(&gangs[g].pod_name(i))
            })
            .await?;
            let range = first..first + gangs.len();
            let r2 = range.clone();
            let all = tracker
                .wait(
                    timeout,
                    || running.check_alive(),
                    move |st| st.gangs[r2.clone()].iter().all(|g| g.bound >= g.gang.size),
                )
                .await?;
            let (lat, span) = tracker.latencies(range, t_start);
            let samples = tracker.samples_since(t0);
            let max_partial = max_of(&samples, |s| s.partial_gangs as f64);
            eprintln!(
                "   fill: {}/{} bound in {span:.1}s, max partial gangs {max_partial}",
                lat.len(),
                gangs_n * size
            );
            if rep == 0 {
                plot.push((
                    c.name().to_string(),
                    super::series(&samples, t0, |s| s.bound_pods as f64),
                ));
            }
            ctx.report.runs.push(json!({
                "scheduler": c.name(), "rep": rep,
                "hold_bound": hold_bound, "hold_size": hold[0].size, "hold_released": released,
                "pods": gangs_n * size, "bound": lat.len(), "all_bound": all, "seconds": span,
                "max_partial_gangs": max_partial,
                "series": series_json(&samples, t0),
            }));
            drop(tracker);
            drop(running);
        }
    }
    ctx.report.summary = ctx
        .report
        .runs
        .iter()
        .map(|r| {
            json!({"scheduler": r["scheduler"], "rep": r["rep"], "hold_bound": r["hold_bound"],
            "bound": r["bound"], "pods": r["pods"], "seconds": r["seconds"],
            "max_partial_gangs": r["max_partial_gangs"]})
        })
        .collect();
    let svg = svg::lines(
        &format!("Smoke: {gangs_n} gangs x {size} pods x {per_pod} GPUs on {nodes} nodes"),
        "seconds",
        "pods bound",
        &plot,
    );
    write_svg(&ctx.args.out, "smoke.svg", &svg, false)?;
    Ok(())
}
