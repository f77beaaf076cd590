//! Binaries of this workspace built from the working tree, for the tests and benchmarks that
//! run them as processes (the extender above all).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root directory (this crate is `tests/harness`).
pub fn repo_root() -> PathBuf {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness
        .ancestors()
        .nth(2)
        .map_or_else(|| harness.join("../.."), Path::to_path_buf)
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` in the workspace).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `cargo build -p package --bin bin` (with `--release` when `release`) from the working tree;
/// the binary's path.
pub fn build_workspace_binary(package: &str, bin: &str, release: bool) -> std::io::Result<PathBuf> {
    // The cargo running this process, else the one that built it, else PATH's.
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_string))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.current_dir(repo_root()).status().map_err(|e| {
        std::io::Error::new(e.kind(), format!("running {cargo} build -p {package}: {e}"))
    })?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "{cargo} build -p {package} --bin {bin} failed ({status})"
        )));
    }
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join(bin))
}
