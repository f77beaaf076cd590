//! (a) Throughput: for each gang size k, `pods / k` gangs of k one-GPU pods submitted at once
//! (whole gangs one after another, 32 concurrent clients): pods/s from the first create to the
//! last bind, and p50/p99 create-to-bind. The sizes run one after another on the same fresh
//! cluster, each in its own namespace (together they use well under half of the GPUs, so each
//! size finds room).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{Ctx, GPUS_PER_NODE, extender_stats, max_of, series_json};
use crate::competitors::Competitor;
use crate::measure::{Tracker, quantile};
use crate::report::{median_of, ratio, write_svg};
use crate::svg;
use crate::workload::{Gang, create_namespace, order, submit};

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let nodes = ctx.args.nodes.unwrap_or(1000);
    let sizes = ctx.args.sizes.clone();
    let pods = ctx.args.pods;
    let timeout = Duration::from_secs(ctx.args.timeout.unwrap_or(900));
    let needed: usize = sizes.iter().map(|k| pods / k * k).sum();
    if needed as u64 > u64::from(nodes * GPUS_PER_NODE) {
        bail!(
            "{needed} one-GPU pods do not fit on {nodes} nodes x {GPUS_PER_NODE} GPUs; lower --pods"
        );
    }
    ctx.report.params = json!({"nodes": nodes, "gpus_per_node": GPUS_PER_NODE, "sizes": sizes,
        "pods_per_size": pods, "gpus_per_pod": 1, "qps": ctx.args.qps, "reps": ctx.args.reps,
        "submitters": crate::workload::SUBMITTERS});
    for rep in 0..ctx.args.reps {
        for c in ctx.schedulers.clone() {
            let mut running = ctx.start(c, nodes, rep).await?;
            let client = running.client();
            let tracker = Tracker::start(&client, GPUS_PER_NODE).await?;
            for &k in &sizes {
                let ns = format!("k{k}");
                create_namespace(&client, &ns).await?;
                let gangs: Vec<Gang> = (0..pods / k)
                    .map(|g| Gang::new(format!("k{k}-g{g}"), k, 1))
                    .collect();
                let first = tracker.add_gangs(&gangs);
                let range = first..first + gangs.len();
                let total = gangs.len() * k;
                let t_start = Instant::now();
                let t0 = tracker.seconds(t_start);
                submit(&client, c, &ns, &gangs, &order(&gangs, false), &|g, i| {
                    tracker.created(&gangs[g].pod_name(i))
                })
                .await?;
                let created_s = t_start.elapsed().as_secs_f64();
                let r2 = range.clone();
                let all = tracker
                    .wait(
                        timeout,
                        || running.check_alive(),
                        move |st| st.gangs[r2.clone()].iter().all(|g| g.bound >= g.gang.size),
                    )
                    .await?;
                let (lat, span) = tracker.latencies(range.clone(), t_start);
                let samples = tracker.samples_since(t0);
                let bound = lat.len();
                eprintln!(
                    "   k={k}: {bound}/{total} bound in {span:.1}s ({:.1} pods/s; created in {created_s:.1}s), p50 {:.0} ms, p99 {:.0} ms{}",
                    bound as f64 / span.max(1e-9),
                    quantile(&lat, 0.5),
                    quantile(&lat, 0.99),
                    if all { "" } else { " -- TIMED OUT" }
                );
                ctx.report.runs.push(json!({
                    "scheduler": c.name(), "rep": rep, "size": k, "gangs": gangs.len(),
                    "pods": total, "bound": bound, "all_bound": all,
                    "seconds": span, "create_seconds": created_s,
                    "pods_per_second": if all { json!(bound as f64 / span.max(1e-9)) } else { Value::Null },
                    "p50_ms": quantile(&lat, 0.5), "p99_ms": quantile(&lat, 0.99),
                    "max_partial_gangs": max_of(&samples, |s| s.partial_gangs as f64),
                    "nodes_ready_seconds": running.nodes_ready_seconds,
                    "series": series_json(&samples, t0),
                }));
            }
            if c == Competitor::Muster
                && let Some(last) = ctx.report.runs.last_mut()
            {
                last["extender"] = extender_stats(&running).await;
            }
            drop(tracker);
            drop(running);
        }
    }
    summarise(ctx);
    plot(ctx)
}

fn summarise(ctx: &mut Ctx) {
    let runs = ctx.report.runs.clone();
    for &k in &ctx.args.sizes {
        let of = |c: Competitor, key: &str| {
            median_of(&runs, |r| r["scheduler"] == c.name() && r["size"] == k, key)
        };
        let plain_pps = of(Competitor::Plain, "pods_per_second");
        let plain_p99 = of(Competitor::Plain, "p99_ms");
        for &c in &ctx.schedulers {
            let pps = of(c, "pods_per_second");
            let p99 = of(c, "p99_ms");
            ctx.report.summary.push(json!({
                "size": k, "scheduler": c.name(),
                "pods_per_second": pps, "p50_ms": of(c, "p50_ms"), "p99_ms": p99,
                "max_partial_gangs": of(c, "max_partial_gangs"),
                "all_bound_runs": runs.iter().filter(|r| r["scheduler"] == c.name() && r["size"] == k && r["all_bound"] == true).count(),
                "ratio_pods_per_second_vs_plain": ratio(pps, plain_pps),
                "ratio_p99_vs_plain": ratio(p99, plain_p99),
            }));
        }
    }
}

fn plot(ctx: &Ctx) -> Result<()> {
    let groups: Vec<String> = ctx
        .args
        .sizes
        .iter()
        .map(|k| format!("gangs of {k}"))
        .collect();
    let by = |key: &str| -> Vec<(String, Vec<f64>)> {
        ctx.schedulers
            .iter()
            .map(|c| {
                let v = ctx
                    .args
                    .sizes
                    .iter()
                    .map(|&k| {
                        ctx.report
                            .summary
                            .iter()
                            .find(|s| s["scheduler"] == c.name() && s["size"] == k)
                            .and_then(|s| s[key].as_f64())
                            .unwrap_or(0.0)
                    })
                    .collect();
                (c.name().to_string(), v)
            })
            .collect()
    };
    let nodes = ctx.report.params["nodes"].as_u64().unwrap_or(0);
    let pods = ctx.args.pods;
    let a = svg::bars(
        &format!("Throughput: {pods} one-GPU pods per gang size, {nodes} nodes (median pods/s)"),
        "pods/s (first create to last bind)",
        &groups,
        &by("pods_per_second"),
    );
    write_svg(&ctx.args.out, "throughput.svg", &a, ctx.args.publish)?;
    let p99: Vec<(String, Vec<f64>)> = by("p99_ms")
        .into_iter()
        .map(|(n, v)| (n, v.into_iter().map(|ms| ms / 1000.0).collect()))
        .collect();
    let b = svg::bars(
        &format!("Throughput: p99 create-to-bind, {nodes} nodes (median of reps)"),
        "seconds",
        &groups,
        &p99,
    );
    write_svg(&ctx.args.out, "throughput-p99.svg", &b, ctx.args.publish)?;
    Ok(())
}
