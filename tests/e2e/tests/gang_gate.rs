//! The gang gate (`muster_api::gate`, installed as the chart does): gang members are created
//! behind the scheduling gate `muster.dev/placement`, kube-scheduler never attempts them while
//! their gang is incomplete or has no room, the gated pods say why, and the scheduler lifts
//! the gate from whatever the API server shows once the gang is planned, restarts included.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use muster::*;
use muster_api::names::GATE_PLACEMENT;
use muster_testcluster::NodeSpec;
use std::time::Duration;

fn gated(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.name == GATE_PLACEMENT))
}

/// (reason, message) of the pod's PodScheduled condition.
fn scheduled_condition(p: &Pod) -> Option<(String, String)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// An incomplete gang stays behind the gate (kube-scheduler never attempts it: its condition
/// keeps the API server's `SchedulingGated`, with Muster's reason); once complete it is planned,
/// released and bound whole, and the gate is gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_incomplete_gang_waits_behind_the_gate_then_binds_whole() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "gate").await;
    let mut members = gang("g", 2, 8, Gang::Annotation("g", "2"), None);
    let second = members.pop().unwrap();
    create_pods(&client, "gate", members).await;
    let pods = wait_pods(&client, "gate", "g-", "the lone member explained", |p| {
        p.len() == 1
            && gated(&p[0])
            && scheduled_condition(&p[0]).is_some_and(|(_, m)| {
                m.contains("held by Muster") && m.contains("1 of the 2 required")
            })
    })
    .await;
    let (reason, message) = scheduled_condition(&pods[0]).unwrap();
    assert_eq!(
        reason, "SchedulingGated",
        "attempted by kube-scheduler: {message}"
    );
    stays_unbound(&client, "gate", "g-", Duration::from_secs(3)).await;
    let still = pods_with_prefix(&client, "gate", "g-").await;
    assert!(
        gated(&still[0]),
        "the gate was lifted from an incomplete gang"
    );

    create_pods(&client, "gate", vec![second]).await;
    let pods = wait_pods(&client, "gate", "g-", "both bound", |p| bound_count(p) == 2).await;
    assert!(pods.iter().all(|p| !gated(p)), "bound pods keep the gate");
    assert_ne!(node_of(&pods[0]), node_of(&pods[1]), "one whole node each");
    // Placed as its last member arrived (kube-scheduler never asks about gated pods), not
    // at the next spaced round.
    let fast = ext.metric("muster_fast_placements_total").await;
    assert!(
        fast >= 1.0,
        "the completed gang waited for a round: {fast} fast placements"
    );
}

/// A complete gang with no room stays gated with Muster's reason; when room appears it binds.
/// Single pods (no gang, or an annotation gang of one) are never gated.
#[tokio::test(flavor = "multi_thread")]
async fn a_gang_without_room_stays_gated_and_single_pods_are_not() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "gate").await;
    create_pods(&client, "gate", vec![member("solo", Gang::None, 8, None)]).await;
    let solo = wait_pods(&client, "gate", "solo", "single pod bound", |p| {
        bound_count(p) == 1
    })
    .await;
    assert!(!gated(&solo[0]));
    // A gang of one by annotation is a single pod too.
    create_pods(
        &client,
        "gate",
        vec![member("one", Gang::Annotation("one", "1"), 1, None)],
    )
    .await;
    let one = pods_with_prefix(&client, "gate", "one").await;
    assert!(!gated(&one[0]), "a gang of one was gated");

    create_pods(
        &client,
        "gate",
        gang("big", 2, 8, Gang::Annotation("big", "2"), None),
    )
    .await;
    wait_pods(&client, "gate", "big-", "the gang explained", |p| {
        p.len() == 2
            && p.iter().all(|p| {
                gated(p)
                    && scheduled_condition(p).is_some_and(|(r, m)| {
                        r == "SchedulingGated" && m.contains("held by Muster") && m.contains("GPU")
                    })
            })
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "gate");
    pods.delete("solo", &Default::default()).await.unwrap();
    pods.delete("one", &Default::default()).await.unwrap();
    wait_pods(
        &client,
        "gate",
        "big-",
        "the gang bound once room appeared",
        |p| bound_count(p) == 2 && p.iter().all(|p| !gated(p)),
    )
    .await;
}

/// Created while the scheduler is down, a complete gang stays gated (nothing else lifts the
/// gate); the restarted scheduler plans it from the API server and releases it whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_scheduler_releases_gangs_created_while_it_was_down() {
    let (cluster, mut ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "gate").await;
    ext.kill();
    create_pods(
        &client,
        "gate",
        gang("r", 2, 8, Gang::Annotation("r", "2"), None),
    )
    .await;
    stays_unbound(&client, "gate", "r-", Duration::from_secs(2)).await;
    assert!(
        pods_with_prefix(&client, "gate", "r-")
            .await
            .iter()
            .all(gated),
        "gated at creation"
    );
    ext.restart().await;
    wait_pods(&client, "gate", "r-", "bound after the restart", |p| {
        bound_count(p) == 2 && p.iter().all(|p| !gated(p))
    })
    .await;
}

/// A gang with more members than its minimum and room for the minimum only: the minimum binds,
/// the member beyond it stays gated saying so (kube-scheduler never attempts it, so nothing
/// else would), and takes the room a member leaves behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_beyond_the_minimum_without_room_says_why_then_takes_freed_room() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    namespace(&client, "gate").await;
    create_pods(
        &client,
        "gate",
        gang("ex", 3, 8, Gang::Annotation("ex", "2"), None),
    )
    .await;
    let pods = wait_pods(&client, "gate", "ex-", "the extra member explained", |p| {
        bound_count(p) == 2
            && p.iter().any(|p| {
                gated(p)
                    && scheduled_condition(p).is_some_and(|(r, m)| {
                        r == "SchedulingGated" && m.contains("beyond the gang's minimum of 2")
                    })
            })
    })
    .await;
    let bound = pods
        .iter()
        .find(|p| node_of(p).is_some())
        .and_then(|p| p.metadata.name.clone())
        .unwrap();
    let api: Api<Pod> = Api::namespaced(client.clone(), "gate");
    api.delete(&bound, &Default::default()).await.unwrap();
    wait_pods(
        &client,
        "gate",
        "ex-",
        "the extra member bound in the freed room",
        |p| p.len() == 2 && bound_count(p) == 2 && p.iter().all(|p| !gated(p)),
    )
    .await;
}
