//! `TestCluster`: etcd, kube-apiserver, kube-controller-manager, kwok and (optionally)
//! kube-scheduler on loopback ports in a directory of their own, torn down on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::certs::Pki;
use crate::components::{self, Component, Layout, Ports};
use crate::error::{Context, Error, Result};
use crate::process::{Proc, log_tail};
use crate::scheduler::SchedulerConfig;
use crate::{ports, probe, tools};

/// What to start. `ClusterSpec::default()` is etcd + apiserver + controller-manager + kwok.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Also start kube-scheduler with this configuration.
    pub scheduler: Option<SchedulerConfig>,
    /// Directory holding the binaries; default `$MUSTER_TOOLS_BIN`, else build.sh's cache
    /// (built on first use).
    pub bin_dir: Option<PathBuf>,
    /// A fixed kube-apiserver port (the demo); default a free one.
    pub apiserver_port: Option<u16>,
    /// Where to create the cluster directory; default the system temp dir.
    pub parent_dir: Option<PathBuf>,
    /// Extra flags appended to a component's command line (they win over the harness's).
    pub extra_args: BTreeMap<Component, Vec<String>>,
    /// Keep the cluster directory (logs, kubeconfig, etcd data) after teardown.
    pub keep_dir: bool,
    /// Deadline for each component to answer its health check.
    pub ready_timeout: Duration,
    /// kwok's Stage configuration; default build.sh's `stages/fast.yaml` (the demo drops its
    /// pod-complete stage so that Job pods keep their GPUs).
    pub kwok_stages: Option<PathBuf>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            scheduler: None,
            bin_dir: None,
            apiserver_port: None,
            parent_dir: None,
            extra_args: BTreeMap::new(),
            keep_dir: false,
            // Generous: two shared cores may be busy compiling while a cluster starts.
            ready_timeout: Duration::from_secs(180),
            kwok_stages: None,
        }
    }
}

impl ClusterSpec {
    /// With kube-scheduler running its default profile.
    pub fn with_default_scheduler(mut self) -> Self {
        self.scheduler = Some(SchedulerConfig::Default);
        self
    }

    /// With kube-scheduler running the given KubeSchedulerConfiguration YAML.
    pub fn with_scheduler_config(mut self, yaml: impl Into<String>) -> Self {
        self.scheduler = Some(SchedulerConfig::Yaml(yaml.into()));
        self
    }
}

/// A running control plane. Every method takes `&self`, so tests may share it (e.g. in an
/// `Arc`) and restart components while other tasks use the API.
pub struct TestCluster {
    dir: PathBuf,
    keep_dir: AtomicBool,
    kubeconfig: PathBuf,
    pki: Pki,
    ports: Ports,
    bin_dir: PathBuf,
    stages: PathBuf,
    scheduler_config: PathBuf,
    extra_args: BTreeMap<Component, Vec<String>>,
    ready_timeout: Duration,
    client: kube::Client,
    procs: Mutex<BTreeMap<Component, Proc>>,
}

fn check_binary(component: Component, bin_dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = bin_dir.join(component.binary_name());
    let executable = std::fs::metadata(&path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if executable {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            component,
            path,
            hint: format!(
                "run `bash {}` (needs Go) or point {} at a directory with the binaries",
                tools::build_script().display(),
                tools::TOOLS_BIN_ENV
            ),
        })
    }
}

impl TestCluster {
    /// Starts a cluster and waits until every component answers its health check.
    ///
    /// On failure everything started so far is stopped, and the cluster directory is kept so
    /// the log file named in the error can be read.
    pub async fn start(spec: ClusterSpec) -> Result<TestCluster> {
        let bin_dir = match &spec.bin_dir {
            Some(dir) => dir.clone(),
            None => tokio::task::spawn_blocking(tools::bin_dir)
                .await
                .map_err(|e| Error::ToolsBuild {
                    script: tools::build_script(),
                    detail: format!("build task failed: {e}"),
                })??,
        };
        let mut needed = vec![
            Component::Etcd,
            Component::ApiServer,
            Component::ControllerManager,
            Component::Kwok,
        ];
        if spec.scheduler.is_some() {
            needed.push(Component::Scheduler);
        }
        for component in &needed {
            check_binary(*component, &bin_dir)?;
        }
        let stages = spec
            .kwok_stages
            .clone()
            .unwrap_or_else(|| tools::stages_file(&bin_dir));
        if !stages.is_file() {
            return Err(Error::MissingBinary {
                component: Component::Kwok,
                path: stages,
                hint: "kwok's Stage configuration, written by tests/tools/build.sh".into(),
            });
        }
        if let Some(port) = spec.apiserver_port {
            ports::check_free(Component::ApiServer, port)?;
        }

        let parent = spec.parent_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&parent).context(format!("creating {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("muster-cluster-")
            .tempdir_in(&parent)
            .context(format!(
                "creating a cluster directory in {}",
                parent.display()
            ))?
            .keep();
        std::fs::create_dir_all(dir.join("logs")).context("creating the logs directory")?;
        let pki = Pki::generate(&dir.join("pki"))?;
        let ports = Ports {
            etcd_client: ports::free_port()?,
            etcd_peer: ports::free_port()?,
            apiserver: match spec.apiserver_port {
                Some(p) => p,
                None => ports::free_port()?,
            },
            controller_manager: ports::free_port()?,
            scheduler: ports::free_port()?,
            kwok: ports::free_port()?,
        };
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, ports.apiserver, &pki)?;
        let client = admin_client(&kubeconfig).await?;

        let cluster = TestCluster {
            scheduler_config: dir.join("scheduler-config.yaml"),
            dir,
            keep_dir: AtomicBool::new(spec.keep_dir),
            kubeconfig,
            pki,
            ports,
            bin_dir,
            stages,
            extra_args: spec.extra_args.clone(),
            ready_timeout: spec.ready_timeout,
            client,
            procs: Mutex::new(BTreeMap::new()),
        };
        tracing::info!(dir = %cluster.dir.display(), apiserver = ports.apiserver, "starting test cluster");
        if let Err(e) = cluster.boot(&spec).await {
            // Dropping stops what started; the directory stays for the log named in `e`.
            cluster.keep_dir.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok(cluster)
    }

    async fn boot(&self, spec: &ClusterSpec) -> Result<()> {
        let started = Instant::now();
        self.start_component(Component::Etcd).await?;
        self.start_component(Component::ApiServer).await?;
        tokio::try_join!(
            self.start_component(Component::ControllerManager),
            self.start_component(Component::Kwok),
        )?;
        if let Some(config) = &spec.scheduler {
            self.start_scheduler(config).await?;
        }
        tracing::info!(elapsed = ?started.elapsed(), "test cluster ready");
        Ok(())
    }

    /// A client with cluster-admin rights (a `system:masters` certificate).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The API server's own Prometheus metrics (`GET /metrics`), as text: what tests count
    /// requests by (`apiserver_request_total` carries verb, resource, subresource and dry_run).
    pub async fn api_server_metrics(&self) -> Result<String> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|e| Error::Setup(format!("building GET /metrics: {e}")))?;
        self.client
            .request_text(request)
            .await
            .context("GET /metrics from the API server")
    }

    /// The admin kubeconfig (certificates are referenced as files in the cluster directory).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster directory: `kubeconfig`, `pki/`, `logs/<component>.log`, `etcd/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory the binaries were taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The component's log file (stdout and stderr of every start, appended).
    pub fn log_path(&self, component: Component) -> PathBuf {
        components::log_path(&self.dir, component)
    }

    /// Keep the cluster directory after teardown (for a test that wants to inspect logs).
    pub fn keep_dir(&self) {
        self.keep_dir.store(true, Ordering::Relaxed);
    }

    /// Starts kube-scheduler with `config`, replacing a running one, and waits for /healthz.
    ///
    /// The harness sets `clientConnection.kubeconfig` (the flag is ignored with `--config`) and,
    /// unless the YAML says otherwise, `leaderElection.leaderElect: false` so that a restarted
    /// scheduler schedules at once.
    pub async fn start_scheduler(&self, config: &SchedulerConfig) -> Result<()> {
        let yaml = config.render(&self.kubeconfig)?;
        self.stop_component(Component::Scheduler).await;
        std::fs::write(&self.scheduler_config, yaml)
            .context(format!("writing {}", self.scheduler_config.display()))?;
        self.start_component(Component::Scheduler).await
    }

    /// Starts a stopped component with its previous command line and waits until it is
    /// healthy. A component that is already running is left alone.
    pub async fn start_component(&self, component: Component) -> Result<()> {
        if self.is_running(component) {
            return Ok(());
        }
        if component == Component::Scheduler && !self.scheduler_config.exists() {
            let yaml = SchedulerConfig::Default.render(&self.kubeconfig)?;
            std::fs::write(&self.scheduler_config, yaml)
                .context(format!("writing {}", self.scheduler_config.display()))?;
        }
        let binary = check_binary(component, &self.bin_dir)?;
        let layout = Layout {
            dir: &self.dir,
            pki: &self.pki,
            ports: self.ports,
            kubeconfig: &self.kubeconfig,
            stages: &self.stages,
            scheduler_config: &self.scheduler_config,
        };
        let mut args = components::args(component, &layout);
        args.extend(self.extra_args.get(&component).cloned().unwrap_or_default());
        let log = self.log_path(component);
        let proc = Proc::spawn(component, &binary, &args, &log)?;
        self.lock_procs().insert(component, proc);
        self.wait_ready(component).await
    }

    /// Stops a component: SIGTERM, then SIGKILL after 10 s. No-op when it is not running.
    pub async fn stop_component(&self, component: Component) {
        let proc = self.lock_procs().remove(&component);
        if let Some(mut proc) = proc {
            let stopped = tokio::task::spawn_blocking(move || {
                proc.terminate(Duration::from_secs(10));
            })
            .await;
            if let Err(e) = stopped {
                tracing::warn!(%component, "stopping failed: {e}");
            }
        }
    }

    /// Kills a component with SIGKILL, as a crash would.
    pub fn kill_component(&self, component: Component) {
        let proc = self.lock_procs().remove(&component);
        if let Some(mut proc) = proc {
            proc.kill();
        }
    }

    /// Stops and starts a component with the same command line, waiting until it is healthy.
    pub async fn restart_component(&self, component: Component) -> Result<()> {
        self.stop_component(component).await;
        self.start_component(component).await
    }

    /// Whether the component's process is alive.
    pub fn is_running(&self, component: Component) -> bool {
        self.lock_procs()
            .get_mut(&component)
            .is_some_and(|p| p.exited().is_none())
    }

    /// The component's process id, while it runs.
    pub fn pid(&self, component: Component) -> Option<u32> {
        self.lock_procs().get(&component).map(Proc::pid)
    }

    fn lock_procs(&self) -> std::sync::MutexGuard<'_, BTreeMap<Component, Proc>> {
        // A panic elsewhere while holding the lock leaves the map itself consistent.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn probe(&self, component: Component) -> std::result::Result<(), String> {
        let p = self.ports;
        let body = match component {
            Component::Etcd => probe::http_get(p.etcd_client, "/health").await?,
            Component::Kwok => probe::http_get(p.kwok, "/healthz").await?,
            Component::ControllerManager => {
                probe::https_get(p.controller_manager, "/healthz", &self.pki.ca_der).await?
            }
            Component::Scheduler => {
                probe::https_get(p.scheduler, "/healthz", &self.pki.ca_der).await?
            }
            Component::ApiServer => {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                tokio::time::timeout(Duration::from_secs(5), self.client.request_text(request))
                    .await
                    .map_err(|_| "GET /readyz: no answer within 5s".to_string())?
                    .map_err(|e| format!("GET /readyz: {e}"))?
            }
        };
        let healthy = match component {
            Component::Etcd => body.contains("\"health\":\"true\""),
            _ => body.trim() == "ok",
        };
        if healthy {
            Ok(())
        } else {
            Err(format!("unhealthy answer: {}", body.trim()))
        }
    }

    async fn wait_ready(&self, component: Component) -> Result<()> {
        let started = Instant::now();
        let log = self.log_path(component);
        let not_ready = |reason: String| Error::NotReady {
            component,
            reason,
            tail: log_tail(&log, 25),
            log: log.clone(),
        };
        loop {
            let exited = self.lock_procs().get_mut(&component).map(Proc::exited);
            match exited {
                None => return Err(not_ready("it was stopped while starting".into())),
                Some(Some(status)) => {
                    return Err(not_ready(format!("the process exited ({status})")));
                }
                Some(None) => {}
            }
            let last_error = match self.probe(component).await {
                Ok(()) => {
                    tracing::debug!(%component, elapsed = ?started.elapsed(), "ready");
                    return Ok(());
                }
                Err(e) => e,
            };
            if started.elapsed() > self.ready_timeout {
                return Err(not_ready(format!(
                    "no healthy answer within {}s (last probe: {last_error})",
                    self.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut procs = std::mem::take(&mut *self.lock_procs());
        // Dependents first, storage last.
        for component in Component::ALL.iter().rev() {
            if let Some(mut proc) = procs.remove(component) {
                proc.kill();
            }
        }
        let p = self.ports;
        ports::release(&[
            p.etcd_client,
            p.etcd_peer,
            p.apiserver,
            p.controller_manager,
            p.scheduler,
            p.kwok,
        ]);
        if self.keep_dir.load(Ordering::Relaxed) || std::thread::panicking() {
            eprintln!(
                "muster-testcluster: cluster directory kept: {}",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "removing the cluster directory: {e}");
        }
    }
}

fn write_kubeconfig(path: &Path, port: u16, pki: &Pki) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: muster
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: muster-admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: muster
  context:
    cluster: muster
    user: muster-admin
current-context: muster
",
        ca = pki.ca_cert.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    );
    std::fs::write(path, text).context(format!("writing {}", path.display()))
}

async fn admin_client(kubeconfig: &Path) -> Result<kube::Client> {
    let broken = |detail: String| Error::Io {
        context: format!("loading {}", kubeconfig.display()),
        source: std::io::Error::other(detail),
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| broken(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| broken(e.to_string()))?;
    kube::Client::try_from(config).context("building the admin client")
}
