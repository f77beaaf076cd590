//! Where the control-plane binaries come from: `$MUSTER_TOOLS_BIN`, or the cache that
//! `tests/tools/build.sh` fills (and prints), building it on first use so that a plain
//! `cargo test` works on a fresh machine with Go installed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Environment variable naming a directory that already holds every binary.
pub const TOOLS_BIN_ENV: &str = "MUSTER_TOOLS_BIN";

/// The build script, located from this crate's source directory (tests/harness).
pub fn build_script() -> PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.parent().unwrap_or(harness).join("tools/build.sh")
}

/// Directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, and
/// `../stages/fast.yaml` beside it.
///
/// Builds them if needed. build.sh serialises concurrent builders with a lock file in the
/// cache, so parallel test binaries wait for one build instead of racing; within this process
/// the answer is computed once.
pub fn bin_dir() -> Result<PathBuf> {
    static CACHED: Mutex<Option<PathBuf>> = Mutex::new(None);
    if let Some(dir) = std::env::var_os(TOOLS_BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    // A poisoned lock only means another test panicked while building; the cache is still valid.
    let mut cached = CACHED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = cached.as_ref() {
        return Ok(dir.clone());
    }
    let dir = run_script(
        &build_script(),
        &["core"],
        "locating control-plane binaries (builds them on first use)",
    )?;
    *cached = Some(dir.clone());
    Ok(dir)
}

/// Path of one of build.sh's tools (the `core` set, or helm, promtool, prometheus of `all`).
///
/// The `core` directory is tried first; a tool only `all` builds (helm, promtool, prometheus)
/// makes build.sh build the `all` set into the same directory on first use, so a test needing
/// one works on a fresh machine too.
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if path.exists() || std::env::var_os(TOOLS_BIN_ENV).is_some() {
        return Ok(path);
    }
    static ALL: Mutex<Option<PathBuf>> = Mutex::new(None);
    // As in bin_dir: a poisoned lock only means another test panicked while building.
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = match all.as_ref() {
        Some(dir) => dir.clone(),
        None => {
            let dir = run_script(
                &build_script(),
                &["all"],
                "locating helm/promtool/prometheus (builds them on first use)",
            )?;
            *all = Some(dir.clone());
            dir
        }
    };
    Ok(dir.join(name))
}

/// Stage configuration for kwok that build.sh extracted next to the bin directory.
pub fn stages_file(bin_dir: &Path) -> PathBuf {
    bin_dir
        .parent()
        .map(|p| p.join("stages/fast.yaml"))
        .unwrap_or_else(|| PathBuf::from("stages/fast.yaml"))
}

/// Runs one of the build scripts (`bash <script> <args>`) and returns the directory it prints
/// last on stdout, relaying its progress (stderr) live.
pub(crate) fn run_script(script: &Path, args: &[&str], what: &str) -> Result<PathBuf> {
    let fail = |detail: String| Error::ToolsBuild {
        script: script.to_path_buf(),
        detail,
    };
    tracing::info!(script = %script.display(), "{what}");
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run bash: {e}")))?;
    // Relay build progress live (a cold build takes many minutes) and keep the tail for the error.
    let stderr = child.stderr.take();
    let relay = std::thread::spawn(move || {
        let mut tail = Vec::new();
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                eprintln!("{line}");
                tail.push(line);
                if tail.len() > 15 {
                    tail.remove(0);
                }
            }
        }
        tail.join("\n")
    });
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for the script: {e}")))?;
    let tail = relay.join().unwrap_or_default();
    if !output.status.success() {
        return Err(fail(format!("{}\n{tail}", output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| fail("the script printed no directory".into()))?;
    Ok(PathBuf::from(dir))
}
