//! Running Muster's scheduler against a test cluster: CRDs, the extender process, the
//! kube-scheduler profile that calls it, and gang pods.

#![allow(dead_code)]

pub mod queues;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(120);

/// Extender flags: lead exactly while this host's kube-scheduler holds Lease `kube-sched`
/// in `default` (the chart's follow mode; tests edit the Lease by hand).
pub const FOLLOW_KUBE_SCHED: &[&str] = &[
    "--leader-elect",
    "true",
    "--lease-namespace",
    "default",
    "--follow-lease",
    "kube-sched",
];

pub use muster_testcluster::repo_root;

/// Builds (if needed) and returns a workspace binary.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    muster_testcluster::build_workspace_binary(package, bin, false)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The extender process; killed on drop (and with the test process, via PDEATHSIG).
pub struct Extender {
    child: Option<Child>,
    /// The verbs (`--listen`).
    pub port: u16,
    /// `/metrics`, `/healthz`, `/readyz` (`--metrics-listen`).
    pub metrics_port: u16,
    kubeconfig: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    log_filter: &'static str,
}

impl Extender {
    pub fn start(cluster: &TestCluster, port: u16, extra: &[&str]) -> Extender {
        let mut e = Extender {
            child: None,
            port,
            metrics_port: muster_testcluster_port(),
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
            log: cluster.dir().join("muster-scheduler.log"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            log_filter: "info,muster_scheduler=debug",
        };
        e.spawn();
        e
    }

    /// The release build with its default settings (benchmarks); the caller builds it first.
    pub fn start_release(cluster: &TestCluster, port: u16) -> Extender {
        let mut e = Extender {
            child: None,
            port,
            metrics_port: muster_testcluster_port(),
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
            log: cluster.dir().join("muster-scheduler.log"),
            args: Vec::new(),
            log_filter: "info",
        };
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target"));
        e.spawn_binary(target.join("release/muster-scheduler"));
        e
    }

    fn spawn(&mut self) {
        // An older build to compare against (e.g. to show a new test failing before a fix).
        let bin = std::env::var_os("MUSTER_E2E_EXTENDER")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_binary("muster-scheduler", "muster-scheduler"));
        self.spawn_binary(bin);
    }

    fn spawn_binary(&mut self, bin: PathBuf) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let err = log.try_clone().expect("log");
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.args)
            .env("RUST_LOG", self.log_filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("starting muster-scheduler"));
    }

    /// Waits until /readyz answers ok.
    pub async fn ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(body) = http(self.metrics_port, "GET", "/readyz", "").await
                && body.0 == 200
            {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "extender never became ready; log: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.ready().await;
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Whether the extender's whole log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle))
    }

    /// A metric's value from /metrics (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let Ok((_, body)) = http(self.metrics_port, "GET", "/metrics", "").await else {
            return 0.0;
        };
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Extender {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Minimal HTTP/1.1 client for loopback calls: (status, body).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(port, &req).await
}

/// Sends `request` (a whole HTTP/1.x request) to 127.0.0.1:port and reads the answer until the
/// server closes: (status, body). The body is taken as is (no chunked decoding).
pub async fn exchange(port: u16, request: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(request.as_bytes()).await?;
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

/// KubeSchedulerConfiguration with one profile, `muster`, calling the extender.
pub fn scheduler_config(port: u16) -> String {
    scheduler_config_named(port, &[])
}

/// [`scheduler_config`] with a profile for each of `extra_names` besides `muster` (as the
/// chart's `scheduler.additionalSchedulerNames` renders it).
pub fn scheduler_config_named(port: u16, extra_names: &[&str]) -> String {
    muster_testcluster::scheduler_config(port, extra_names)
}

/// Installs Muster's CRDs from the chart and waits until they are served.
pub async fn install_crds(cluster: &TestCluster) {
    cluster
        .install_crds(&repo_root().join("charts/muster/crds"))
        .await
        .expect("installing Muster's CRDs");
}

/// A cluster with Muster's CRDs, `nodes`, the extender and kube-scheduler's `muster` profile.
pub async fn muster_cluster(nodes: &[NodeSpec], extender_args: &[&str]) -> (TestCluster, Extender) {
    muster_cluster_from(ClusterSpec::default(), nodes, extender_args).await
}

/// [`muster_cluster`] from a spec of the caller's (e.g. extra kwok flags).
pub async fn muster_cluster_from(
    spec: ClusterSpec,
    nodes: &[NodeSpec],
    extender_args: &[&str],
) -> (TestCluster, Extender) {
    muster_cluster_named(spec, nodes, extender_args, &[]).await
}

/// [`muster_cluster_from`] where pods of `extra_names` are Muster's too (a kube-scheduler
/// profile and an extender `--scheduler-name` each).
pub async fn muster_cluster_named(
    spec: ClusterSpec,
    nodes: &[NodeSpec],
    extender_args: &[&str],
    extra_names: &[&str],
) -> (TestCluster, Extender) {
    let port = muster_testcluster_port();
    let cluster =
        TestCluster::start(spec.with_scheduler_config(scheduler_config_named(port, extra_names)))
            .await
            .expect("cluster");
    install_crds(&cluster).await;
    // As the chart installs it: gang members wait behind Muster's gate until planned.
    let scheduler_names = muster_api::SchedulerNames::new(
        std::iter::once("muster").chain(extra_names.iter().copied()),
    )
    .expect("scheduler names");
    muster_testcluster::install_gang_gate(&cluster.client(), &scheduler_names)
        .await
        .expect("gang gate");
    for spec in nodes {
        cluster.add_gpu_nodes(spec).await.expect("nodes");
    }
    let names: Vec<String> = if extra_names.is_empty() {
        Vec::new()
    } else {
        std::iter::once(&"muster")
            .chain(extra_names)
            .map(|n| format!("--scheduler-name={n}"))
            .collect()
    };
    let args: Vec<&str> = extender_args
        .iter()
        .copied()
        .chain(names.iter().map(String::as_str))
        .collect();
    let ext = Extender::start(&cluster, port, &args);
    ext.ready().await;
    (cluster, ext)
}

fn muster_testcluster_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr").port()
}

/// A gang member pod: `schedulerName: muster`, `gpus` GPUs, gang by annotation or label.
pub fn member(name: &str, gang: Gang<'_>, gpus: u32, priority_class: Option<&str>) -> Pod {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {}, "annotations": {}},
        "spec": {
            "schedulerName": "muster",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "registry.example/train:1",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}, "requests": {"cpu": "1", "memory": "1Gi"}}}]
        }
    });
    match gang {
        Gang::Annotation(g, min) => {
            pod["metadata"]["annotations"]["muster.dev/gang"] = json!(g);
            pod["metadata"]["annotations"]["muster.dev/min-available"] = json!(min);
        }
        Gang::PodGroup(g) => pod["metadata"]["labels"]["muster.dev/pod-group"] = json!(g),
        Gang::None => {}
    }
    if let Some(pc) = priority_class {
        pod["spec"]["priorityClassName"] = json!(pc);
    }
    serde_json::from_value(pod).expect("pod json")
}

#[derive(Clone, Copy)]
pub enum Gang<'a> {
    Annotation(&'a str, &'a str),
    PodGroup(&'a str),
    None,
}

pub async fn create_pods(client: &Client, ns: &str, pods: Vec<Pod>) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in pods {
        api.create(&PostParams::default(), &p)
            .await
            .expect("create pod");
    }
}

/// Pods of `ns` whose name starts with `prefix`.
pub async fn pods_with_prefix(client: &Client, ns: &str, prefix: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// Waits until `check` holds for the pods with `prefix`.
pub async fn wait_pods(
    client: &Client,
    ns: &str,
    prefix: &str,
    what: &str,
    check: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    let started = Instant::now();
    loop {
        let pods = pods_with_prefix(client, ns, prefix).await;
        if check(&pods) {
            return pods;
        }
        let state: Vec<(Option<String>, Option<String>)> = pods
            .iter()
            .map(|p| (p.metadata.name.clone(), node_of(p)))
            .collect();
        assert!(
            started.elapsed() < DEADLINE,
            "gave up waiting for {what}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn bound_count(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| node_of(p).is_some()).count()
}

pub async fn namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

pub fn gang(prefix: &str, n: u32, gpus: u32, g: Gang<'_>, pc: Option<&str>) -> Vec<Pod> {
    (0..n)
        .map(|i| member(&format!("{prefix}-{i}"), g, gpus, pc))
        .collect()
}

/// Pods still pending after `quiet` of cluster time: nothing happened to them.
pub async fn stays_unbound(client: &Client, ns: &str, prefix: &str, quiet: Duration) {
    tokio::time::sleep(quiet).await;
    let pods = pods_with_prefix(client, ns, prefix).await;
    assert_eq!(bound_count(&pods), 0, "{prefix}: some members were bound");
}

pub fn gpu_ids(p: &Pod) -> Vec<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("muster.dev/gpu-ids"))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// A PersistentVolume and a claim already bound to it (no provisioner needed).
pub async fn create_bound_claim(client: &Client, ns: &str, name: &str) {
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let pv = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-{name}")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual", "hostPath": {"path": "/tmp/muster-e2e"},
            "claimRef": {"namespace": ns, "name": name}}
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    let pvc = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "volumeName": format!("{ns}-{name}"), "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
}

pub async fn wait_for_condition(api: &Api<Pod>, name: &str, want: &str) {
    let started = std::time::Instant::now();
    loop {
        let p = api.get(name).await.unwrap();
        let conds = p.status.and_then(|s| s.conditions).unwrap_or_default();
        if conds.iter().any(|c| {
            c.type_ == "PodScheduled" && c.message.as_deref().is_some_and(|m| m.contains(want))
        }) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name}: no PodScheduled reason containing {want:?}: {conds:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// This machine's hostname: kube-scheduler's leader identity is `<hostname>_<uuid>`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}

/// A Lease named `name` held by `holder` for an hour (kube-scheduler's, for follow mode).
pub fn lease_held_by(name: &str, holder: &str) -> k8s_openapi::api::coordination::v1::Lease {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(3600),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    }
}

/// A member whose claim does not exist yet: Muster plans it, kube-scheduler cannot place it,
/// so the rest of its gang waits at the bind barrier until the claim appears.
pub fn held_by_claim(mut pod: Pod, claim: &str) -> Pod {
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = Some(vec![
            serde_json::from_value(
                json!({"name": "data", "persistentVolumeClaim": {"claimName": claim}}),
            )
            .expect("volume json"),
        ]);
    }
    pod
}

/// Waits until `n` bind calls wait at the extender's barrier.
pub async fn wait_at_barrier(ext: &Extender, n: f64) {
    let started = Instant::now();
    while ext.metric("muster_bind_barrier_waiting_pods").await < n {
        assert!(
            started.elapsed() < DEADLINE,
            "members never reached the barrier: {}",
            ext.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gang of four `gpus`-GPU members (annotation gang `prefix`, minimum 4) whose last member
/// waits for claim `hold`: returns once the other three wait at the barrier.
pub async fn gang_at_barrier(client: &Client, ext: &Extender, ns: &str, prefix: &str, gpus: u32) {
    let mut pods = gang(prefix, 4, gpus, Gang::Annotation(prefix, "4"), None);
    pods[3] = held_by_claim(pods[3].clone(), "hold");
    create_pods(client, ns, pods).await;
    wait_at_barrier(ext, 3.0).await;
}

/// `kubectl muster ARGS` against `cluster` in namespace `ns`, told Muster's scheduler names
/// besides `muster`; its stdout (it must succeed).
#[allow(dead_code)]
pub fn kubectl_muster(
    cluster: &TestCluster,
    ns: &str,
    extra_names: &[&str],
    args: &[&str],
) -> String {
    let bin = workspace_binary("kubectl-muster", "kubectl-muster");
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["--no-color", "-n", ns]);
    for name in std::iter::once(&"muster").chain(extra_names) {
        cmd.args(["--scheduler-name", name]);
    }
    let out = cmd.args(args).output().expect("running kubectl-muster");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl muster {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until the Muster PodGroup `name` satisfies `done`.
pub async fn wait_podgroup(
    api: &Api<muster_crds::PodGroup>,
    name: &str,
    done: impl Fn(&muster_crds::PodGroup) -> bool,
) -> muster_crds::PodGroup {
    let started = std::time::Instant::now();
    loop {
        let pg = api.get(name).await.unwrap();
        if done(&pg) {
            return pg;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "PodGroup {name}: {:?}",
            pg.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
