//! The container image (issue 19). `image/build.sh` (`make image`) builds the root `Dockerfile`
//! with buildah: no Docker daemon, nothing pulled. This test unpacks the OCI archive it writes, as
//! a container runtime would, checks the image's config and contents, and runs each binary from
//! the unpacked root filesystem under chroot as the image's user: `--version` for all three, and
//! the node agent against the fake NVML placed where the NVIDIA container runtime mounts the
//! driver's `libnvidia-ml.so.1` (the agent loads it by name, as on a real node).

#[path = "../../e2e/tests/agent_common/mod.rs"]
#[allow(unused_imports)] // it re-exports the harness's AgentProcess for the other tests
mod agent_common;
mod common;

use common::{repo_root, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARIES: [&str; 3] = [
    "muster-scheduler",
    "muster-node-agent",
    "muster-device-plugin",
];
/// The image's `USER` (distroless's nonroot).
const IMAGE_USER: &str = "65532:65532";

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `sha256:<hex>` -> the blob's path in an OCI layout.
fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().expect("digest is a string");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    layout.join("blobs/sha256").join(hex)
}

/// Unpacks the archive's single image: (its config, the root filesystem).
fn unpack(archive: &Path, into: &Path) -> (Value, PathBuf) {
    let layout = into.join("layout");
    let rootfs = into.join("rootfs");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout));
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest = read_json(&blob(&layout, &manifests[0]["digest"]));
    let config = read_json(&blob(&layout, &manifest["config"]["digest"]));
    for layer in manifest["layers"].as_array().expect("manifest.layers") {
        let media = layer["mediaType"].as_str().unwrap_or_default();
        let flags = if media.ends_with("+gzip") {
            "xzf"
        } else {
            "xf"
        };
        run(Command::new("tar")
            .arg(flags)
            .arg(blob(&layout, &layer["digest"]))
            .arg("-C")
            .arg(&rootfs));
    }
    (config, rootfs)
}

/// Every regular file under `dir` with its size, relative paths sorted.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string();
                out.push((format!("/{rel}"), meta.len()));
            }
        }
    }
    out.sort();
    out
}

fn chroot(rootfs: &Path, user: &str, argv: &[&str]) -> Command {
    // By absolute path: the cleared environment has no PATH to look it up with.
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chroot (coreutils) in /usr/sbin or /usr/bin");
    let mut cmd = Command::new(chroot);
    cmd.arg(format!("--userspec={user}")).arg(rootfs).args(argv);
    // Nothing of this machine's environment reaches the image's binaries.
    cmd.env_clear();
    cmd
}

/// Kills the agent when the test ends, however it ends.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_image_builds_without_a_daemon_and_its_binaries_run_from_it() {
    // Debug builds: the test run has them already; `make image` packs release builds.
    let build = run(Command::new("bash")
        .arg(repo_root().join("image/build.sh"))
        .env("MUSTER_IMAGE_PROFILE", "debug")
        .current_dir(repo_root()));
    println!("{build}");
    let archive = target_dir().join("image/muster.oci.tar");
    let scratch = tempfile::tempdir().unwrap();
    let (config, rootfs) = unpack(&archive, scratch.path());

    // What a runtime starts: the scheduler, as the unprivileged user.
    assert_eq!(config["config"]["User"], IMAGE_USER, "{config}");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/muster-scheduler"]),
        "{config}"
    );
    assert_eq!(
        config["architecture"],
        std::env::consts::ARCH.replace("x86_64", "amd64")
    );

    // What is in it: the binaries and what they load, no shell.
    let listing = files(&rootfs);
    let total: u64 = listing.iter().map(|(_, size)| size).sum();
    println!(
        "image: {} bytes compressed, {total} bytes unpacked, {} files:",
        std::fs::metadata(&archive).unwrap().len(),
        listing.len()
    );
    for (path, size) in &listing {
        println!("  {size:>10}  {path}");
    }
    for bin in BINARIES {
        let path = format!("/usr/local/bin/{bin}");
        assert!(listing.iter().any(|(p, _)| *p == path), "{path} missing");
    }
    for shell in ["/bin/sh", "/usr/bin/sh", "/bin/bash"] {
        assert!(!rootfs.join(&shell[1..]).exists(), "{shell} in the image");
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    // Each binary runs from the image, with only the image's libraries.
    for bin in BINARIES {
        let out = run(&mut chroot(
            &rootfs,
            IMAGE_USER,
            &[&format!("/usr/local/bin/{bin}"), "--version"],
        ));
        assert!(
            out.starts_with(&format!("{bin} {}", env!("CARGO_PKG_VERSION"))),
            "{bin} --version: {out}"
        );
    }

    // The node agent on the fake NVML, mounted beside the image's libc as the NVIDIA container
    // runtime mounts the driver's library; no --nvml-lib, so it is found by name.
    let (_, fake_nvml) = agent_common::build_agent();
    let libc = listing
        .iter()
        .find(|(p, _)| p.ends_with("/libc.so.6"))
        .expect("libc.so.6 in the image");
    let libdir = Path::new(&libc.0[1..]).parent().unwrap();
    std::fs::copy(&fake_nvml, rootfs.join(libdir).join("libnvidia-ml.so.1")).unwrap();
    let port = muster_testcluster::free_port().unwrap();
    let log = scratch.path().join("agent.log");
    let mut agent = chroot(
        &rootfs,
        "0:0", // as the chart runs the node DaemonSet
        &[
            "/usr/local/bin/muster-node-agent",
            "--node-name",
            "image-node",
            "--no-publish",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--pod-resources-socket",
            "/nonexistent/kubelet.sock",
        ],
    );
    agent
        .envs([
            ("MUSTER_FAKE_NVML_FIXTURE", "dgx-a100"),
            ("MUSTER_FAKE_NVML_NODE", "image-node"),
            ("RUST_LOG", "info"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut agent = Killed(agent.spawn().unwrap());
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + agent_common::DEADLINE;
    let gpus = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            panic!(
                "the agent exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let body = probe
            .block_on(muster_testcluster::http_get(port, "/metrics"))
            .unwrap_or_default();
        let gpus: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_TEMP{"))
            .collect();
        if gpus.len() == 8 {
            break gpus.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "no metrics of 8 GPUs from the agent in the image: {body}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(gpus.iter().all(|l| l.contains("A100")), "{gpus:?}");
}
