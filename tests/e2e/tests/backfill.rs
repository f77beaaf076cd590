//! EASY backfilling through the real kube-scheduler: a starving gang's reservation is used by
//! a gang whose pods declare (`activeDeadlineSeconds`) that they end before it could start,
//! and by nobody else.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use muster::*;
use muster_crds::PodGroup;
use muster_testcluster::NodeSpec;
use serde_json::json;
use std::time::Duration;

/// `pod` with `spec.activeDeadlineSeconds`.
fn with_deadline(mut pod: Pod, secs: i64) -> Pod {
    if let Some(spec) = pod.spec.as_mut() {
        spec.active_deadline_seconds = Some(secs);
    }
    pod
}

fn waiting_message(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gang_that_ends_in_time_backfills_a_reservation_and_no_other_does() {
    // Reservations at once (no 30-minute wait), two 8-GPU nodes. Oldest first, so that the
    // short gang comes behind the reserving one and can only backfill (with the default
    // response-ratio order it would go ahead of it: the next test).
    let (cluster, ext) = muster_cluster(
        &[NodeSpec::fixture("dgx-a100", 2)],
        &["--reserve-after-seconds", "0", "--gang-order", "arrival"],
    )
    .await;
    let client = cluster.client();
    namespace(&client, "ml").await;

    // Running work that declares it ends within the hour: 8 GPUs on one node, 4 on the other.
    let mut running = gang("run8", 1, 8, Gang::Annotation("run8", "1"), None);
    running.extend(gang("run4", 1, 4, Gang::Annotation("run4", "1"), None));
    let running: Vec<Pod> = running
        .into_iter()
        .map(|p| with_deadline(p, 3600))
        .collect();
    create_pods(&client, "ml", running).await;
    wait_pods(&client, "ml", "run", "the running work bound", |p| {
        bound_count(p) == 2
    })
    .await;

    // A gang of two whole nodes: it cannot fit, so it reserves both nodes, and says so in its
    // PodGroup (kube-scheduler's own GPU count refuses its pods before the extender is asked).
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), "ml");
    let group = serde_json::from_value(json!({"apiVersion": "muster.dev/v1alpha1",
        "kind": "PodGroup", "metadata": {"name": "big"}, "spec": {"minMember": 2}}))
    .unwrap();
    groups.create(&PostParams::default(), &group).await.unwrap();
    create_pods(
        &client,
        "ml",
        gang("big", 2, 8, Gang::PodGroup("big"), None),
    )
    .await;
    let said = |g: &PodGroup| {
        g.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default()
    };
    let big = wait_podgroup(&groups, "big", |g| said(g).contains("holding 2 nodes")).await;
    assert!(
        said(&big).contains("gangs that declare they end sooner may use them"),
        "{}",
        said(&big)
    );

    // Behind it: a 4-GPU gang that declares nothing, then one that ends within 10 minutes.
    create_pods(
        &client,
        "ml",
        gang("long", 1, 4, Gang::Annotation("long", "1"), None),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later creation second
    let short: Vec<Pod> = gang("short", 1, 4, Gang::Annotation("short", "1"), None)
        .into_iter()
        .map(|p| with_deadline(p, 600))
        .collect();
    create_pods(&client, "ml", short).await;

    let short = wait_pods(&client, "ml", "short-", "the short gang backfilled", |p| {
        bound_count(p) == 1
    })
    .await;
    assert_eq!(
        node_of(&short[0]).as_deref(),
        node_of(
            &Api::<Pod>::namespaced(client.clone(), "ml")
                .get("run4-0")
                .await
                .unwrap()
        )
        .as_deref(),
        "the only free GPUs are beside run4"
    );
    // The same shape without a declared end was planned in the same rounds: it must wait.
    let long = wait_pods(&client, "ml", "long-", "the long gang explained", |p| {
        p.len() == 1 && !waiting_message(&p[0]).is_empty()
    })
    .await;
    assert_eq!(bound_count(&long), 0, "{}", waiting_message(&long[0]));
    let big = pods_with_prefix(&client, "ml", "big-").await;
    assert_eq!(bound_count(&big), 0, "{}", ext.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gang_declaring_a_short_run_goes_ahead_of_an_older_long_one() {
    // One 8-GPU node, held by running work; two whole-node gangs wait for it.
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 1)], &[]).await;
    let client = cluster.client();
    namespace(&client, "ml").await;
    create_pods(
        &client,
        "ml",
        gang("hold", 1, 8, Gang::Annotation("hold", "1"), None),
    )
    .await;
    wait_pods(&client, "ml", "hold", "the node held", |p| {
        bound_count(p) == 1
    })
    .await;

    // First a gang that declares 10 hours, a second later one that declares 10 minutes.
    let long: Vec<Pod> = gang("long", 1, 8, Gang::Annotation("long", "1"), None)
        .into_iter()
        .map(|p| with_deadline(p, 36_000))
        .collect();
    create_pods(&client, "ml", long).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later creation second
    let short: Vec<Pod> = gang("short", 1, 8, Gang::Annotation("short", "1"), None)
        .into_iter()
        .map(|p| with_deadline(p, 600))
        .collect();
    create_pods(&client, "ml", short).await;
    for name in ["long", "short"] {
        wait_pods(&client, "ml", name, "the gang explained", |p| {
            p.len() == 1 && !waiting_message(&p[0]).is_empty()
        })
        .await;
    }

    // The node frees: the short gang's response ratio, (waited + 600) / 600, is above the long
    // one's, (waited + 36000) / 36000, so it gets the node although it came later. Creation
    // times are whole seconds: until the short gang has waited a few, the long one's second
    // or two more of waiting could still outweigh it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    Api::<Pod>::namespaced(client.clone(), "ml")
        .delete("hold-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_pods(&client, "ml", "short-", "the short gang bound", |p| {
        bound_count(p) == 1
    })
    .await;
    let long = pods_with_prefix(&client, "ml", "long-").await;
    assert_eq!(bound_count(&long), 0, "{}", ext.log_tail());
}
