//! `muster-cluster demo`: Muster whole on a local control plane. kwok GPU nodes of mixed shapes,
//! kube-scheduler with the `muster` profile, the extender, a node agent and a device plugin (with
//! a fake kubelet) per node on the fake NVML, Muster's CRDs, then the examples submitted with
//! the real kubectl and viewed with `kubectl muster`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use muster_testcluster::{
    AgentProcess, ClusterSpec, NodeSpec, Proc, SchedulerConfig, TestCluster, scheduler_config,
};

use crate::kubelets::{NodeKubelet, PluginSetup};

/// Nodes of the demo: one of each shape (8 GPUs each), so that the examples fill it.
const NODES: [&str; 3] = ["dgx-a100", "dgx1-v100", "l4-pcie-2s"];
/// Bounds each wait for the cluster to act; generous, as two shared cores may be busy.
const DEADLINE: Duration = Duration::from_secs(180);

#[derive(Parser)]
pub struct Demo {
    /// Run the scene, print, tear down and exit (for tests) instead of waiting for Ctrl-C.
    #[arg(long)]
    once: bool,
    /// Keep the cluster directory (logs) after teardown.
    #[arg(long)]
    keep_dir: bool,
}

/// The workspace's binaries next to this one (`cargo build` puts them in one directory).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating muster-cluster")?;
    let path = exe.parent().map(|d| d.join(name)).unwrap_or_default();
    if !path.is_file() {
        bail!(
            "{} is missing: build it with the demo (`make demo` runs `cargo build --release -p \
             muster-testcluster -p muster-scheduler -p muster-node-agent -p muster-device-plugin \
             -p kubectl-muster -p muster-fake-nvml`)",
            path.display()
        );
    }
    Ok(path)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// build.sh's kwok stages without `pod-complete`: kwok would otherwise complete Job pods at
/// once, while the examples' workers run for a while and hold their GPUs.
fn stages_without_pod_complete(bin_dir: &Path, out: &Path) -> Result<()> {
    let src = muster_testcluster::stages_file(bin_dir);
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let kept: Vec<&str> = text
        .split("\n---")
        .filter(|doc| !doc.contains("name: pod-complete"))
        .collect();
    std::fs::write(out, kept.join("\n---")).with_context(|| format!("writing {}", out.display()))
}

pub async fn run(demo: Demo) -> Result<()> {
    let started = Instant::now();
    let extender_bin = sibling("muster-scheduler")?;
    let agent_bin = sibling("muster-node-agent")?;
    let plugin_bin = sibling("muster-device-plugin")?;
    let kubectl_muster = sibling("kubectl-muster")?;
    let fake_nvml = sibling("libmuster_fake_nvml.so")?;
    let tools = tokio::task::spawn_blocking(muster_testcluster::bin_dir).await??;
    let kubectl = tools.join("kubectl");
    if !kubectl.is_file() {
        bail!(
            "{} is missing: run `bash tests/tools/build.sh`",
            kubectl.display()
        );
    }

    let stages = tempfile::NamedTempFile::new().context("creating the kwok stages file")?;
    stages_without_pod_complete(&tools, stages.path())?;
    let port = muster_testcluster::free_port()?;
    let cluster = TestCluster::start(ClusterSpec {
        scheduler: Some(SchedulerConfig::Yaml(scheduler_config(port, &[]))),
        bin_dir: Some(tools),
        kwok_stages: Some(stages.path().to_path_buf()),
        keep_dir: demo.keep_dir,
        ..ClusterSpec::default()
    })
    .await?;
    cluster
        .install_crds(&repo_root().join("charts/muster/crds"))
        .await?;
    let client = cluster.client();
    // As the chart installs it.
    muster_testcluster::install_gang_gate(&client, &muster_api::SchedulerNames::default()).await?;
    let dir = cluster.dir().to_path_buf();
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();

    let metrics_port = muster_testcluster::free_port()?;
    let extender_args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ];
    let extender_log = dir.join("logs/muster-scheduler.log");
    let _extender = Proc::spawn_env(
        &extender_bin,
        &extender_args,
        &[("RUST_LOG", "info".as_ref())],
        &extender_log,
    )
    .context("starting muster-scheduler")?;
    wait_ready(metrics_port, &extender_log).await?;

    let plugins = PluginSetup {
        device_plugin: &plugin_bin,
        fake_nvml: &fake_nvml,
        kubeconfig: &kubeconfig,
        dir: &dir,
        client: client.clone(),
        deadline: DEADLINE,
    };
    let mut agents: Vec<AgentProcess> = Vec::new();
    let mut kubelets: Vec<NodeKubelet> = Vec::new();
    let mut names = Vec::new();
    for fixture in NODES {
        for node in cluster
            .add_gpu_nodes(&NodeSpec::fixture(fixture, 1))
            .await?
        {
            let log = dir.join(format!("logs/node-agent-{node}.log"));
            agents.push(
                AgentProcess::start(
                    &agent_bin,
                    &fake_nvml,
                    &kubeconfig,
                    &node,
                    fixture,
                    log,
                    &[],
                )
                .context("starting muster-node-agent")?,
            );
            kubelets.push(plugins.start(&node, fixture).await?);
            names.push(node);
        }
    }
    wait_for_gpu_nodes(&client, names.len()).await?;

    // kubectl and kubectl-muster first on PATH, as a user would have them.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).context("creating the demo's bin directory")?;
    for (link, target) in [("kubectl", &kubectl), ("kubectl-muster", &kubectl_muster)] {
        std::os::unix::fs::symlink(target, bin.join(link))
            .with_context(|| format!("linking {link} into {}", bin.display()))?;
    }
    let shell = Shell::new(&bin, &kubeconfig)?;
    println!(
        "Muster demo: Kubernetes control plane, kube-scheduler with the `muster` profile, the \
         Muster extender, and {} kwok GPU nodes ({}), each with a node agent and a device plugin \
         on the fake NVML; ready in {:.1}s.",
        names.len(),
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    crate::scene::play(&shell, &client).await?;
    println!(
        "\nMuster scheduled the gangs {:.1}s after start. To drive the cluster yourself:\n",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  export KUBECONFIG={} PATH={}:$PATH\n",
        kubeconfig.display(),
        bin.display()
    );
    println!("Logs: {}", dir.join("logs").display());
    if demo.once {
        return Ok(());
    }
    println!("Ctrl-C tears it all down.");
    crate::wait_for_signal().await?;
    eprintln!("tearing down");
    drop(kubelets);
    drop(agents);
    Ok(())
}

/// Runs kubectl from the demo's bin directory against the cluster, in the repository root (the
/// examples are named relative to it).
pub struct Shell {
    path: String,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Shell {
    fn new(bin: &Path, kubeconfig: &Path) -> Result<Shell> {
        let path = std::env::var("PATH").unwrap_or_default();
        Ok(Shell {
            path: format!("{}:{path}", bin.display()),
            kubeconfig: kubeconfig.to_path_buf(),
            kubectl: bin.join("kubectl"),
        })
    }

    /// Prints `$ kubectl ARGS` and its output; fails when kubectl does.
    pub fn kubectl(&self, args: &[&str]) -> Result<()> {
        let shown: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        println!("\n$ kubectl {}", shown.join(" "));
        let out = Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .env("NO_COLOR", "1")
            .current_dir(repo_root())
            .output()
            .context("running kubectl")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// `arg` as a POSIX shell would need it, so that a printed command can be pasted.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,".contains(c);
    if arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Waits until the extender's /readyz answers 200.
async fn wait_ready(port: u16, log: &Path) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let req = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            let mut buf = Vec::new();
            if s.write_all(req.as_bytes()).await.is_ok()
                && s.read_to_end(&mut buf).await.is_ok()
                && buf.starts_with(b"HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        if started.elapsed() > DEADLINE {
            bail!("muster-scheduler never became ready; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the node agents published a GpuNode per node.
async fn wait_for_gpu_nodes(client: &Client, n: usize) -> Result<()> {
    let gvk = GroupVersionKind::gvk("muster.dev", "v1alpha1", "GpuNode");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    poll(&format!("{n} GpuNodes from the node agents"), || async {
        Ok(api.list(&ListParams::default()).await?.items.len() >= n)
    })
    .await
}

/// Polls `check` every 250 ms until it holds, failing after [`DEADLINE`].
pub async fn poll<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %format!("{e:#}"), what, "not yet"),
        }
        if started.elapsed() > DEADLINE {
            bail!("gave up waiting for {what} after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pods of Job `job` in `default`.
pub async fn job_pods(client: &Client, job: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    Ok(api.list(&params).await?.items)
}

/// Whether any event in `default` has `reason`.
pub async fn has_event(client: &Client, reason: &str) -> Result<bool> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().fields(&format!("reason={reason}"));
    Ok(!api.list(&params).await?.items.is_empty())
}
