//! Throughput benchmark: the same pods through plain kube-scheduler and through kube-scheduler
//! with Muster's extender, on kwok clusters of 8-GPU nodes, side by side in one run.
//!
//! `cargo run --release -p muster-e2e --example throughput -- [NODES] [GANGS] [GANG_SIZE]`
//! (defaults 1000 500 8). Each pod asks for one GPU; Muster's pods form gangs of GANG_SIZE
//! (annotation form), plain kube-scheduler's pods are identical but without gang or
//! schedulerName. Both schedulers get client QPS 1000 / burst 2000. Prints pods/s, p50/p99
//! time-to-bind, and the extender's per-verb p99 latency; writes JSON to out/bench/throughput.json.

#[path = "../tests/muster/mod.rs"]
mod muster;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use muster::*;
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const QPS: &str = "clientConnection:\n  qps: 1000\n  burst: 2000\n";

struct Run {
    name: &'static str,
    pods: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    extender_p99_ms: HashMap<String, f64>,
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nodes = args.first().copied().unwrap_or(1000) as u32;
    let gangs = args.get(1).copied().unwrap_or(500);
    let size = args.get(2).copied().unwrap_or(8);
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "muster-scheduler"])
        .current_dir(repo_root())
        .status()
        .expect("cargo build");
    assert!(status.success());
    println!("{nodes} nodes x 8 GPUs, {gangs} gangs x {size} pods x 1 GPU");
    let plain = run_plain(nodes, gangs, size).await;
    let muster = run_muster(nodes, gangs, size).await;
    println!();
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10}",
        "scheduler", "pods/s", "p50 bind", "p99 bind", "wall"
    );
    for r in [&plain, &muster] {
        println!(
            "{:<34} {:>10.1} {:>8.0}ms {:>8.0}ms {:>9.1}s",
            r.name,
            r.pods as f64 / r.seconds,
            r.p50_ms,
            r.p99_ms,
            r.seconds
        );
    }
    let ratio = (muster.pods as f64 / muster.seconds) / (plain.pods as f64 / plain.seconds);
    println!("muster / plain pods/s: {ratio:.2}x");
    for (verb, p99) in &muster.extender_p99_ms {
        println!("extender {verb} p99 <= {p99} ms");
    }
    let runs: Vec<serde_json::Value> = [&plain, &muster]
        .iter()
        .map(|r| {
            serde_json::json!({
                "scheduler": r.name, "pods": r.pods, "seconds": r.seconds,
                "pods_per_second": r.pods as f64 / r.seconds, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                "extender_p99_ms": r.extender_p99_ms,
            })
        })
        .collect();
    let json = serde_json::json!({"nodes": nodes, "gangs": gangs, "gang_size": size, "runs": runs, "ratio": ratio});
    let out = repo_root().join("out/bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join("throughput.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
}

async fn cluster(config: String, nodes: u32) -> TestCluster {
    let cluster = TestCluster::start(ClusterSpec::default().with_scheduler_config(config))
        .await
        .expect("cluster");
    let started = Instant::now();
    cluster
        .add_gpu_nodes(&NodeSpec::fixture("dgx-a100", nodes))
        .await
        .expect("nodes");
    println!(
        "  {nodes} nodes ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    cluster
}

async fn run_plain(nodes: u32, gangs: usize, size: usize) -> Run {
    println!("plain kube-scheduler:");
    let config = format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{QPS}"
    );
    let c = cluster(config, nodes).await;
    let pods: Vec<Pod> = (0..gangs * size)
        .map(|i| {
            let mut p = member(&format!("p-{i}"), Gang::None, 1, None);
            if let Some(s) = p.spec.as_mut() {
                s.scheduler_name = None;
            }
            p
        })
        .collect();
    let (seconds, p50, p99) = submit_and_measure(c.client(), pods).await;
    Run {
        name: "kube-scheduler (no gangs)",
        pods: gangs * size,
        seconds,
        p50_ms: p50,
        p99_ms: p99,
        extender_p99_ms: HashMap::new(),
    }
}

async fn run_muster(nodes: u32, gangs: usize, size: usize) -> Run {
    println!("kube-scheduler + Muster extender:");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let config = format!("{}{QPS}", scheduler_config(port));
    let c = cluster(config, nodes).await;
    install_crds(&c).await;
    let ext = Extender::start_release(&c, port);
    ext.ready().await;
    let pods: Vec<Pod> = (0..gangs)
        .flat_map(|g| {
            let name = format!("g{g}");
            (0..size)
                .map(|i| {
                    member(
                        &format!("g{g}-{i}"),
                        Gang::Annotation(&name, &size.to_string()),
                        1,
                        None,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let (seconds, p50, p99) = submit_and_measure(c.client(), pods).await;
    let metrics = http(ext.metrics_port, "GET", "/metrics", "")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    for name in [
        "muster_plan_duration_seconds_sum",
        "muster_plan_duration_seconds_count",
        "muster_fast_placements_total",
        "muster_nominations_total",
        "muster_gang_scheduling_attempts_total",
        "muster_bind_barrier_timeouts_total",
        "muster_extender_request_duration_seconds_count",
    ] {
        for line in metrics.lines().filter(|l| l.starts_with(name)) {
            println!("  {line}");
        }
    }
    Run {
        name: "kube-scheduler + muster (gangs)",
        pods: gangs * size,
        seconds,
        p50_ms: p50,
        p99_ms: p99,
        extender_p99_ms: ["filter", "prioritize", "bind"]
            .iter()
            .map(|v| (v.to_string(), histogram_p99_ms(&metrics, v)))
            .collect(),
    }
}

/// Creates the pods with 32 concurrent clients, then waits until all are bound; returns
/// (seconds from first create to last bind, p50 and p99 create-to-bind in ms).
async fn submit_and_measure(client: Client, pods: Vec<Pod>) -> (f64, f64, f64) {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let total = pods.len();
    let created: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch_bound = bound.clone();
    let watch_api = api.clone();
    let watcher_task = tokio::spawn(async move {
        let mut stream =
            std::pin::pin!(watcher(watch_api, watcher::Config::default()).applied_objects());
        while let Some(Ok(p)) = stream.next().await {
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && let Some(name) = p.metadata.name.clone()
            {
                let mut b = watch_bound.lock().unwrap_or_else(|e| e.into_inner());
                b.entry(name).or_insert_with(Instant::now);
                if b.len() >= total {
                    return;
                }
            }
        }
    });
    let start = Instant::now();
    futures::stream::iter(pods)
        .for_each_concurrent(32, |p| {
            let api = api.clone();
            let created = created.clone();
            async move {
                let name = p.metadata.name.clone().unwrap_or_default();
                created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, Instant::now());
                if let Err(e) = api.create(&PostParams::default(), &p).await {
                    eprintln!("create failed: {e}");
                }
            }
        })
        .await;
    println!(
        "  {total} pods created in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let _ = tokio::time::timeout(Duration::from_secs(900), watcher_task).await;
    let created = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let bound = bound.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let last = bound.values().max().copied().unwrap_or_else(Instant::now);
    let mut lat: Vec<f64> = bound
        .iter()
        .filter_map(|(n, t)| {
            created
                .get(n)
                .map(|c| t.duration_since(*c).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| {
        lat.get(((lat.len() as f64 * f) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!("  {} of {total} bound", bound.len());
    (last.duration_since(start).as_secs_f64(), q(0.5), q(0.99))
}

/// Upper bound of the bucket holding the 99th percentile of a verb's latency histogram.
fn histogram_p99_ms(metrics: &str, verb: &str) -> f64 {
    let prefix = "muster_extender_request_duration_seconds_bucket{";
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("verb=\"{verb}\"")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, c)| *c >= total * 0.99)
        .map(|(le, _)| le * 1000.0)
        .unwrap_or(0.0)
}
