//! `muster-bench`: Muster against plain kube-scheduler, kube-scheduler's native gang scheduling
//! and scheduler-plugins' coscheduling, on the same kwok clusters with the same pods.
//!
//! ```text
//! cargo run --release -p muster-bench -- throughput --nodes 1000 --reps 3 --publish
//! ```
//!
//! Writes `<out>/<scenario>.json` (every run, medians, ratios against plain kube-scheduler) and
//! SVG plots; `--publish` copies the plots to docs/img/. See docs/benchmarks.md.

mod cli;
mod competitors;
mod gang_forms;
mod measure;
mod report;
mod scenarios;
mod svg;
mod workload;

use anyhow::{Context, Result, bail};
use clap::Parser;

use cli::{Args, Scenario};
use competitors::{Binaries, Competitor};
use report::{Report, Skipped, print_table};
use scenarios::Ctx;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("muster-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let explicit = args.schedulers.is_some();
    let wanted = scenarios::ordered(
        &args
            .schedulers
            .clone()
            .unwrap_or_else(|| Competitor::ALL.to_vec()),
    );
    let want_cosched = wanted.contains(&Competitor::Coscheduling);
    let (bins, cosched_skip) = tokio::task::spawn_blocking({
        let (debug, build) = (args.debug_extender, !args.skip_unbuilt);
        move || Binaries::prepare(debug, want_cosched, build)
    })
    .await
    .context("preparing binaries")??;
    let mut schedulers = wanted.clone();
    let mut skipped = Vec::new();
    if let Some(reason) = cosched_skip {
        if explicit {
            bail!("coscheduling was asked for but is not available: {reason}");
        }
        eprintln!("muster-bench: skipping coscheduling: {reason}");
        schedulers.retain(|c| *c != Competitor::Coscheduling);
        skipped.push(Skipped {
            scheduler: Competitor::Coscheduling,
            reason,
        });
    }
    let mut report = Report::new(args.scenario.name(), &schedulers, serde_json::Value::Null);
    report.skipped = skipped;
    let mut ctx = Ctx {
        args: args.clone(),
        bins,
        schedulers,
        report,
    };
    match args.scenario {
        Scenario::Throughput => scenarios::throughput::run(&mut ctx).await?,
        Scenario::Contention => scenarios::contention::run(&mut ctx).await?,
        Scenario::Preemption => scenarios::preemption::run(&mut ctx).await?,
        Scenario::Fragmentation => scenarios::fragmentation::run(&mut ctx).await?,
        Scenario::Smoke => scenarios::smoke::run(&mut ctx).await?,
    }
    let path = ctx.report.write(&args.out)?;
    let columns: Vec<String> = ctx
        .report
        .summary
        .first()
        .and_then(|v| v.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    print_table(&ctx.report.summary, &cols);
    eprintln!("wrote {}", path.display());
    Ok(())
}
