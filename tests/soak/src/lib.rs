//! `muster-soak`: a long, randomised run of Muster on a real control plane that hunts for
//! violations of its promise, "a gang's minimum binds together or not at all, and no GPU UUID
//! is ever handed to two live pods".
//!
//! [`run`] starts a [`muster_testcluster::TestCluster`] with the `muster` kube-scheduler
//! profile, the extender process and kwok GPU nodes, then runs three loops side by side until
//! the configured duration has passed:
//!
//! - [`workload`]: seeded random gangs (plain pods and Indexed Jobs, 1-32 members, 1/2/4/8
//!   GPUs, three priorities, elastic gangs, members that trickle in), keeping the cluster
//!   loaded at 90-120% of its GPUs and retiring gangs after they ran 10-60 s;
//! - [`faults`]: member deletions, cordons, node deletions and re-additions, unhealthy GPUs
//!   (through `GpuNode`), extender and kube-scheduler restarts;
//! - [`checker`]: the invariants, evaluated on every pod watch event (so the history it sees
//!   is the API server's, in resourceVersion order) and on a 250 ms tick.
//!
//! [`report::Summary`] is the outcome; [`report::Summary::violation_count`] > 0 is a failure.

pub mod checker;
pub mod duration;
pub mod extender;
pub mod faults;
pub mod gpunode;
pub mod report;
pub mod setup;
pub mod state;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use duration::parse_duration;
pub use report::Summary;

/// The namespace every soak object lives in.
pub const NAMESPACE: &str = "soak";

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub nodes: u32,
    pub duration: Duration,
    pub seed: u64,
    /// A built-in machine fixture (`muster_api::machines::builtin`).
    pub fixture: String,
    /// A muster-scheduler binary; default: `cargo build -p muster-scheduler` (debug).
    pub extender_bin: Option<PathBuf>,
    /// (c): a gang that never had its minimum bound may hold some members bound this long.
    pub partial_bound: Duration,
    /// (d): a gang that fitted for `fit_sustain` may be pending this long.
    pub stuck: Duration,
    /// (d): how long a pending gang must have fitted the free capacity to count as placeable.
    pub fit_sustain: Duration,
    /// Mean seconds between faults (0 disables faults).
    pub fault_interval: Duration,
    /// Where cluster directories go (default the system temp dir).
    pub parent_dir: Option<PathBuf>,
    /// Keep the cluster directory (logs) after the run.
    pub keep_dir: bool,
}

impl SoakConfig {
    pub fn new(nodes: u32, duration: Duration, seed: u64) -> SoakConfig {
        SoakConfig {
            nodes,
            duration,
            seed,
            fixture: "dgx-a100".into(),
            extender_bin: None,
            partial_bound: Duration::from_secs(30),
            stuck: Duration::from_secs(180),
            fit_sustain: Duration::from_secs(60),
            fault_interval: Duration::from_secs(8),
            parent_dir: None,
            keep_dir: false,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes >= 2,
            "--nodes must be at least 2 (got {})",
            self.nodes
        );
        anyhow::ensure!(!self.duration.is_zero(), "--duration must be positive");
        muster_api::machines::builtin(&self.fixture)
            .with_context(|| format!("--fixture {:?}", self.fixture))?;
        if let Some(bin) = &self.extender_bin {
            anyhow::ensure!(
                bin.is_file(),
                "--extender-bin {} is not a file",
                bin.display()
            );
        }
        Ok(())
    }
}

/// Runs one soak and returns its summary (violations included; an `Err` means the soak itself
/// could not run, e.g. the cluster did not start).
pub async fn run(config: SoakConfig) -> anyhow::Result<Summary> {
    config.validate()?;
    let env = setup::Env::start(&config).await?;
    let shared = Arc::new(state::Shared::new());
    let deadline = Instant::now() + config.duration;
    tracing::info!(nodes = config.nodes, duration = ?config.duration, seed = config.seed, "soak running");

    let checker = checker::Checker::new(&config, env.stores.clone(), shared.clone());
    let check_task = tokio::spawn(checker.run(env.pod_events(), deadline));
    let monitor_task = tokio::spawn(extender::monitor(
        env.extender.clone(),
        shared.clone(),
        config.duration,
        deadline,
    ));
    let workload = workload::Workload::new(&config, &env, shared.clone());
    let workload_task = tokio::spawn(workload.run(deadline));
    let faults = faults::Injector::new(&config, &env, shared.clone());
    let faults_task = tokio::spawn(faults.run(deadline));

    let workload_stats = workload_task.await.context("workload task")?;
    let fault_stats = faults_task.await.context("fault task")?;
    let check_stats = check_task.await.context("checker task")?;
    let extender_stats = monitor_task.await.context("extender monitor task")?;
    env.extender.lock().await.kill();
    if config.keep_dir {
        env.cluster.keep_dir();
    }
    let summary = report::Summary::build(
        &config,
        env.cluster.dir(),
        workload_stats,
        fault_stats,
        check_stats,
        extender_stats,
        &shared,
    );
    Ok(summary)
}
