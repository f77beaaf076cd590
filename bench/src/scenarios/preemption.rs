//! (c) Preemption: the cluster is filled with low-priority gangs (gangs of `size` pods x 8 GPUs,
//! every node full), then one high-priority gang of the same shape arrives. Measured: seconds
//! from its submission until every member is bound, low-priority pods evicted, and
//! low-priority gangs left broken (some members evicted, others still holding GPUs).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::{Ctx, GPUS_PER_NODE, extender_stats};
use crate::competitors::Competitor;
use crate::measure::Tracker;
use crate::report::{median_of, ratio, write_svg};
use crate::svg;
use crate::workload::{Gang, create_namespace, create_priority_class, order, submit};

const LOW: &str = "bench-low";
const HIGH: &str = "bench-high";

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let nodes = ctx.args.nodes.unwrap_or(1000);
    let size = ctx.args.size.unwrap_or(8);
    let gpus = GPUS_PER_NODE;
    if size == 0 || !(nodes as usize).is_multiple_of(size) {
        bail!(
            "--nodes ({nodes}) must be a multiple of --size ({size}) so the low gangs fill every node"
        );
    }
    let low_n = nodes as usize / size;
    let fill_timeout = Duration::from_secs(ctx.args.timeout.unwrap_or(900));
    let timeout = Duration::from_secs(180);
    ctx.report.params = json!({"nodes": nodes, "gpus_per_node": GPUS_PER_NODE,
        "low_gangs": low_n, "gang_size": size, "gpus_per_pod": gpus,
        "priorities": {LOW: 10, HIGH: 1000}, "timeout_seconds": timeout.as_secs(),
        "qps": ctx.args.qps, "reps": ctx.args.reps});
    for rep in 0..ctx.args.reps {
        for c in ctx.schedulers.clone() {
            let mut running = ctx.start(c, nodes, rep).await?;
            let client = running.client();
            create_priority_class(&client, LOW, 10).await?;
            create_priority_class(&client, HIGH, 1000).await?;
            let tracker = Tracker::start(&client, GPUS_PER_NODE).await?;
            let ns = "preemption";
            create_namespace(&client, ns).await?;
            let low: Vec<Gang> = (0..low_n)
                .map(|g| Gang {
                    priority_class: Some(LOW.into()),
                    ..Gang::new(format!("low-g{g}"), size, gpus)
                })
                .collect();
            tracker.add_gangs(&low);
            let fill_start = Instant::now();
            submit(&client, c, ns, &low, &order(&low, false), &|g, i| {
                tracker.created(&low[g].pod_name(i))
            })
            .await?;
            let filled = tracker
                .wait(
                    fill_timeout,
                    || running.check_alive(),
                    |st| st.completed_gangs() >= low_n,
                )
                .await?;
            let fill_s = fill_start.elapsed().as_secs_f64();
            eprintln!(
                "   filled: {}/{low_n} low gangs in {fill_s:.1}s",
                tracker.lock().completed_gangs()
            );
            if !filled {
                eprintln!("   the cluster did not fill; measuring anyway");
            }
            let high = vec![Gang {
                priority_class: Some(HIGH.into()),
                ..Gang::new("high", size, gpus)
            }];
            let hi = tracker.add_gangs(&high);
            let t_start = Instant::now();
            submit(&client, c, ns, &high, &order(&high, false), &|g, i| {
                tracker.created(&high[g].pod_name(i))
            })
            .await?;
            let ran = tracker
                .wait(
                    timeout,
                    || running.check_alive(),
                    |st| st.gangs[hi].complete_at.is_some(),
                )
                .await?;
            let run_s = tracker.lock().gangs[hi]
                .complete_at
                .map(|t| t.duration_since(t_start).as_secs_f64());
            // Let late evictions land before counting.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (evicted, broken, high_bound) = {
                let st = tracker.lock();
                let broken = st.gangs[..hi]
                    .iter()
                    .filter(|g| g.evicted > 0 && g.bound > 0)
                    .count();
                (st.evicted_pods, broken, st.gangs[hi].bound)
            };
            eprintln!(
                "   high-priority gang: {} ({high_bound}/{size} bound); {evicted} low pods evicted, {broken} low gangs left broken",
                run_s.map_or("never ran (timeout)".into(), |s| format!(
                    "ran after {s:.1}s"
                ))
            );
            let mut entry = json!({
                "scheduler": c.name(), "rep": rep, "filled": filled, "fill_seconds": fill_s,
                "high_ran": ran, "high_seconds_to_run": run_s, "high_bound": high_bound,
                "evicted_pods": evicted, "broken_low_gangs": broken,
            });
            if c == Competitor::Muster {
                entry["extender"] = extender_stats(&running).await;
            }
            ctx.report.runs.push(entry);
            drop(tracker);
            drop(running);
        }
    }
    let runs = ctx.report.runs.clone();
    let of = |c: Competitor, key: &str| median_of(&runs, |r| r["scheduler"] == c.name(), key);
    let plain_t = of(Competitor::Plain, "high_seconds_to_run");
    for &c in &ctx.schedulers {
        ctx.report.summary.push(json!({
            "scheduler": c.name(),
            "runs_high_ran": runs.iter().filter(|r| r["scheduler"] == c.name() && r["high_ran"] == true).count(),
            "high_seconds_to_run": of(c, "high_seconds_to_run"),
            "evicted_pods": of(c, "evicted_pods"),
            "broken_low_gangs": of(c, "broken_low_gangs"),
            "ratio_seconds_vs_plain": ratio(of(c, "high_seconds_to_run"), plain_t),
        }));
    }
    let groups = vec![
        "seconds until the gang ran".to_string(),
        "low-priority pods evicted".to_string(),
        "low gangs left broken".to_string(),
    ];
    let series: Vec<(String, Vec<f64>)> = ctx
        .schedulers
        .iter()
        .map(|c| {
            let s = ctx
                .report
                .summary
                .iter()
                .find(|s| s["scheduler"] == c.name());
            let f = |k: &str| s.and_then(|s| s[k].as_f64()).unwrap_or(0.0);
            (
                c.name().to_string(),
                vec![
                    f("high_seconds_to_run"),
                    f("evicted_pods"),
                    f("broken_low_gangs"),
                ],
            )
        })
        .collect();
    let svg = svg::bars(
        &format!(
            "Preemption: one {size} x {gpus}-GPU high-priority gang into {nodes} full nodes (medians)"
        ),
        "value",
        &groups,
        &series,
    );
    write_svg(&ctx.args.out, "preemption.svg", &svg, ctx.args.publish)?;
    Ok(())
}
