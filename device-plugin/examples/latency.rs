//! Measures the plugin against the fake kubelet, in-process, without NVML (devices from a
//! machine fixture): `Allocate` latency (GetPreferredAllocation + Allocate admissions, half of
//! them matching an annotated pod) and re-registration latency after simulated kubelet
//! restarts (socket deleted -> new `Register` received).
//!
//! `cargo run --release -p muster-device-plugin --example latency -- [admissions] [restarts]`

use muster_api::machines::builtin;
use muster_device_plugin::devices::DeviceList;
use muster_device_plugin::fake_kubelet::FakeKubelet;
use muster_device_plugin::pods::{PodInfo, PodStore};
use muster_device_plugin::{Plugin, PluginConfig};
use std::time::{Duration, Instant};

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let admissions: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let restarts: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let node = "bench-node";
    let machine = builtin("dgx1-v100")?.for_node(node);
    let list = DeviceList::from_machine(&machine);
    let uuids: Vec<String> = list.gpus.iter().map(|g| g.uuid.clone()).collect();
    let tmp = std::env::temp_dir().join(format!("dp-latency-{}", std::process::id()));
    let dir = tmp.join("device-plugins");
    let mut kubelet = FakeKubelet::start(&dir).await?;
    let pods = PodStore::new();
    let plugin = Plugin::new(PluginConfig::new(&dir, node), list)?
        .with_pods(pods.clone())
        .start()?;
    kubelet
        .wait_for_registrations(1, Duration::from_secs(10))
        .await?;

    let mut allocate = Vec::with_capacity(admissions);
    let mut admit = Vec::with_capacity(admissions);
    for i in 0..admissions {
        // Every other admission is a pod the scheduler annotated (then deleted, freeing its GPUs).
        let annotated = i % 2 == 0;
        let name = format!("p{i}");
        if annotated {
            pods.apply(PodInfo {
                namespace: "bench".into(),
                name: name.clone(),
                uid: name.clone(),
                node_name: Some(node.into()),
                gpu_ids: Some(vec![
                    uuids[1].clone(),
                    uuids[3].clone(),
                    uuids[5].clone(),
                    uuids[7].clone(),
                ]),
                gpu_node: Some(node.into()),
                since_ms: i as i64,
                ..PodInfo::default()
            });
        }
        let started = Instant::now();
        let a = kubelet.admit(&uuids, &[], 4).await?;
        admit.push(started.elapsed());
        allocate.push(a.allocate_time);
        if annotated {
            pods.delete(&format!("bench/{name}"));
        }
    }
    summary("Allocate (round trip over the unix socket)", allocate);
    summary("GetPreferredAllocation + Allocate", admit);

    let mut rereg = Vec::with_capacity(restarts);
    for round in 1..=restarts {
        let deleted = kubelet.restart().await?;
        let regs = kubelet
            .wait_for_registrations(round + 1, Duration::from_secs(30))
            .await?;
        rereg.push(regs[round].at.duration_since(deleted));
    }
    summary("re-registration after kubelet restart", rereg);
    plugin.shutdown().await?;
    kubelet.stop().await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
