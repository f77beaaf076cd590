//! The schedulers under test: how each is started on a fresh cluster, and how a pod and its
//! gang are dressed for it. Everything else about the pods is identical (`workload.rs`).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use muster_testcluster::{ClusterSpec, Component, NodeSpec, TestCluster};

/// scheduler-plugins release built by `tests/tools/build-bench.sh` (the newest the Go module
/// proxy serves; v0.35+ answer 403).
pub const SCHEDULER_PLUGINS_VERSION: &str = "v0.34.7";
/// kube-scheduler profile name of the coscheduling scheduler.
const COSCHEDULING: &str = "coscheduling";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Competitor {
    /// kube-scheduler v1.37 default profile; pods carry no gang.
    Plain,
    /// kube-scheduler v1.37 with `GenericWorkload` on: `scheduling.k8s.io/v1beta1` PodGroups.
    Native,
    /// scheduler-plugins' Coscheduling plugin in a second scheduler binary.
    Coscheduling,
    /// kube-scheduler's `muster` profile calling Muster's extender.
    Muster,
}

impl Competitor {
    pub const ALL: [Competitor; 4] = [
        Competitor::Plain,
        Competitor::Native,
        Competitor::Coscheduling,
        Competitor::Muster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Competitor::Plain => "plain",
            Competitor::Native => "native",
            Competitor::Coscheduling => "coscheduling",
            Competitor::Muster => "muster",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Competitor::Plain => "kube-scheduler v1.37.2, default profile, no gangs",
            Competitor::Native => {
                "kube-scheduler v1.37.2, GenericWorkload gate (GangScheduling plugin), PodGroup scheduling.k8s.io/v1beta1"
            }
            Competitor::Coscheduling => {
                "scheduler-plugins v0.34.7 kube-scheduler, Coscheduling plugin, PodGroup scheduling.x-k8s.io/v1alpha1"
            }
            Competitor::Muster => {
                "kube-scheduler v1.37.2 `muster` profile + muster-scheduler extender"
            }
        }
    }

    /// `spec.schedulerName` of this competitor's pods.
    pub fn scheduler_name(self) -> &'static str {
        match self {
            Competitor::Plain | Competitor::Native => "default-scheduler",
            Competitor::Coscheduling => COSCHEDULING,
            Competitor::Muster => "muster",
        }
    }
}

impl FromStr for Competitor {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Competitor::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown scheduler {s:?}; expected plain, native, coscheduling or muster")
            })
    }
}

impl clap::ValueEnum for Competitor {
    fn value_variants<'a>() -> &'a [Self] {
        &Competitor::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

pub use muster_testcluster::repo_root;

/// Where the binaries of the competitors come from, resolved once per benchmark.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub extender: PathBuf,
    /// scheduler-plugins' kube-scheduler, when built.
    pub coscheduling: Option<PathBuf>,
    pub coscheduling_crd: Option<PathBuf>,
}

impl Binaries {
    /// Builds muster-scheduler (release unless `debug`; `MUSTER_BENCH_EXTENDER` names a
    /// binary to run instead, e.g. an older build to compare side by side) and, when
    /// `want_coscheduling`, runs `tests/tools/build-bench.sh` (which builds scheduler-plugins
    /// on first use, needing Go). A failing coscheduling build is returned as the reason in
    /// `Err` of the second value.
    pub fn prepare(
        debug: bool,
        want_coscheduling: bool,
        build_missing: bool,
    ) -> Result<(Binaries, Option<String>)> {
        let extender = match std::env::var_os("MUSTER_BENCH_EXTENDER") {
            Some(path) => PathBuf::from(path),
            None => build_extender(debug)?,
        };
        let mut bins = Binaries {
            extender,
            coscheduling: None,
            coscheduling_crd: None,
        };
        let mut skipped = None;
        if want_coscheduling {
            match build_bench_tools(build_missing) {
                Ok(dir) => {
                    bins.coscheduling = Some(dir.join("kube-scheduler-plugins"));
                    bins.coscheduling_crd = Some(dir.join("../crds/coscheduling-podgroup.yaml"));
                }
                Err(e) => skipped = Some(format!("{e:#}")),
            }
        }
        Ok((bins, skipped))
    }
}

/// `cargo build -p muster-scheduler`: the binary's path.
fn build_extender(debug: bool) -> Result<PathBuf> {
    Ok(muster_testcluster::build_workspace_binary(
        "muster-scheduler",
        "muster-scheduler",
        !debug,
    )?)
}

/// `bash tests/tools/build-bench.sh`: the bin directory it prints (last stdout line).
fn build_bench_tools(build_missing: bool) -> Result<PathBuf> {
    let script = repo_root().join("tests/tools/build-bench.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if !build_missing {
        cmd.arg("--check");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "scheduler-plugins' scheduler is not {} (`bash {}`{}: {})",
            if build_missing { "available" } else { "built" },
            script.display(),
            if build_missing { "" } else { " --check" },
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = text
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .with_context(|| format!("{} printed no directory", script.display()))?;
    Ok(PathBuf::from(dir))
}

/// A child process killed on drop and with this process (PR_SET_PDEATHSIG).
pub struct ChildProc {
    child: Child,
    pub log: PathBuf,
}

impl ChildProc {
    fn spawn(bin: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Result<ChildProc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone().context("duplicating the log handle")?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(ChildProc {
            child,
            log: log.to_path_buf(),
        })
    }

    /// (peak, current) resident memory in bytes, from /proc (`VmHWM`, `VmRSS`).
    pub fn memory(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        Some((kib("VmHWM:")?, kib("VmRSS:")?))
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "process exited ({status}); log {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh cluster running one competitor, with its nodes added.
pub struct Running {
    pub cluster: TestCluster,
    /// Muster's extender or scheduler-plugins' scheduler.
    pub side: Option<ChildProc>,
    /// Muster's `/metrics` and `/readyz` (`--metrics-listen`; the verbs are on `--listen`).
    pub extender_metrics_port: Option<u16>,
    pub nodes_ready_seconds: f64,
    /// Muster's extender: resident MiB once ready on the nodes, before any pod.
    pub rss_at_start_mib: Option<u64>,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}

fn client_connection(qps: u32) -> String {
    format!("clientConnection:\n  qps: {qps}\n  burst: {}\n", qps * 2)
}

/// KubeSchedulerConfiguration with the `muster` profile (as in tests/e2e/tests/muster/mod.rs).
fn muster_config(port: u16, qps: u32) -> String {
    format!(
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
{}podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 2
profiles:
- schedulerName: muster
  percentageOfNodesToScore: 100
extenders:
- urlPrefix: "http://127.0.0.1:{port}"
  filterVerb: filter
  prioritizeVerb: prioritize
  preemptVerb: preempt
  bindVerb: bind
  weight: 1
  nodeCacheCapable: true
  httpTimeout: 120s
"#,
        client_connection(qps)
    )
}

fn default_config(qps: u32) -> String {
    format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{}",
        client_connection(qps)
    )
}

/// scheduler-plugins' manifests/coscheduling/scheduler-config.yaml, profile renamed.
fn coscheduling_config(kubeconfig: &Path, qps: u32) -> String {
    format!(
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
clientConnection:
  kubeconfig: "{}"
  qps: {qps}
  burst: {}
profiles:
- schedulerName: {COSCHEDULING}
  plugins:
    multiPoint:
      enabled:
      - name: Coscheduling
    queueSort:
      enabled:
      - name: Coscheduling
      disabled:
      - name: "*"
  pluginConfig:
  - name: Coscheduling
    args:
      permitWaitingTimeSeconds: 10
"#,
        kubeconfig.display(),
        qps * 2
    )
}

/// Options shared by every start.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub nodes: u32,
    pub qps: u32,
    pub keep: bool,
}

impl Running {
    /// A fresh cluster for `competitor` with `opts.nodes` 8-GPU kwok nodes.
    pub async fn start(
        competitor: Competitor,
        bins: &Binaries,
        opts: &StartOptions,
    ) -> Result<Running> {
        let mut spec = ClusterSpec {
            keep_dir: opts.keep,
            extra_args: BTreeMap::new(),
            ..ClusterSpec::default()
        };
        let mut extender_port = None;
        let mut extender_metrics_port = None;
        spec = match competitor {
            Competitor::Plain => spec.with_scheduler_config(default_config(opts.qps)),
            Competitor::Native => {
                spec.extra_args.insert(
                    Component::ApiServer,
                    vec![
                        "--feature-gates=GenericWorkload=true".into(),
                        "--runtime-config=scheduling.k8s.io/v1beta1=true".into(),
                    ],
                );
                spec.extra_args.insert(
                    Component::Scheduler,
                    vec!["--feature-gates=GenericWorkload=true".into()],
                );
                spec.with_scheduler_config(default_config(opts.qps))
            }
            // The harness's kube-scheduler is not started: pods name the second scheduler.
            Competitor::Coscheduling => spec,
            Competitor::Muster => {
                let port = free_port()?;
                extender_port = Some(port);
                // MUSTER_BENCH_KSCHED_ARGS (space-separated, e.g. `--v=2`): extra kube-scheduler
                // flags, to see its attempts when looking into a run.
                if let Ok(extra) = std::env::var("MUSTER_BENCH_KSCHED_ARGS") {
                    let args = extra.split_whitespace().map(str::to_string).collect();
                    spec.extra_args.insert(Component::Scheduler, args);
                }
                spec.with_scheduler_config(muster_config(port, opts.qps))
            }
        };
        let cluster = TestCluster::start(spec)
            .await
            .with_context(|| format!("starting a cluster for {}", competitor.name()))?;
        let started = Instant::now();
        cluster
            .add_gpu_nodes(&NodeSpec::fixture("dgx-a100", opts.nodes))
            .await
            .context("adding kwok GPU nodes")?;
        let nodes_ready_seconds = started.elapsed().as_secs_f64();
        let side = match competitor {
            Competitor::Plain | Competitor::Native => None,
            Competitor::Muster => {
                cluster
                    .install_crds(&repo_root().join("charts/muster/crds"))
                    .await
                    .context("installing Muster's CRDs")?;
                // The chart's gang gate, unless MUSTER_BENCH_GATE=false (to measure without).
                if crate::gang_forms::gang_gate_enabled() {
                    muster_testcluster::install_gang_gate(
                        &cluster.client(),
                        &muster_api::SchedulerNames::default(),
                    )
                    .await
                    .context("installing Muster's gang gate")?;
                }
                let port = extender_port.context("extender port")?;
                let metrics = free_port()?;
                extender_metrics_port = Some(metrics);
                let kc = cluster.kubeconfig_path().display().to_string();
                let rust_log =
                    std::env::var("MUSTER_BENCH_LOG").unwrap_or_else(|_| "info".to_string());
                let mut proc = ChildProc::spawn(
                    &bins.extender,
                    &[
                        "--listen".into(),
                        format!("127.0.0.1:{port}"),
                        "--metrics-listen".into(),
                        format!("127.0.0.1:{metrics}"),
                        "--kubeconfig".into(),
                        kc,
                    ],
                    // MUSTER_BENCH_LOG (e.g. `muster_scheduler=debug`) for a closer look with
                    // --keep; the default keeps the log small.
                    &[("RUST_LOG", rust_log.as_str())],
                    &cluster.dir().join("muster-scheduler.log"),
                )?;
                wait_http_ok(&mut proc, metrics, "/readyz").await?;
                Some(proc)
            }
            Competitor::Coscheduling => {
                let (Some(bin), Some(crd)) = (&bins.coscheduling, &bins.coscheduling_crd) else {
                    bail!("scheduler-plugins' scheduler is not built");
                };
                let crd_dir = crd.parent().context("CRD directory")?;
                cluster
                    .install_crds(crd_dir)
                    .await
                    .context("installing scheduler-plugins' PodGroup CRD")?;
                let config = cluster.dir().join("coscheduling-config.yaml");
                std::fs::write(
                    &config,
                    coscheduling_config(cluster.kubeconfig_path(), opts.qps),
                )
                .with_context(|| format!("writing {}", config.display()))?;
                let log = cluster.dir().join("logs/kube-scheduler-plugins.log");
                let mut proc = ChildProc::spawn(
                    bin,
                    &[
                        format!("--config={}", config.display()),
                        "--bind-address=127.0.0.1".into(),
                        format!("--secure-port={}", free_port()?),
                    ],
                    &[],
                    &log,
                )?;
                wait_log_line(&mut proc, "Starting Kubernetes Scheduler").await?;
                // Its informers sync right after that line; give them a moment.
                tokio::time::sleep(Duration::from_secs(2)).await;
                proc.check_alive()?;
                Some(proc)
            }
        };
        // Muster's memory with the nodes cached and no pods yet (readyz: caches synced).
        let rss_at_start_mib = match competitor {
            Competitor::Muster => side
                .as_ref()
                .and_then(|p| p.memory())
                .map(|(_, rss)| rss >> 20),
            _ => None,
        };
        Ok(Running {
            cluster,
            side,
            extender_metrics_port,
            nodes_ready_seconds,
            rss_at_start_mib,
        })
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    /// Fails when the side process died (a crashed competitor must not look slow instead).
    pub fn check_alive(&mut self) -> Result<()> {
        match self.side.as_mut() {
            Some(p) => p.check_alive(),
            None => Ok(()),
        }
    }

    /// The extender's /metrics text (Muster only).
    pub async fn extender_metrics(&self) -> Option<String> {
        let port = self.extender_metrics_port?;
        http_get(port, "/metrics").await.ok().map(|(_, b)| b)
    }
}

async fn wait_http_ok(proc: &mut ChildProc, port: u16, path: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        proc.check_alive()?;
        if let Ok((200, _)) = http_get(port, path).await {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "no 200 from 127.0.0.1:{port}{path} within 120 s; log {}:\n{}",
                proc.log.display(),
                log_tail(&proc.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_log_line(proc: &mut ChildProc, needle: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        proc.check_alive()?;
        if std::fs::read_to_string(&proc.log).is_ok_and(|t| t.contains(needle)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{:?} did not appear in {} within 120 s:\n{}",
                needle,
                proc.log.display(),
                log_tail(&proc.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Minimal HTTP/1.1 GET on loopback: (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
