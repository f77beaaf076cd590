//! The `muster-device-plugin` binary end to end without a cluster (`--no-kube`): flags, NVML from
//! `--nvml-lib`, registration with a fake kubelet, `/healthz` and `/metrics`, and a clean exit on
//! SIGTERM that removes the socket.

mod common;

use common::nvml::FakeNvml;
use common::{DEADLINE, eventually};
use muster_device_plugin::fake_kubelet::FakeKubelet;
use std::process::{Command, Stdio};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.0 GET (no client library needed for two probes).
async fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_registers_serves_metrics_and_exits_cleanly_on_sigterm() {
    let fake = FakeNvml::new();
    let tmp = tempfile::Builder::new().prefix("dpbin").tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    let kubelet = FakeKubelet::start(&dir).await.unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster-device-plugin"))
        .args(["--device-plugin-dir", dir.to_str().unwrap()])
        .args(["--nvml-lib", fake.lib.to_str().unwrap()])
        .args(["--node-name", "bin-node"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--driver-root", "/host", "--cdi", "--no-kube"])
        .env("MUSTER_FAKE_NVML_FIXTURE", "dgx1-v100")
        .env("MUSTER_FAKE_NVML_NODE", "bin-node")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let regs = kubelet.wait_for_registrations(1, DEADLINE).await.unwrap();
    assert_eq!(regs[0].request.endpoint, "muster-gpu.sock");
    let devices = kubelet
        .wait_for_devices(DEADLINE, |d| d.len() == 8)
        .await
        .unwrap();
    let machine = muster_api::machines::builtin("dgx1-v100")
        .unwrap()
        .for_node("bin-node");
    let uuids: Vec<String> = machine.gpus.iter().map(|g| g.uuid.clone()).collect();
    assert_eq!(
        devices.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        uuids
    );
    let admitted = kubelet.admit(&uuids, &[], 2).await.unwrap();
    assert_eq!(admitted.response.cdi_devices.len(), 2);
    assert!(admitted.response.devices[0].host_path == "/host/dev/nvidiactl");

    let healthz = get(port, "/healthz").await.unwrap();
    assert!(
        healthz.starts_with("HTTP/1.0 200") || healthz.starts_with("HTTP/1.1 200"),
        "{healthz}"
    );
    let metrics = get(port, "/metrics").await.unwrap();
    for line in [
        "muster_device_plugin_allocations_total 1",
        "muster_device_plugin_registered 1",
        "muster_device_plugin_devices{health=\"Healthy\"} 8",
        "muster_device_plugin_preferred_allocations_total{source=\"fallback\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }

    let socket = dir.join("muster-gpu.sock");
    assert!(socket.exists());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    eventually(|| matches!(child.try_wait(), Ok(Some(_)))).await;
    let exit = child.wait().unwrap();
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    assert!(exit.success(), "{exit:?}");
    assert!(!socket.exists(), "socket removed on SIGTERM");
    kubelet.stop().await;
}
