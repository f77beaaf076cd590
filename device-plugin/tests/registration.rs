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
