//! One simulated GPU node's Muster processes, as the chart's DaemonSet runs them: the device
//! plugin (registered with a fake kubelet device manager) and the node agent (reading a fake
//! kubelet pod-resources API), both on the fake NVML with the node's fixture, each serving
//! /metrics on a fixed loopback port so a restarted process is the same scrape target.

use crate::agent_common::AgentProcess;
use crate::common::host::{HostProcess, free_port};
use crate::pod_resources;
use muster_api::machines::builtin;
use muster_device_plugin::fake_kubelet::FakeKubelet;
use muster_node_agent::podresources::proto::PodResources;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct NodeStack {
    pub name: String,
    pub agent_port: u16,
    pub plugin_port: u16,
    dir: PathBuf,
    agent: Option<AgentProcess>,
    /// Kept for their lifetime: the processes and fake kubelets of this node.
    _plugin: HostProcess,
    devices: FakeKubelet,
    pod_resources: pod_resources::FakeKubelet,
}

/// Binaries and the cluster a node stack runs against.
pub struct Binaries<'a> {
    pub agent: &'a Path,
    pub plugin: &'a Path,
    pub fake_nvml: &'a Path,
    pub kubeconfig: &'a Path,
}

impl NodeStack {
    /// Starts the device plugin of `node` (fixture `fixture`) and waits until it registered and
    /// listed the fixture's GPUs. The agent starts with [`NodeStack::start_agent`], once the
    /// kubelet's pod resources are known.
    pub async fn start(bins: &Binaries<'_>, dir: &Path, node: &str, fixture: &str) -> NodeStack {
        std::fs::create_dir_all(dir).expect("node dir");
        let gpus = builtin(fixture).expect("fixture").gpus.len();
        let devices = FakeKubelet::start(&dir.join("device-plugins"))
            .await
            .expect("fake kubelet device manager");
        let plugin_port = free_port();
        let log = std::fs::File::create(dir.join("device-plugin.log")).expect("plugin log");
        let plugin = HostProcess::spawn(
            Command::new(bins.plugin)
                .arg("--device-plugin-dir")
                .arg(dir.join("device-plugins"))
                .args(["--node-name", node])
                .arg("--nvml-lib")
                .arg(bins.fake_nvml)
                .args(["--metrics-addr", &format!("127.0.0.1:{plugin_port}")])
                .env("KUBECONFIG", bins.kubeconfig)
                .env("MUSTER_FAKE_NVML_FIXTURE", fixture)
                .env("MUSTER_FAKE_NVML_NODE", node)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("plugin log"))
                .stderr(log),
            "muster-device-plugin",
        );
        devices
            .wait_for_registrations(1, super::DEADLINE)
            .await
            .expect("the device plugin registers");
        devices
            .wait_for_devices(super::DEADLINE, |d| d.len() == gpus)
            .await
            .expect("the device plugin lists every GPU");
        let pod_resources =
            pod_resources::FakeKubelet::start(&dir.join("pod-resources.sock"), vec![]);
        NodeStack {
            name: node.to_string(),
            agent_port: free_port(),
            plugin_port,
            dir: dir.to_path_buf(),
            agent: None,
            _plugin: plugin,
            devices,
            pod_resources,
        }
    }

    /// Admits one container asking for `size` GPUs the way the kubelet does (preferred
    /// allocation among `free`, then Allocate); the GPUs the plugin gave it.
    pub async fn admit(&self, free: &[String], size: usize) -> Vec<String> {
        self.devices
            .admit(free, &[], size)
            .await
            .expect("the kubelet admits the container")
            .preferred
    }

    /// What the kubelet's pod-resources API reports from now on.
    pub fn set_pods(&self, pods: Vec<PodResources>) {
        self.pod_resources.set_pods(pods);
    }

    /// (Re)starts the node agent on `fixture` (a name or a JSON file), on the same port.
    pub fn start_agent(&mut self, bins: &Binaries<'_>, fixture: &str, run: usize) {
        if let Some(old) = self.agent.take() {
            old.stop();
        }
        let addr = format!("127.0.0.1:{}", self.agent_port);
        let socket = self.dir.join("pod-resources.sock");
        let socket = socket.to_str().expect("UTF-8 path").to_string();
        self.agent = Some(
            AgentProcess::start(
                bins.agent,
                bins.fake_nvml,
                bins.kubeconfig,
                &self.name,
                fixture,
                self.dir.join(format!("agent-{run}.log")),
                &[
                    "--metrics-addr",
                    &addr,
                    "--pod-resources-socket",
                    &socket,
                    "--interval",
                    "500ms",
                ],
            )
            .expect("spawning muster-node-agent"),
        );
    }
}
