//! `muster-soak --nodes 100 --duration 30m --seed 1`: random gangs and faults against a real
//! control plane; exit code 1 when the checker found a violation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use muster_soak::{SoakConfig, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "muster-soak",
    about = "Soak Muster with random gangs and faults, checking its promises"
)]
struct Args {
    /// Simulated GPU nodes.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// How long to generate load and faults (e.g. 90s, 30m, 1h30m).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the workload and fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Machine fixture of the nodes.
    #[arg(long, default_value = "dgx-a100")]
    fixture: String,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "out/soak/summary.json")]
    out: PathBuf,
    /// A muster-scheduler binary (default: build the debug one with cargo).
    #[arg(long)]
    extender_bin: Option<PathBuf>,
    /// A gang that never had its minimum bound may hold some members bound this many seconds.
    #[arg(long, default_value_t = 30)]
    partial_bound_secs: u64,
    /// A pending gang that fitted the free GPUs may wait this many seconds.
    #[arg(long, default_value_t = 180)]
    stuck_secs: u64,
    /// How long a pending gang must fit the free GPUs in a row to count as placeable.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    fit_sustain: Duration,
    /// Mean time between faults; 0 turns faults off.
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    fault_interval: Duration,
    /// Parent directory of the cluster directory (default $TMPDIR).
    #[arg(long)]
    cluster_parent: Option<PathBuf>,
    /// Keep the cluster directory (component and extender logs) afterwards.
    #[arg(long)]
    keep_cluster: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Fail now rather than after the run when the summary cannot be written.
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!(
            "muster-soak: --out {}: cannot create {}: {e}",
            args.out.display(),
            dir.display()
        );
        return ExitCode::from(2);
    }
    let mut config = SoakConfig::new(args.nodes, args.duration, args.seed);
    config.fixture = args.fixture;
    config.extender_bin = args.extender_bin;
    config.partial_bound = Duration::from_secs(args.partial_bound_secs);
    config.stuck = Duration::from_secs(args.stuck_secs);
    config.fit_sustain = args.fit_sustain;
    config.fault_interval = args.fault_interval;
    config.parent_dir = args.cluster_parent;
    config.keep_dir = args.keep_cluster;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("muster-soak: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = match runtime.block_on(muster_soak::run(config)) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("muster-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", summary.render());
    if let Err(e) = summary.write_json(&args.out) {
        eprintln!("muster-soak: {e:#}");
        return ExitCode::from(2);
    }
    println!("summary written to {}", args.out.display());
    if summary.violation_count() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
