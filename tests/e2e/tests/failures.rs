//! Failure modes must end in one readable error naming the component and its log file.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use muster_testcluster::{ClusterSpec, Component, Error, TestCluster};

/// A tools directory laid out like build.sh's (bin/ and stages/) whose binaries link to the
/// real ones, except those `replace` swaps for a script and those `omit` leaves out.
fn fake_tools(root: &Path, replace: &[(&str, &str)], omit: &[&str]) -> PathBuf {
    let real = muster_testcluster::bin_dir().unwrap();
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("stages")).unwrap();
    symlink(
        real.parent().unwrap().join("stages/fast.yaml"),
        root.join("stages/fast.yaml"),
    )
    .unwrap();
    for c in Component::ALL {
        let name = c.binary_name();
        if omit.contains(&name) {
            continue;
        }
        if let Some((_, script)) = replace.iter().find(|(n, _)| *n == name) {
            let path = bin.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            symlink(real.join(name), bin.join(name)).unwrap();
        }
    }
    bin
}

#[tokio::test]
async fn a_binary_that_will_not_start_is_named_with_its_log() {
    let root = tempfile::tempdir().unwrap();
    let script = "#!/bin/sh\necho 'boom: this apiserver refuses to start' >&2\nexit 3\n";
    let bin = fake_tools(root.path(), &[("kube-apiserver", script)], &[]);
    let err = TestCluster::start(ClusterSpec {
        bin_dir: Some(bin),
        parent_dir: Some(root.path().join("clusters")),
        ..ClusterSpec::default()
    })
    .await
    .err()
    .expect("a cluster whose apiserver exits must not start");
    let text = err.to_string();
    match &err {
        Error::NotReady { component, log, .. } => {
            assert_eq!(*component, Component::ApiServer);
            assert!(
                log.is_file(),
                "the log named in the error must be kept: {text}"
            );
            assert!(text.contains(&log.display().to_string()), "{text}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(text.contains("kube-apiserver"), "{text}");
    assert!(text.contains("exited"), "{text}");
    assert!(
        text.contains("boom: this apiserver refuses to start"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_binary_is_named_before_anything_starts() {
    let root = tempfile::tempdir().unwrap();
    let bin = fake_tools(root.path(), &[], &["kwok"]);
    let err = TestCluster::start(ClusterSpec {
        bin_dir: Some(bin.clone()),
        parent_dir: Some(root.path().join("clusters")),
        ..ClusterSpec::default()
    })
    .await
    .err()
    .expect("a cluster without kwok must not start");
    assert!(
        matches!(&err, Error::MissingBinary { component: Component::Kwok, path, .. } if *path == bin.join("kwok")),
        "{err:?}"
    );
    assert!(err.to_string().contains("build.sh"), "{err}");
    assert!(
        !root.path().join("clusters").exists(),
        "nothing should have started"
    );
}

#[tokio::test]
async fn a_port_in_use_is_reported() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = TestCluster::start(ClusterSpec {
        apiserver_port: Some(port),
        ..ClusterSpec::default()
    })
    .await
    .err()
    .expect("the apiserver port is taken");
    assert!(
        matches!(err, Error::PortInUse { component: Component::ApiServer, port: p } if p == port),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn build_script_without_go_says_so() {
    // A PATH with only what build.sh needs before it looks for Go (a system-wide Go in
    // /usr/bin must not turn this into a real build).
    let path = tempfile::tempdir().unwrap();
    for tool in ["bash", "cat", "cut", "dirname", "sha256sum"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found in /usr/bin or /bin"));
        symlink(found, path.path().join(tool)).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let output = Command::new(path.path().join("bash"))
        .arg(muster_testcluster::build_script())
        .arg("core")
        .env("PATH", path.path())
        // Also hides the fallback to /usr/local/go/bin/go.
        .env("MUSTER_GO", path.path().join("go"))
        .env("MUSTER_TOOLS_DIR", cache.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Go toolchain"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "no bin dir may be printed on failure"
    );
}
