//! The gang promise around preemption and leadership (issue 14): a gang ranks by its pods'
//! own priority whether it waits or runs; a victim gang is evicted whole or not at all; a
//! replica that loses leadership stops at once, barrier included.

mod muster;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use muster::*;
use muster_testcluster::NodeSpec;
use serde_json::json;
use std::time::{Duration, Instant};

async fn priority_class(client: &kube::Client, name: &str, value: i32) {
    let api: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    let pc = serde_json::from_value(json!({"metadata": {"name": name}, "value": value})).unwrap();
    api.create(&PostParams::default(), &pc).await.unwrap();
}

/// Bound pods of `prefix` stay bound (and not terminating) for `quiet`.
async fn stays_bound(client: &kube::Client, ns: &str, prefix: &str, n: usize, quiet: Duration) {
    let started = Instant::now();
    while started.elapsed() < quiet {
        let pods = pods_with_prefix(client, ns, prefix).await;
        let intact = pods
            .iter()
            .filter(|p| node_of(p).is_some() && p.metadata.deletion_timestamp.is_none())
            .count();
        assert_eq!(intact, n, "{prefix}: a member was evicted or lost");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Case 6: a PodGroup naming a high priority class does not lift pods whose own admission
/// gave them none; waiting, the gang ranks as it would running, so it does not preempt a
/// running gang of higher pod priority.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_cannot_grant_its_pods_a_priority_they_were_not_admitted_with() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    priority_class(&client, "mid", 100).await;
    priority_class(&client, "high", 1000).await;
    let running: Vec<Pod> = (0..2)
        .map(|i| {
            member(
                &format!("run-{i}"),
                Gang::Annotation("run", "2"),
                8,
                Some("mid"),
            )
        })
        .collect();
    create_pods(&client, "default", running).await;
    wait_pods(&client, "default", "run-", "running gang bound", |p| {
        bound_count(p) == 2
    })
    .await;

    let groups: Api<muster_crds::PodGroup> = Api::namespaced(client.clone(), "default");
    let pg = serde_json::from_value(
        json!({"apiVersion": "muster.dev/v1alpha1", "kind": "PodGroup",
        "metadata": {"name": "grab"}, "spec": {"minMember": 2, "priorityClassName": "high"}}),
    )
    .unwrap();
    groups.create(&PostParams::default(), &pg).await.unwrap();
    let grab: Vec<Pod> = (0..2)
        .map(|i| member(&format!("grab-{i}"), Gang::PodGroup("grab"), 8, None))
        .collect();
    create_pods(&client, "default", grab).await;
    stays_bound(&client, "default", "run-", 2, Duration::from_secs(12)).await;
    let grab = pods_with_prefix(&client, "default", "grab-").await;
    assert_eq!(bound_count(&grab), 0);
}

/// Case 7: a PodDisruptionBudget protects one member of the victim gang: evicting the
/// others would leave it broken, so none is evicted (and the preemptor waits).
#[tokio::test(flavor = "multi_thread")]
async fn a_victim_gang_one_member_of_which_a_budget_protects_is_not_evicted_at_all() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    priority_class(&client, "low", 10).await;
    priority_class(&client, "high", 1000).await;
    let mut victims: Vec<Pod> = (0..2)
        .map(|i| {
            member(
                &format!("low-{i}"),
                Gang::Annotation("low", "2"),
                8,
                Some("low"),
            )
        })
        .collect();
    victims[0]
        .metadata
        .labels
        .get_or_insert_default()
        .insert("protected".into(), "yes".into());
    create_pods(&client, "default", victims).await;
    wait_pods(&client, "default", "low-", "victim gang bound", |p| {
        bound_count(p) == 2
    })
    .await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    let pdb = serde_json::from_value(json!({"metadata": {"name": "protect"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"protected": "yes"}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    // The disruption controller must have counted the protected pod before evictions ask.
    let started = Instant::now();
    loop {
        let p = pdbs.get("protect").await.unwrap();
        if p.status
            .as_ref()
            .is_some_and(|s| s.current_healthy == Some(1))
        {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "PDB never observed its pod");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let preemptor: Vec<Pod> = (0..2)
        .map(|i| {
            member(
                &format!("hi-{i}"),
                Gang::Annotation("hi", "2"),
                8,
                Some("high"),
            )
        })
        .collect();
    create_pods(&client, "default", preemptor).await;
    stays_bound(&client, "default", "low-", 2, Duration::from_secs(12)).await;
    assert_eq!(
        ext.metric("muster_evictions_total{result=\"evicted\"}")
            .await,
        0.0,
        "{}",
        ext.log_tail()
    );
    assert!(
        ext.metric("muster_evictions_total{result=\"refused\"}")
            .await
            >= 1.0,
        "the preemption was never tried: {}",
        ext.log_tail()
    );
    assert_eq!(
        bound_count(&pods_with_prefix(&client, "default", "hi-").await),
        0
    );
}

/// Case 8: leadership moves away while a gang waits at the barrier: the replica stops at
/// once (the barrier is abandoned, nothing is bound, nothing more is decided); when it leads
/// again, the gang binds whole.
#[tokio::test(flavor = "multi_thread")]
async fn leadership_lost_at_the_barrier_binds_nothing_until_regained() {
    let (cluster, ext) =
        muster_cluster(&[NodeSpec::fixture("dgx-a100", 4)], FOLLOW_KUBE_SCHED).await;
    let client = cluster.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let own = format!("{}_6b0f1c1e", hostname());
    let lease = lease_held_by("kube-sched", &own);
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let lead = |want: f64| {
        let ext = &ext;
        async move {
            let started = Instant::now();
            while ext.metric("muster_leader").await != want {
                assert!(started.elapsed() < DEADLINE, "muster_leader never {want}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    lead(1.0).await;

    gang_at_barrier(&client, &ext, "default", "ld", 8).await;

    let set_holder = |holder: String| {
        let leases = leases.clone();
        async move {
            let patch = json!({"spec": {"holderIdentity": holder}});
            leases
                .patch("kube-sched", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    set_holder("another-pod_d00d".into()).await;
    lead(0.0).await;
    // Whatever kube-scheduler asks now, this replica decides nothing: the last member can be
    // scheduled, but the gang must not bind.
    create_bound_claim(&client, "default", "hold").await;
    stays_unbound(&client, "default", "ld-", Duration::from_secs(8)).await;
    assert_eq!(
        ext.metric("muster_bind_barrier_waiting_pods").await,
        0.0,
        "a follower kept members at its barrier"
    );

    set_holder(own).await;
    lead(1.0).await;
    wait_pods(
        &client,
        "default",
        "ld-",
        "gang bound whole after leading again",
        |p| bound_count(p) == 4,
    )
    .await;
}
