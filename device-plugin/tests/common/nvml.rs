//! Private copies of the fake NVML (its state is process-global, so each test loads its own copy
//! at its own path), opened under one environment lock.

use muster_device_plugin::devices::DeviceList;
use muster_gpu_inventory::{Discovery, Inventory};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `target/<profile>` of this test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The fake library, built into `deps/` as a dev-dependency before the tests run.
fn fake_lib() -> PathBuf {
    let dir = profile_dir();
    [
        dir.join("deps/libmuster_fake_nvml.so"),
        dir.join("libmuster_fake_nvml.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max()
    .map(|(_, p)| p)
    .expect("libmuster_fake_nvml.so built (it is a dev-dependency)")
}

static ENV: Mutex<()> = Mutex::new(());
static NEXT: AtomicUsize = AtomicUsize::new(0);
const VARS: [&str; 3] = [
    "MUSTER_FAKE_NVML_FIXTURE",
    "MUSTER_FAKE_NVML_NODE",
    "MUSTER_FAKE_NVML_TIME_SCALE",
];

/// A private copy of the fake library, removed on drop.
pub struct FakeNvml {
    pub dir: PathBuf,
    pub lib: PathBuf,
}

impl Drop for FakeNvml {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FakeNvml {
    pub fn new() -> FakeNvml {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("dp-fake-nvml-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        std::fs::copy(fake_lib(), &lib).unwrap();
        FakeNvml { dir, lib }
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Opens `fixture` (name or path) with exactly `env` among the fake's other variables.
    pub fn inventory(&self, fixture: &str, env: &[(&str, &str)]) -> Inventory {
        let _g = ENV.lock().unwrap_or_else(|p| p.into_inner());
        for var in VARS {
            let value = if var == "MUSTER_FAKE_NVML_FIXTURE" {
                Some(fixture)
            } else {
                env.iter().find(|(k, _)| *k == var).map(|(_, v)| *v)
            };
            // SAFETY: environment changes happen only here, under `ENV`, and the fake reads the
            // environment only inside `nvmlInit`, also under `ENV`.
            match value {
                Some(v) => unsafe { std::env::set_var(var, v) },
                None => unsafe { std::env::remove_var(var) },
            }
        }
        match Inventory::open(Some(&self.lib)) {
            Ok(Discovery::Ready(inv)) => inv,
            other => panic!("opening fake NVML with {fixture}: {other:?}"),
        }
    }

    /// The device list of `fixture` as installed on `node`.
    pub fn devices(&self, fixture: &str, node: &str) -> (Inventory, DeviceList) {
        let inv = self.inventory(fixture, &[("MUSTER_FAKE_NVML_NODE", node)]);
        let list = DeviceList::from_inventory(&inv).unwrap();
        (inv, list)
    }
}

/// A built-in fixture with its script replaced, as JSON.
pub fn fixture_with_script(name: &str, script: serde_json::Value) -> String {
    let spec = muster_api::machines::builtin(name).unwrap();
    let mut json = serde_json::to_value(spec).unwrap();
    json["script"] = script;
    serde_json::to_string_pretty(&json).unwrap()
}
