//! `/metrics` against the fake NVML and a fake kubelet: exposition validity (promtool), DCGM
//! names and labels, GPU-to-pod attribution, stale series, and a kubelet that is absent or
//! restarts.

mod common;

use common::kubelet::{FakeKubelet, gpu_pod};
use common::{AgentSpec, sample, series};
use muster_api::machines::builtin;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// promtool from the tools cache (`tests/tools/build.sh all`, a no-op when already built), or
/// `$MUSTER_TOOLS_BIN`.
fn promtool() -> PathBuf {
    if let Some(dir) = std::env::var_os("MUSTER_TOOLS_BIN") {
        return PathBuf::from(dir).join("promtool");
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/tools/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("all")
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/tools/build.sh");
    assert!(out.status.success(), "tests/tools/build.sh all failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().expect("build.sh prints its bin dir");
    PathBuf::from(dir.trim()).join("promtool")
}

/// `promtool check metrics` over `text` with `args`: exit code and output.
fn check(text: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut msg = String::from_utf8_lossy(&out.stdout).to_string();
    msg.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), msg)
}

fn agent(node: &str, fixture: &str, socket: &std::path::Path) -> AgentSpec {
    AgentSpec::new(node, Some(fixture))
        .arg("--no-publish")
        .arg("--interval")
        .arg("200ms")
        .arg("--pod-resources-socket")
        .arg(socket.to_str().unwrap())
}

#[test]
fn a_scrape_passes_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let uuids: Vec<String> = builtin("dgx-a100")
        .unwrap()
        .for_node("prom")
        .gpus
        .iter()
        .map(|g| g.uuid.clone())
        .collect();
    let socket = dir.path().join("kubelet.sock");
    let _kubelet = FakeKubelet::start(&socket, vec![gpu_pod("ml", "train-0", "main", &uuids[..2])]);
    let agent = agent("prom", "dgx-a100", &socket).start();
    let text = agent.wait_for("a scrape with pod labels", |a| {
        let m = a.metrics();
        (sample(&m, "muster_node_gpus_allocated", &[]) == Some(2.0)).then_some(m)
    });

    // The exposition itself is valid.
    // (`--lint=none` needs `--extended`: parsing plus a cardinality table.)
    let (code, out) = check(&text, &["--extended", "--lint=none"]);
    assert_eq!(
        code,
        Some(0),
        "promtool rejected the exposition:\n{out}\n{text}"
    );
    // Lint: the only findings are the ones compatibility imposes: dcgm-exporter's camelCase
    // label names (`modelName`, `UUID`, `Hostname`, which dashboards select on), shared by the
    // per-GPU muster_gpu_* series so they join, and the `_total` of the gauge
    // `muster_node_gpus_total` (named after `arena top node`'s GPU(Total)).
    let (code, out) = check(&text, &["--lint=all"]);
    assert!(matches!(code, Some(0 | 3)), "promtool failed:\n{out}");
    for finding in out.lines().filter(|l| !l.trim().is_empty()) {
        let camel_case = finding
            .ends_with("label names should be written in 'snake_case' not 'camelCase'")
            && (finding.starts_with("DCGM_FI_DEV_") || finding.starts_with("muster_gpu_"));
        let total = finding.starts_with("muster_node_gpus_total non-counter metrics");
        assert!(
            camel_case || total,
            "unexpected promtool finding: {finding}"
        );
    }
}

#[test]
fn dcgm_metrics_carry_dcgm_labels_and_pods_from_the_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let node = "attr";
    let spec = builtin("dgx1-v100").unwrap().for_node(node);
    let uuids: Vec<String> = spec.gpus.iter().map(|g| g.uuid.clone()).collect();
    let socket = dir.path().join("kubelet.sock");
    let kubelet = FakeKubelet::start(
        &socket,
        vec![
            gpu_pod("ml", "train-0", "main", &uuids[0..4]),
            gpu_pod("infer", "serve-1", "server", &uuids[6..7]),
        ],
    );
    let agent = agent(node, "dgx1-v100", &socket).start();
    let m = agent.wait_for("pod labels", |a| {
        let m = a.metrics();
        (sample(&m, "muster_node_gpus_allocated", &[]) == Some(5.0)).then_some(m)
    });
    for field in [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_SM_CLOCK",
        "muster_gpu_healthy",
        "muster_gpu_allocated",
    ] {
        assert_eq!(
            series(&m, field).len(),
            8,
            "{field} has one series per GPU\n{m}"
        );
    }
    let gpu0 = [
        ("gpu", "0"),
        ("UUID", uuids[0].as_str()),
        ("device", "nvidia0"),
        ("modelName", spec.model.as_str()),
        ("Hostname", node),
        ("pod", "train-0"),
        ("namespace", "ml"),
        ("container", "main"),
    ];
    assert!(sample(&m, "DCGM_FI_DEV_GPU_TEMP", &gpu0).is_some(), "{m}");
    assert_eq!(
        sample(&m, "DCGM_FI_DEV_FB_FREE", &gpu0),
        Some(spec.memory_mib as f64)
    );
    assert_eq!(sample(&m, "muster_gpu_allocated", &gpu0), Some(1.0));
    let gpu6 = [
        ("gpu", "6"),
        ("pod", "serve-1"),
        ("namespace", "infer"),
        ("container", "server"),
    ];
    assert_eq!(sample(&m, "muster_gpu_allocated", &gpu6), Some(1.0));
    let gpu5 = [
        ("gpu", "5"),
        ("pod", ""),
        ("namespace", ""),
        ("container", ""),
    ];
    assert_eq!(sample(&m, "muster_gpu_allocated", &gpu5), Some(0.0));
    assert_eq!(sample(&m, "muster_node_gpus_total", &[]), Some(8.0));
    assert_eq!(sample(&m, "muster_agent_pod_resources_up", &[]), Some(1.0));

    // The training pod finishes: its series go, the GPUs are reported unallocated.
    kubelet.set_pods(vec![gpu_pod("infer", "serve-1", "server", &uuids[6..7])]);
    let m = agent.wait_for("train-0 gone", |a| {
        let m = a.metrics();
        (sample(&m, "muster_node_gpus_allocated", &[]) == Some(1.0)).then_some(m)
    });
    assert!(!m.contains("train-0"), "stale series left:\n{m}");
    assert_eq!(series(&m, "DCGM_FI_DEV_GPU_TEMP").len(), 8, "{m}");
    assert_eq!(
        sample(&m, "muster_gpu_allocated", &[("gpu", "0"), ("pod", "")]),
        Some(0.0)
    );
}

#[test]
fn an_absent_or_restarting_kubelet_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let node = "restarts";
    let uuids: Vec<String> = builtin("l4-pcie-2s")
        .unwrap()
        .for_node(node)
        .gpus
        .iter()
        .map(|g| g.uuid.clone())
        .collect();
    let socket = dir.path().join("kubelet.sock");
    let mut agent = agent(node, "l4-pcie-2s", &socket).start();

    // No socket: metrics without pod labels.
    let m = agent.wait_for("a few collections", |a| {
        let m = a.metrics();
        (sample(&m, "muster_agent_collections_total", &[])? >= 3.0).then_some(m)
    });
    assert_eq!(sample(&m, "muster_agent_pod_resources_up", &[]), Some(0.0));
    assert_eq!(series(&m, "DCGM_FI_DEV_GPU_UTIL").len(), 8);
    assert!(
        series(&m, "muster_gpu_allocated")
            .iter()
            .all(|l| l.contains("pod=\"\"") && l.ends_with(" 0"))
    );

    let pods = vec![gpu_pod("ml", "job-a", "c", &uuids[0..2])];
    let kubelet = FakeKubelet::start(&socket, pods.clone());
    agent.wait_for("the kubelet to be found", |a| {
        let m = a.metrics();
        (sample(&m, "muster_agent_pod_resources_up", &[]) == Some(1.0)
            && sample(
                &m,
                "muster_gpu_allocated",
                &[("gpu", "1"), ("pod", "job-a")],
            ) == Some(1.0))
        .then_some(())
    });

    // The kubelet goes away: pod labels are dropped rather than kept stale.
    kubelet.stop();
    let m = agent.wait_for("the outage to be noticed", |a| {
        let m = a.metrics();
        (sample(&m, "muster_agent_pod_resources_up", &[]) == Some(0.0)).then_some(m)
    });
    assert!(!m.contains("job-a"), "{m}");

    // And comes back on the same path with a different allocation.
    let _kubelet = FakeKubelet::start(&socket, vec![gpu_pod("ml", "job-b", "c", &uuids[7..8])]);
    agent.wait_for("the restarted kubelet", |a| {
        let m = a.metrics();
        (sample(&m, "muster_agent_pod_resources_up", &[]) == Some(1.0)
            && sample(
                &m,
                "muster_gpu_allocated",
                &[("gpu", "7"), ("pod", "job-b")],
            ) == Some(1.0))
        .then_some(())
    });
    assert!(agent.is_running());
    assert_eq!(agent.get("/healthz").trim(), "ok");
}
