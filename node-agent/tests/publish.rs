//! What the agent would publish (`/debug/state` with `--no-publish --debug-endpoints`) against
//! the fake NVML: GpuNode content and GFD labels per fixture, change detection, XID and lost-GPU
//! health, and clean failures; `/debug/state` is served only when asked for.

mod common;

use common::{AgentSpec, fixture_with_script, http_get, sample, writes};
use muster_api::machines::{MachineSpec, builtin};
use serde_json::{Value, json};

/// An agent on `node` that writes nothing and serves `/debug/state`, with the DMI product name
/// of `machine`.
fn agent(node: &str, fixture: Option<&str>, dir: &tempfile::TempDir, machine: &str) -> AgentSpec {
    quiet_agent(node, fixture, dir, machine).arg("--debug-endpoints")
}

/// [`agent`] without `--debug-endpoints`.
fn quiet_agent(
    node: &str,
    fixture: Option<&str>,
    dir: &tempfile::TempDir,
    machine: &str,
) -> AgentSpec {
    let dmi = dir.path().join("product_name");
    std::fs::write(&dmi, format!("{machine}\n")).unwrap();
    AgentSpec::new(node, fixture)
        .arg("--no-publish")
        .arg("--machine-type-file")
        .arg(dmi.to_str().unwrap())
        .arg("--pod-resources-socket")
        .arg(dir.path().join("absent.sock").to_str().unwrap())
}

fn assert_matches_fixture(state: &Value, spec: &MachineSpec, node: &str) {
    let gn = &state["gpuNode"];
    assert_eq!(gn["nodeName"], node);
    assert_eq!(gn["model"], spec.model.as_str());
    assert_eq!(gn["driverVersion"], spec.driver_version.as_str());
    assert_eq!(gn["cudaVersion"], spec.cuda_version.as_str());
    assert_eq!(gn["gpuCount"], spec.gpus.len());
    assert_eq!(gn["healthyCount"], spec.gpus.len());
    let topology: Vec<Vec<String>> = serde_json::from_value(gn["topology"].clone()).unwrap();
    assert_eq!(topology, spec.topology.to_rows(), "link matrix");
    let gpus = gn["gpus"].as_array().unwrap();
    for (gpu, want) in gpus.iter().zip(&spec.gpus) {
        assert_eq!(gpu["index"], want.index);
        assert_eq!(gpu["uuid"], want.uuid.as_str());
        assert_eq!(gpu["pciBusId"], want.pci_bus_id.as_str());
        assert_eq!(gpu["numaNode"], want.numa_node);
        assert_eq!(gpu["memoryMiB"], spec.memory_mib);
        assert_eq!(gpu["healthy"], true);
    }
    let labels = &state["labels"];
    assert_eq!(
        labels,
        &json!({
            "nvidia.com/gpu.product": spec.product,
            "nvidia.com/gpu.count": spec.gpus.len().to_string(),
            "nvidia.com/gpu.memory": spec.memory_mib.to_string(),
            "nvidia.com/gpu.family": spec.family,
            "nvidia.com/gpu.machine": spec.machine,
            "nvidia.com/mig.strategy": "none",
        })
    );
}

#[test]
fn dgx1_v100_gpunode_and_labels_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let spec = builtin("dgx1-v100").unwrap().for_node("v100-node");
    let agent = agent("v100-node", Some("dgx1-v100"), &dir, &spec.machine).start();
    let state = agent.wait_for("a published GpuNode", |a| {
        let s = a.state();
        (writes(&s, "gpuNode") >= 1).then_some(s)
    });
    assert_matches_fixture(&state, &spec, "v100-node");
    // A hybrid cube mesh: NV1/NV2 pairs and SYS ones, not a uniform matrix.
    let rows = spec.topology.to_rows();
    assert!(rows.iter().flatten().any(|l| l == "NV2"));
    assert!(rows.iter().flatten().any(|l| l == "SYS"));
}

#[test]
fn dgx_a100_gpunode_and_labels_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let spec = builtin("dgx-a100").unwrap().for_node("a100-node");
    let agent = agent("a100-node", Some("dgx-a100"), &dir, &spec.machine).start();
    let state = agent.wait_for("a published GpuNode", |a| {
        let s = a.state();
        (writes(&s, "gpuNode") >= 1).then_some(s)
    });
    assert_matches_fixture(&state, &spec, "a100-node");
}

#[test]
fn no_driver_publishes_an_empty_node_and_keeps_serving_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("cpu-node", None, &dir, "PowerEdge R650").start();
    let state = agent.wait_for("a published GpuNode", |a| {
        let s = a.state();
        (writes(&s, "gpuNode") >= 1).then_some(s)
    });
    assert_eq!(state["gpuNode"]["gpuCount"], 0);
    assert_eq!(state["gpuNode"]["gpus"], json!([]));
    assert_eq!(state["labels"], json!({}), "no GFD labels without GPUs");
    let metrics = agent.metrics();
    assert_eq!(sample(&metrics, "muster_node_gpus_total", &[]), Some(0.0));
    assert_eq!(agent.get("/healthz").trim(), "ok");
}

#[test]
fn debug_state_is_served_only_with_the_flag_or_the_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let off = quiet_agent("debug-off", Some("dgx-a100"), &dir, "DGXA100").start();
    off.metrics();
    let answer = http_get(&off.addr, "/debug/state");
    assert!(
        answer
            .as_ref()
            .is_err_and(|head| head.starts_with("HTTP/1.1 404")),
        "/debug/state without --debug-endpoints: {answer:?}"
    );
    drop(off);
    let on = quiet_agent("debug-env", Some("dgx-a100"), &dir, "DGXA100")
        .env("MUSTER_DEBUG_ENDPOINTS", "true")
        .start();
    let state = on.wait_for("a first write on /debug/state", |a| {
        let s = a.state();
        (writes(&s, "gpuNode") >= 1).then_some(s)
    });
    assert_eq!(state["gpuNode"]["nodeName"], "debug-env");
}

#[test]
fn nothing_is_rewritten_while_nothing_changes_even_after_an_application_xid() {
    let dir = tempfile::tempdir().unwrap();
    // XID 13 is an application error: counted in the metrics, the GPU stays healthy, so the
    // GpuNode content does not change.
    let fixture = dir.path().join("xid13.json");
    let script = json!([{"atSeconds": 4.0, "gpu": 1, "xid": 13}]);
    std::fs::write(&fixture, fixture_with_script("dgx-a100", script)).unwrap();
    let agent = agent("quiet", Some(fixture.to_str().unwrap()), &dir, "DGXA100")
        .arg("--interval")
        .arg("100ms")
        .arg("--publish-interval")
        .arg("1h")
        .env("MUSTER_FAKE_NVML_TIME_SCALE", "4")
        .start();
    let metrics = agent.wait_for("XID 13 in the metrics and 20 collections", |a| {
        let m = a.metrics();
        let xid = sample(&m, "DCGM_FI_DEV_XID_ERRORS", &[("gpu", "1")])?;
        let ticks = sample(&m, "muster_agent_collections_total", &[])?;
        (xid == 13.0 && ticks >= 20.0).then_some(m)
    });
    assert_eq!(
        sample(&metrics, "muster_gpu_healthy", &[("gpu", "1")]),
        Some(1.0)
    );
    let state = agent.state();
    assert_eq!(writes(&state, "gpuNode"), 1, "{state:#}");
    assert_eq!(writes(&state, "labels"), 1, "{state:#}");
    assert_eq!(
        sample(
            &metrics,
            "muster_agent_publishes_total",
            &[("object", "gpunode")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_heartbeat_rewrites_an_unchanged_gpunode() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("beat", Some("l4-pcie-2s"), &dir, "SR670")
        .arg("--interval")
        .arg("100ms")
        .arg("--publish-interval")
        .arg("300ms")
        .start();
    let state = agent.wait_for("three heartbeats", |a| {
        let s = a.state();
        (writes(&s, "gpuNode") >= 3).then_some(s)
    });
    assert_eq!(
        writes(&state, "labels"),
        1,
        "labels only change with content"
    );
}

#[test]
fn xid_79_turns_the_gpu_unhealthy_through_the_event_path() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("xid79.json");
    let script = json!([{"atSeconds": 6.0, "gpu": 2, "xid": 79}]);
    std::fs::write(&fixture, fixture_with_script("dgx-a100", script)).unwrap();
    // With a one-hour collection interval only the first tick runs: the change below can only
    // come from the health event itself.
    let agent = agent("xid-node", Some(fixture.to_str().unwrap()), &dir, "DGXA100")
        .arg("--interval")
        .arg("1h")
        .arg("--publish-interval")
        .arg("1h")
        .env("MUSTER_FAKE_NVML_TIME_SCALE", "4")
        .start();
    let state = agent.wait_for("GPU 2 unhealthy in the GpuNode", |a| {
        let s = a.state();
        (s["gpuNode"]["gpus"][2]["healthy"] == false).then_some(s)
    });
    let gn = &state["gpuNode"];
    assert_eq!(gn["gpus"][2]["unhealthyReason"], "XID 79");
    assert_eq!(gn["healthyCount"], 7);
    assert!(
        gn["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .all(|(i, g)| (i == 2) != (g["healthy"] == true))
    );
    assert_eq!(writes(&state, "gpuNode"), 2, "initial write, then the XID");
    let metrics = agent.metrics();
    assert_eq!(
        sample(&metrics, "DCGM_FI_DEV_XID_ERRORS", &[("gpu", "2")]),
        Some(79.0)
    );
    assert_eq!(
        sample(&metrics, "muster_gpu_healthy", &[("gpu", "2")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "muster_agent_collections_total", &[]),
        Some(1.0)
    );
}

#[test]
fn a_lost_gpu_is_unhealthy_and_the_agent_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("lost.json");
    let script = json!([{"atSeconds": 4.0, "gpu": 3, "lost": true}]);
    std::fs::write(&fixture, fixture_with_script("dgx-h100", script)).unwrap();
    let mut agent = agent(
        "lost-node",
        Some(fixture.to_str().unwrap()),
        &dir,
        "DGXH100",
    )
    .arg("--interval")
    .arg("200ms")
    .env("MUSTER_FAKE_NVML_TIME_SCALE", "4")
    .start();
    let state = agent.wait_for("GPU 3 unhealthy", |a| {
        let s = a.state();
        (s["gpuNode"]["gpus"][3]["healthy"] == false).then_some(s)
    });
    assert_eq!(state["gpuNode"]["healthyCount"], 7);
    assert!(
        state["gpuNode"]["gpus"][3]["unhealthyReason"]
            .as_str()
            .is_some_and(|r| r.contains("lost")),
        "{state:#}"
    );
    // Its readings disappear (DCGM leaves blank fields out); the other GPUs keep reporting.
    let metrics = agent.wait_for("GPU 3 readings gone", |a| {
        let m = a.metrics();
        sample(&m, "DCGM_FI_DEV_GPU_TEMP", &[("gpu", "3")])
            .is_none()
            .then_some(m)
    });
    assert!(sample(&metrics, "DCGM_FI_DEV_GPU_TEMP", &[("gpu", "4")]).is_some());
    assert_eq!(
        sample(&metrics, "muster_gpu_healthy", &[("gpu", "3")]),
        Some(0.0)
    );
    assert!(agent.is_running());
}

#[test]
fn a_malformed_fixture_is_a_clean_error_exit() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("broken.json");
    std::fs::write(&fixture, "{\"name\": \"broken\", \"gpus\": [").unwrap();
    let (status, log) = agent("broken", Some(fixture.to_str().unwrap()), &dir, "X").run_to_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("opening NVML"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn the_heartbeat_does_not_wait_for_collection_ticks() {
    let dir = tempfile::tempdir().unwrap();
    // One collection at start, then none for an hour: heartbeats still come.
    let agent = agent("beat-slow", Some("l4-pcie-2s"), &dir, "SR670")
        .arg("--interval")
        .arg("1h")
        .arg("--publish-interval")
        .arg("300ms")
        .start();
    agent.wait_for("three heartbeats", |a| {
        (writes(&a.state(), "gpuNode") >= 3).then_some(())
    });
    let m = agent.metrics();
    assert_eq!(sample(&m, "muster_agent_collections_total", &[]), Some(1.0));
}

#[test]
fn mig_instances_are_published_with_their_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let spec = builtin("a100-pcie-mig").unwrap().for_node("mig-node");
    let agent = agent("mig-node", Some("a100-pcie-mig"), &dir, &spec.machine).start();
    let state = agent.wait_for("a published GpuNode", |a| {
        let s = a.state();
        (writes(&s, "gpuNode") >= 1).then_some(s)
    });
    let gpus = state["gpuNode"]["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), spec.gpus.len());
    for (gpu, want) in gpus.iter().zip(&spec.gpus) {
        match &want.mig {
            Some(mig) => {
                assert_eq!(gpu["migEnabled"], true, "{gpu:#}");
                let devices = gpu["migDevices"].as_array().unwrap();
                assert_eq!(devices.len(), mig.instances as usize);
                assert!(devices.iter().all(|d| {
                    d["profile"]
                        .as_str()
                        .is_some_and(|p| p.contains(&mig.profile))
                        && d["uuid"].as_str().is_some_and(|u| u.starts_with("MIG-"))
                }));
            }
            None => assert_eq!(gpu["migEnabled"], false, "{gpu:#}"),
        }
    }
    assert_eq!(state["labels"]["nvidia.com/gpu.family"], "ampere");
}
