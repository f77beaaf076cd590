//! Registration with the kubelet: exact fields, re-registration after a kubelet restart, clean
//! shutdown.

mod common;

use common::{DEADLINE, NODE, Setup, start};
use muster_device_plugin::proto;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_exact_fields_and_serves_before_registering() {
    let run = start(Setup::new("dgx1-v100")).await;
    let regs = run.kubelet.registrations();
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(
        regs[0].request,
        proto::RegisterRequest {
            version: "v1beta1".into(),
            // A file name, not a path: the kubelet joins it to its own directory.
            endpoint: "muster-gpu.sock".into(),
            resource_name: "nvidia.com/gpu".into(),
            options: Some(proto::DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        }
    );
    assert!(!regs[0].request.endpoint.contains('/'));
    // The socket existed when we registered: the fake kubelet connected back and got devices.
    let devices = run
        .kubelet
        .wait_for_devices(DEADLINE, |d| d.len() == 8)
        .await
        .unwrap();
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d.id, run.uuid(i));
        assert_eq!(d.health, "Healthy");
        let numa = if i < 4 { 0 } else { 1 };
        assert_eq!(
            d.topology,
            Some(proto::TopologyInfo {
                nodes: vec![proto::NumaNode { id: numa }]
            })
        );
    }
    // The kubelet records the request before the plugin sees the answer: wait for the latter.
    common::eventually(|| run.plugin.metrics.is_registered()).await;
    let mut client = run.kubelet.plugin().await.unwrap();
    let options = client
        .get_device_plugin_options(proto::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(options.get_preferred_allocation_available && !options.pre_start_required);
    assert!(
        run.uuid(0).starts_with("GPU-") && run.list.gpus.len() == 8,
        "{NODE}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_leads_to_re_registration() {
    let mut run = start(Setup::new("dgx1-v100")).await;
    let socket = run.config.socket_path();
    for round in 1..=3 {
        let deleted_at = run.kubelet.restart().await.unwrap();
        assert!(!socket.exists());
        let regs = run
            .kubelet
            .wait_for_registrations(round + 1, DEADLINE)
            .await
            .unwrap();
        let latency = regs[round].at.duration_since(deleted_at);
        // Measured, not asserted: the deadline above is the only bound.
        eprintln!("restart {round}: re-registered {latency:?} after the socket was deleted");
        assert_eq!(regs[round].request, regs[0].request);
        assert!(socket.exists(), "a fresh socket is served");
        // The new registration is usable: the kubelet gets the device list again.
        run.kubelet
            .wait_for_devices(DEADLINE, |d| d.len() == 8)
            .await
            .unwrap();
        let admitted = run.kubelet.admit(&run.uuids(), &[], 1).await.unwrap();
        assert_eq!(admitted.preferred.len(), 1);
    }
    common::eventually(|| run.plugin.metrics.registrations() == 4).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_the_socket_and_unregisters() {
    let run = start(Setup::new("dgx1-v100")).await;
    let socket = run.config.socket_path();
    assert!(socket.exists());
    let metrics = run.plugin.metrics.clone();
    let started = Instant::now();
    run.plugin.shutdown().await.unwrap();
    eprintln!("shutdown took {:?}", started.elapsed());
    assert!(!socket.exists(), "socket removed on shutdown");
    assert!(!metrics.is_registered());
    let text = metrics.render();
    assert!(text.contains("muster_device_plugin_registered 0"), "{text}");
    assert!(
        text.contains("muster_device_plugin_devices{health=\"Healthy\"} 8"),
        "{text}"
    );
    run.kubelet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_started_before_the_kubelet_registers_once_it_appears() {
    use muster_device_plugin::fake_kubelet::FakeKubelet;
    use muster_device_plugin::{Plugin, PluginConfig};
    let fake = common::nvml::FakeNvml::new();
    let (_inventory, list) = fake.devices("dgx1-v100", NODE);
    let tmp = tempfile::Builder::new().prefix("dp").tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let config = PluginConfig::new(&dir, NODE);
    let plugin = Plugin::new(config.clone(), list).unwrap().start().unwrap();
    // Serving already, registered not yet: nobody answers on kubelet.sock.
    common::eventually(|| config.socket_path().exists()).await;
    assert!(!plugin.metrics.is_registered());
    let kubelet = FakeKubelet::start(&dir).await.unwrap();
    let regs = kubelet.wait_for_registrations(1, DEADLINE).await.unwrap();
    assert_eq!(regs[0].request.endpoint, "muster-gpu.sock");
    common::eventually(|| plugin.metrics.is_registered()).await;
    plugin.shutdown().await.unwrap();
    kubelet.stop().await;
}
