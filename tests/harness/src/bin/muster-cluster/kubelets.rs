//! What stands in for each node's kubelet in the demo: a fake device manager (the device
//! plugin's `FakeKubelet`, speaking the real v1beta1 proto) that the node's
//! `muster-device-plugin` process registers with, and that admits every GPU pod bound to the
//! node the way the kubelet would (`GetPreferredAllocation`, then `Allocate`), so the plugin
//! marks the scheduler's GPU choice allocated on the pod.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use muster_device_plugin::fake_kubelet::FakeKubelet;
use muster_testcluster::Proc;
use tokio::task::JoinHandle;

/// One node's fake kubelet, its device plugin process and the admission loop.
pub struct NodeKubelet {
    admissions: JoinHandle<()>,
    _plugin: Proc,
    _kubelet: Arc<FakeKubelet>,
}

impl Drop for NodeKubelet {
    fn drop(&mut self) {
        self.admissions.abort();
    }
}

/// Where the binaries and the fake NVML are, and the cluster they talk to.
pub struct PluginSetup<'a> {
    pub device_plugin: &'a Path,
    pub fake_nvml: &'a Path,
    pub kubeconfig: &'a Path,
    pub dir: &'a Path,
    pub client: kube::Client,
    pub deadline: Duration,
}

impl PluginSetup<'_> {
    /// Starts the fake kubelet and the device plugin of `node` (machine `fixture`), and waits
    /// until the plugin advertises the node's GPUs.
    pub async fn start(&self, node: &str, fixture: &str) -> Result<NodeKubelet> {
        let sockets = self.dir.join(format!("kubelet-{node}/device-plugins"));
        let kubelet = Arc::new(
            FakeKubelet::start(&sockets)
                .await
                .with_context(|| format!("fake kubelet of {node}"))?,
        );
        let args: Vec<String> = vec![
            "--device-plugin-dir".into(),
            sockets.display().to_string(),
            "--node-name".into(),
            node.into(),
            "--nvml-lib".into(),
            self.fake_nvml.display().to_string(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        let env: [(&str, &OsStr); 5] = [
            ("MUSTER_FAKE_NVML_FIXTURE", fixture.as_ref()),
            ("MUSTER_FAKE_NVML_NODE", node.as_ref()),
            ("MUSTER_FAKE_NVML_TIME_SCALE", "1".as_ref()),
            ("KUBECONFIG", self.kubeconfig.as_os_str()),
            ("RUST_LOG", "info".as_ref()),
        ];
        let log = self.dir.join(format!("logs/device-plugin-{node}.log"));
        let plugin = Proc::spawn_env(self.device_plugin, &args, &env, &log)
            .with_context(|| format!("starting {}", self.device_plugin.display()))?;
        let devices = kubelet
            .wait_for_devices(self.deadline, |d| !d.is_empty())
            .await
            .with_context(|| format!("device plugin of {node} (log: {})", log.display()))?;
        let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
        tracing::info!(node, gpus = ids.len(), "device plugin registered");
        let admissions = tokio::spawn(admit_bound_pods(
            kubelet.clone(),
            Api::all(self.client.clone()),
            node.to_string(),
            ids,
        ));
        Ok(NodeKubelet {
            admissions,
            _plugin: plugin,
            _kubelet: kubelet,
        })
    }
}

/// GPUs a pod's containers ask for.
fn gpus_of(pod: &Pod) -> usize {
    let Some(spec) = &pod.spec else { return 0 };
    spec.containers
        .iter()
        .filter_map(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get(muster_api::names::GPU_RESOURCE)
        })
        .filter_map(|q| q.0.parse::<usize>().ok())
        .sum()
}

fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Polls the pods bound to `node` and admits each new GPU pod once, offering the GPUs no live
/// admitted pod holds (as the device manager does). A failed admission is retried next round.
async fn admit_bound_pods(
    kubelet: Arc<FakeKubelet>,
    pods: Api<Pod>,
    node: String,
    ids: Vec<String>,
) {
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        match pods.list(&params).await {
            Ok(list) => {
                let live: Vec<&Pod> = list.items.iter().filter(|p| is_live(p)).collect();
                let uids: HashSet<String> = live.iter().filter_map(|p| p.uid()).collect();
                held.retain(|uid, _| uids.contains(uid));
                for pod in live {
                    let (Some(uid), n) = (pod.uid(), gpus_of(pod)) else {
                        continue;
                    };
                    if n == 0 || held.contains_key(&uid) {
                        continue;
                    }
                    let taken: HashSet<&String> = held.values().flatten().collect();
                    let free: Vec<String> = ids
                        .iter()
                        .filter(|id| !taken.contains(id))
                        .cloned()
                        .collect();
                    match kubelet.admit(&free, &[], n).await {
                        Ok(admitted) => {
                            tracing::info!(node, pod = %pod.name_any(), gpus = ?admitted.preferred, "admitted");
                            held.insert(uid, admitted.preferred);
                        }
                        Err(status) => {
                            tracing::warn!(node, pod = %pod.name_any(), %status, "admission failed; retrying");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(node, error = %e, "listing the node's pods"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
