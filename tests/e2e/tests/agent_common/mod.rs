//! Helpers for the node agent's end-to-end tests: building and locating the agent and the fake
//! NVML, running one agent process per node (the fake's NVML state is process-global), and
//! installing Muster's CRDs from the chart.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound for waits ("soon"), not a performance assertion.
pub const DEADLINE: Duration = Duration::from_secs(120);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/debug`, where `cargo build` puts binaries and cdylibs.
fn target_debug() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"))
        .join("debug")
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

/// One agent process for one node; killed on drop and with the test (PDEATHSIG).
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Runs `agent` for `node` against the fake NVML with `fixture` (name or JSON path). Unless
    /// `extra_args` set them, metrics go to an ephemeral port and there is no kubelet
    /// pod-resources socket.
    pub fn start(
        agent: &Path,
        fake_nvml: &Path,
        kubeconfig: &Path,
        node: &str,
        fixture: &str,
        log: PathBuf,
        extra_args: &[&str],
    ) -> AgentProcess {
        let out = std::fs::File::create(&log).expect("agent log file");
        let err = out.try_clone().expect("agent log file");
        let default = |flag: &'static str, value: &'static str| {
            let given = extra_args.contains(&flag);
            if given { vec![] } else { vec![flag, value] }
        };
        let mut cmd = Command::new(agent);
        cmd.arg("--node-name")
            .arg(node)
            .arg("--nvml-lib")
            .arg(fake_nvml)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(default("--metrics-addr", "127.0.0.1:0"))
            .args(default(
                "--pod-resources-socket",
                "/nonexistent/kubelet.sock",
            ))
            .args(extra_args)
            .env("MUSTER_FAKE_NVML_FIXTURE", fixture)
            .env("MUSTER_FAKE_NVML_NODE", node)
            .env_remove("MUSTER_FAKE_NVML_TIME_SCALE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the agent when
        // the test process dies, so no agent outlives a crashed test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning muster-node-agent");
        AgentProcess { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

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
