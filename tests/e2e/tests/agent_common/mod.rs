//! Helpers for the node agent's end-to-end tests: building and locating the agent and the fake
//! NVML, running one agent process per node (the fake's NVML state is process-global), and
//! installing Muster's CRDs from the chart.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound for waits ("soon"), not a performance assertion.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub use muster_testcluster::repo_root;

/// `target/debug`, where `cargo build` puts binaries and cdylibs.
fn target_debug() -> PathBuf {
    muster_testcluster::target_dir().join("debug")
}

/// Builds (a no-op when fresh) the agent and the fake NVML; returns (agent, fake library).
pub fn build_agent() -> (PathBuf, PathBuf) {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "muster-node-agent",
            "-p",
            "muster-fake-nvml",
        ])
        .current_dir(repo_root())
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build -p muster-node-agent -p muster-fake-nvml failed"
    );
    let dir = target_debug();
    (
        dir.join("muster-node-agent"),
        dir.join("libmuster_fake_nvml.so"),
    )
}

/// Installs every CRD of the chart and waits until each is established.
pub async fn install_crds(cluster: &muster_testcluster::TestCluster) {
    cluster
        .install_crds(&repo_root().join("charts/muster/crds"))
        .await
        .expect("installing the chart's CRDs");
}

pub use muster_testcluster::AgentProcess;

/// Polls `f` until it yields, panicking with `context()` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, context: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gave up waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
