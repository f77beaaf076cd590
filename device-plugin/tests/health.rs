//! Health from scripted XIDs reaches the kubelet through ListAndWatch, and unhealthy GPUs are
//! refused by Allocate.

mod common;

use common::nvml::fixture_with_script;
use common::{DEADLINE, Setup, start};
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xid_on_one_gpu_marks_only_that_device_unhealthy_and_allocate_refuses_it() {
    // At 4x speed: XID 13 (an application error: stays healthy) on GPU 1 after 0.5 s, XID 79
    // (fallen off the bus) on GPU 5 after 1 s.
    let script = json!([
        {"atSeconds": 2.0, "gpu": 1, "xid": 13},
        {"atSeconds": 4.0, "gpu": 5, "xid": 79}
    ]);
    let mut setup = Setup::new(&fixture_with_script("dgx1-v100", script));
    setup.health = true;
    setup.time_scale = Some("4");
    let run = start(setup).await;
    let sick = run.uuid(5);

    let initial = run
        .kubelet
        .wait_for_devices(DEADLINE, |d| d.len() == 8)
        .await
        .unwrap();
    assert!(initial.iter().all(|d| d.health == "Healthy"), "{initial:?}");

    let after = run
        .kubelet
        .wait_for_devices(DEADLINE, |d| d.iter().any(|x| x.health == "Unhealthy"))
        .await
        .unwrap();
    let unhealthy: Vec<&str> = after
        .iter()
        .filter(|d| d.health == "Unhealthy")
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(unhealthy, vec![sick.as_str()]);
    assert_eq!(after.len(), 8, "every device is still listed");

    // Allocate refuses it with a clear reason...
    let mut client = run.kubelet.plugin().await.unwrap();
    let err = run
        .kubelet
        .allocate(&mut client, &[run.uuid(4), sick.clone()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&sick)
            && err.message().contains("unhealthy")
            && err.message().contains("XID 79"),
        "{}",
        err.message()
    );
    // ...and keeps serving the healthy ones, on the same connection.
    let ok = run
        .kubelet
        .allocate(&mut client, &[run.uuid(4)])
        .await
        .unwrap();
    assert_eq!(ok.envs["NVIDIA_VISIBLE_DEVICES"], run.uuid(4));
    let text = run.plugin.metrics.render();
    assert!(
        text.contains("muster_device_plugin_devices{health=\"Unhealthy\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "muster_device_plugin_allocation_errors_total{reason=\"unhealthy_device\"} 1"
        ),
        "{text}"
    );
    run.stop().await;
}
