//! Test helpers: locating (or building) the fake NVML, and opening private copies of it.
//!
//! The fake keeps NVML's process-global state, and reads its configuration from the environment
//! at `nvmlInit`. So each test loads its own copy of the `.so` (a copy at another path is a
//! separate library with separate statics), and the "set env + init" step runs under one lock.
//! Tests in one binary can then run in parallel with different fixtures.
#![allow(dead_code)]

use muster_gpu_inventory::{Discovery, Inventory, InventoryError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `target/<profile>` of this test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Newest existing file among `candidates`.
fn newest(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
}

fn cargo_build(args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "muster-fake-nvml"]).args(args);
    if profile_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build");
    assert!(
        status.success(),
        "cargo build -p muster-fake-nvml {args:?} failed"
    );
}

static BUILD: Mutex<()> = Mutex::new(());

/// The fake library. As a dev-dependency it is built (cdylib included) into `deps/` before the
/// tests; a `cargo build -p muster-fake-nvml` puts it in the profile dir. Built here if neither.
pub fn fake_lib() -> PathBuf {
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let dir = profile_dir();
    let candidates = [
        dir.join("deps/libmuster_fake_nvml.so"),
        dir.join("libmuster_fake_nvml.so"),
    ];
    if let Some(p) = newest(&candidates) {
        return p;
    }
    cargo_build(&[]);
    newest(&candidates).expect("fake NVML built")
}

/// The deliberately incomplete NVML (an example cdylib of the fake's crate). Examples of a
/// dependency are not built by `cargo test`, so build it (a no-op when fresh) once per process.
pub fn partial_lib() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let _g = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    BUILT.call_once(|| cargo_build(&["--example", "partial_nvml"]));
    profile_dir().join("examples/libpartial_nvml.so")
}

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

static ENV: Mutex<()> = Mutex::new(());
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub const VARS: [&str; 4] = [
    "MUSTER_FAKE_NVML_FIXTURE",
    "MUSTER_FAKE_NVML_NODE",
    "MUSTER_FAKE_NVML_TIME_SCALE",
    "MUSTER_FAKE_NVML_WAIT_ERROR_AFTER",
];

impl FakeNvml {
    pub fn new() -> FakeNvml {
        let src = fake_lib();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fake-nvml-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        std::fs::copy(&src, &lib).unwrap();
        FakeNvml { dir, lib }
    }

    /// A scratch file in this copy's directory (fixtures written by tests).
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Opens the inventory with exactly `env` set among the fake's variables.
    pub fn open(&self, env: &[(&str, &str)]) -> Result<Discovery, InventoryError> {
        let _g = ENV.lock().unwrap_or_else(|p| p.into_inner());
        for var in VARS {
            match env.iter().find(|(k, _)| *k == var) {
                // SAFETY: every environment change in these tests happens under `ENV`, and the
                // fake reads the environment only inside `nvmlInit`, also under `ENV`.
                Some((_, v)) => unsafe { std::env::set_var(var, v) },
                None => unsafe { std::env::remove_var(var) },
            }
        }
        Inventory::open(Some(&self.lib))
    }

    /// Opens with a fixture and expects GPUs.
    pub fn inventory(&self, fixture: &str, extra: &[(&str, &str)]) -> Inventory {
        let mut env = vec![("MUSTER_FAKE_NVML_FIXTURE", fixture)];
        env.extend_from_slice(extra);
        match self.open(&env) {
            Ok(Discovery::Ready(inv)) => inv,
            other => panic!("opening fake NVML with {fixture}: {other:?}"),
        }
    }
}

/// A built-in fixture with a script replaced, as JSON.
pub fn fixture_with_script(name: &str, script: serde_json::Value) -> String {
    let spec = muster_api::machines::builtin(name).unwrap();
    let mut json = serde_json::to_value(spec).unwrap();
    json["script"] = script;
    serde_json::to_string_pretty(&json).unwrap()
}
