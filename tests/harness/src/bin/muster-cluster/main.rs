//! `muster-cluster up`: a real control plane with fake GPU nodes for manual testing.
//! Prints `export KUBECONFIG=...`, waits for Ctrl-C (or SIGTERM), then tears down.
//! With `--measure` it prints how long the cluster and the nodes took to become Ready and exits.
//! `muster-cluster demo`: Muster whole on such a cluster, the examples submitted (see `demo.rs`).

mod demo;
mod kubelets;
mod scene;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use muster_testcluster::{ClusterSpec, NodeSpec, SchedulerConfig, TestCluster};

#[derive(Parser)]
#[command(
    version,
    about = "A real Kubernetes control plane on loopback with fake GPU nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a cluster and keep it running until interrupted.
    Up(Up),
    /// Muster whole: scheduler, node agents, device plugins, CRDs, the examples submitted.
    Demo(demo::Demo),
}

#[derive(Parser)]
struct Up {
    /// Number of fake GPU nodes.
    #[arg(long, default_value_t = 16)]
    nodes: u32,
    /// Machine fixture of the nodes (dgx-a100, dgx-h100, dgx1-v100, l4-pcie-2s, gb200-nvl72, ...).
    #[arg(long, default_value = "dgx-a100")]
    fixture: String,
    /// GPUs per node (default: the fixture's count).
    #[arg(long)]
    gpus: Option<u32>,
    /// Nodes per rack (sets `muster.dev/rack` to rack-<i / n>).
    #[arg(long)]
    nodes_per_rack: Option<u32>,
    /// Also run kube-scheduler (default profile, or --scheduler-config).
    #[arg(long)]
    scheduler: bool,
    /// KubeSchedulerConfiguration file for kube-scheduler (implies --scheduler).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Fixed kube-apiserver port (default: a free one).
    #[arg(long)]
    apiserver_port: Option<u16>,
    /// Parent directory for the cluster directory (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the cluster directory after teardown.
    #[arg(long)]
    keep_dir: bool,
    /// Print start-up timings and exit instead of waiting for Ctrl-C.
    #[arg(long)]
    measure: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "muster_testcluster=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up(up) => run_up(up).await,
        Command::Demo(d) => demo::run(d).await,
    }
}

async fn run_up(up: Up) -> Result<()> {
    let scheduler = match &up.scheduler_config {
        Some(path) => Some(SchedulerConfig::Yaml(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        )),
        None if up.scheduler => Some(SchedulerConfig::Default),
        None => None,
    };
    let spec = ClusterSpec {
        scheduler,
        apiserver_port: up.apiserver_port,
        parent_dir: up.dir.clone(),
        keep_dir: up.keep_dir,
        ..ClusterSpec::default()
    };
    let nodes = NodeSpec {
        gpus: up.gpus,
        nodes_per_rack: up.nodes_per_rack,
        ..NodeSpec::fixture(&up.fixture, up.nodes)
    };
    // Validate the fixture before spending seconds on a control plane.
    nodes.nodes().context("node spec")?;

    let binaries = Instant::now();
    // Resolving (and on a fresh machine building) the binaries is not part of start-up time.
    let bin_dir = tokio::task::spawn_blocking(muster_testcluster::bin_dir).await??;
    let binaries = binaries.elapsed();
    let started = Instant::now();
    let cluster = TestCluster::start(ClusterSpec {
        bin_dir: Some(bin_dir),
        ..spec
    })
    .await?;
    let control_plane = started.elapsed();
    cluster.add_gpu_nodes(&nodes).await?;
    let total = started.elapsed();

    if up.measure {
        println!(
            "binaries ready:            {:>8.2}s",
            binaries.as_secs_f64()
        );
        println!(
            "control plane ready:       {:>8.2}s",
            control_plane.as_secs_f64()
        );
        println!(
            "{} nodes created + Ready: {:>8.2}s",
            up.nodes,
            (total - control_plane).as_secs_f64()
        );
        println!("cluster with nodes Ready:  {:>8.2}s", total.as_secs_f64());
        return Ok(());
    }
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    eprintln!(
        "cluster ready in {:.1}s: {} {} nodes; logs in {}; Ctrl-C to stop",
        total.as_secs_f64(),
        up.nodes,
        up.fixture,
        cluster.dir().join("logs").display()
    );
    wait_for_signal().await?;
    eprintln!("tearing down");
    drop(cluster);
    Ok(())
}

pub(crate) async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
