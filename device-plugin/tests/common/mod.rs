//! Shared test setup: a plugin over a private fake NVML, registered with a fake kubelet in a
//! temporary device-plugins directory.
#![allow(dead_code)]

pub mod nvml;

use muster_device_plugin::devices::DeviceList;
use muster_device_plugin::fake_kubelet::FakeKubelet;
use muster_device_plugin::pods::kube::AllocatedPod;
use muster_device_plugin::pods::{PodInfo, PodStore};
use muster_device_plugin::{Plugin, PluginConfig, PluginHandle};
use muster_gpu_inventory::{HealthWatcher, Inventory, WatchConfig};
use nvml::FakeNvml;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bounds waits for things that should happen soon; not a performance assertion.
pub const DEADLINE: Duration = Duration::from_secs(20);
pub const NODE: &str = "gpu-node-1";

pub struct Setup {
    /// Fixture name or JSON path.
    pub fixture: String,
    pub pods: Option<PodStore>,
    pub health: bool,
    pub cdi: bool,
    pub time_scale: Option<&'static str>,
}

impl Setup {
    pub fn new(fixture: &str) -> Setup {
        Setup {
            fixture: fixture.to_string(),
            pods: None,
            health: false,
            cdi: false,
            time_scale: None,
        }
    }
}

pub struct Running {
    pub kubelet: FakeKubelet,
    pub plugin: PluginHandle,
    pub list: DeviceList,
    pub config: PluginConfig,
    pub allocated: mpsc::UnboundedReceiver<AllocatedPod>,
    pub watcher: Option<HealthWatcher>,
    _inventory: Inventory,
    pub fake: FakeNvml,
    pub tmp: tempfile::TempDir,
}

impl Running {
    pub fn uuids(&self) -> Vec<String> {
        self.list.gpus.iter().map(|g| g.uuid.clone()).collect()
    }

    pub fn uuid(&self, index: usize) -> String {
        self.list.gpus[index].uuid.clone()
    }

    pub async fn stop(self) {
        self.plugin.shutdown().await.unwrap();
        self.kubelet.stop().await;
        if let Some(w) = self.watcher {
            w.stop();
        }
    }
}

pub async fn start(setup: Setup) -> Running {
    let fake = FakeNvml::new();
    let fixture = if setup.fixture.starts_with('{') {
        fake.file("fixture.json", &setup.fixture)
            .to_string_lossy()
            .into_owned()
    } else {
        setup.fixture.clone()
    };
    let mut env = vec![("MUSTER_FAKE_NVML_NODE", NODE)];
    if let Some(scale) = setup.time_scale {
        env.push(("MUSTER_FAKE_NVML_TIME_SCALE", scale));
    }
    let inventory = fake.inventory(&fixture, &env);
    let list = DeviceList::from_inventory(&inventory).unwrap();
    let tmp = tempfile::Builder::new().prefix("dp").tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    let kubelet = FakeKubelet::start(&dir).await.unwrap();

    let mut config = PluginConfig::new(&dir, NODE);
    config.driver_root = "/run/nvidia/driver".into();
    config.cdi = setup.cdi;
    let (tx, allocated) = mpsc::unbounded_channel();
    let mut plugin = Plugin::new(config.clone(), list.clone())
        .unwrap()
        .with_recorder(tx);
    let mut watcher = None;
    if setup.health {
        let (w, events) = inventory
            .watch_health(WatchConfig {
                wait_timeout: Duration::from_millis(100),
                ..WatchConfig::default()
            })
            .unwrap();
        watcher = Some(w);
        plugin = plugin.with_health(events);
    }
    if let Some(pods) = setup.pods {
        plugin = plugin.with_pods(pods);
    }
    let plugin = plugin.start().unwrap();
    kubelet.wait_for_registrations(1, DEADLINE).await.unwrap();
    Running {
        kubelet,
        plugin,
        list,
        config,
        allocated,
        watcher,
        _inventory: inventory,
        fake,
        tmp,
    }
}

/// A pod bound to `NODE` carrying the scheduler's choice.
pub fn annotated_pod(name: &str, ids: &[String], since_ms: i64) -> PodInfo {
    PodInfo {
        namespace: "team".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node_name: Some(NODE.into()),
        gpu_ids: Some(ids.to_vec()),
        gpu_node: Some(NODE.into()),
        allocated: false,
        terminated: false,
        since_ms,
    }
}

/// Waits until `cond` holds, failing after `DEADLINE`.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < DEADLINE,
            "condition not met within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
