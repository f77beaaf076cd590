//! Leader election: two extender replicas never both decide, and the survivor takes over.
//!
//! kube-scheduler calls replica A's port. While B holds the Lease, A answers "not the leader"
//! and binds nothing; when the leader dies, the other replica takes over within the lease
//! duration and the waiting gang binds whole. The follow mode (the chart's: lead exactly while
//! this pod's kube-scheduler holds its Lease) is checked against a Lease edited by hand.

mod muster;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use muster::*;
use muster_testcluster::NodeSpec;
use std::time::{Duration, Instant};

const HOLD: &[&str] = &["--leader-elect", "true", "--lease-namespace", "default"];

/// Waits until the replica's `muster_leader` gauge reads `want`.
async fn wait_leader(ext: &Extender, want: f64, what: &str) {
    let started = Instant::now();
    eprintln!("waiting: {what} -> muster_leader {want}");
    while ext.metric("muster_leader").await != want {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: muster_leader never became {want}; log: {}",
            ext.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("  {what}: {:.1}s", started.elapsed().as_secs_f64());
}

fn gang(prefix: &str, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            member(
                &format!("{prefix}-{i}"),
                Gang::Annotation(prefix, &n.to_string()),
                8,
                None,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_never_both_decide_and_the_survivor_takes_over() {
    let (cluster, mut a) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], HOLD).await;
    let client = cluster.client();
    wait_leader(&a, 1.0, "first replica").await;

    // A second replica on another port stays a follower while A renews.
    let port_b = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let b = Extender::start(&cluster, port_b, HOLD);
    b.ready().await;
    for _ in 0..12 {
        assert_eq!(b.metric("muster_leader").await, 0.0, "two leaders at once");
        assert_eq!(
            a.metric("muster_leader").await,
            1.0,
            "leader lost its lease"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    create_pods(&client, "default", gang("first", 2)).await;
    wait_pods(&client, "default", "first-", "first gang bound", |p| {
        p.len() == 2 && bound_count(p) == 2
    })
    .await;
    assert_eq!(
        b.metric("muster_gang_scheduling_attempts_total").await,
        0.0,
        "the follower planned"
    );

    // A dies; B takes over within the lease duration. A restarts as a follower: the pods
    // kube-scheduler sends it are told to wait, and nothing binds.
    a.kill();
    wait_leader(&b, 1.0, "survivor").await;
    a.restart().await;
    wait_leader(&a, 0.0, "restarted replica").await;
    create_pods(&client, "default", gang("second", 2)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    loop {
        let p = pods.get("second-0").await.unwrap();
        let message = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        if message.contains("not the leader") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "follower never said it is not the leader: {message:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let now = pods_with_prefix(&client, "default", "second-").await;
    assert_eq!(bound_count(&now), 0, "a follower bound pods");

    // B dies; A leads again and the waiting gang binds whole.
    drop(b);
    wait_leader(&a, 1.0, "restarted replica after the leader died").await;
    wait_pods(&client, "default", "second-", "second gang bound", |p| {
        p.len() == 2 && bound_count(p) == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_mode_leads_exactly_while_this_hosts_kube_scheduler_holds_the_lease() {
    let (cluster, ext) = muster_cluster(&[], FOLLOW_KUBE_SCHED).await;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), "default");
    wait_leader(&ext, 0.0, "no lease yet").await;

    // The extender's hostname is kube-scheduler's identity prefix (`<hostname>_<uuid>`).
    let host = hostname();
    let lease = lease_held_by("kube-sched", &format!("{host}_6b0f1c1e"));
    leases.create(&PostParams::default(), &lease).await.unwrap();
    wait_leader(&ext, 1.0, "own kube-scheduler leads").await;

    let other = serde_json::json!({"spec": {"holderIdentity": "another-pod_d00d"}});
    leases
        .patch("kube-sched", &PatchParams::default(), &Patch::Merge(&other))
        .await
        .unwrap();
    wait_leader(&ext, 0.0, "another pod's kube-scheduler leads").await;
}
