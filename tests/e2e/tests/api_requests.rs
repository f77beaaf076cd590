//! What Muster asks of the API server to bind a pod, counted by the API server itself
//! (`apiserver_request_total`) and by the Events it stores. Every request is CPU on the
//! control plane that kube-scheduler competes for; the ones a gang's promise needs stay.

mod muster;

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use muster::*;
use muster_testcluster::{NodeSpec, TestCluster};

/// Binding requests the API server has answered so far: (dry runs, real ones).
async fn binding_requests(cluster: &TestCluster) -> (f64, f64) {
    let text = cluster
        .api_server_metrics()
        .await
        .expect("API server metrics");
    let (mut dry, mut real) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.contains("subresource=\"binding\"") || !labels.contains("verb=\"POST\"") {
            continue;
        }
        let value: f64 = value.trim().parse().expect("a counter's value");
        if labels.contains("dry_run=\"\"") {
            real += value;
        } else {
            dry += value;
        }
    }
    (dry, real)
}

async fn gang_scheduled_events(client: &kube::Client, ns: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default().fields("reason=GangScheduled"))
        .await
        .expect("list events")
        .items
}

/// A single pod (no gang, or an annotation gang of one) is bound by its Binding alone: one
/// Binding is all-or-nothing by itself, so a dry run first only doubles the requests, and
/// kube-scheduler's Scheduled event already says where it went. A gang's members are each
/// validated by a dry run before any is bound, and the gang gets one GangScheduled event.
#[tokio::test(flavor = "multi_thread")]
async fn single_pods_bind_with_one_request_and_gangs_validate_every_member() {
    let (cluster, _ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 3)], &[]).await;
    let client = cluster.client();
    namespace(&client, "requests").await;
    let (dry_before, real_before) = binding_requests(&cluster).await;

    create_pods(
        &client,
        "requests",
        vec![
            member("solo-a", Gang::None, 1, None),
            member("solo-b", Gang::Annotation("solo-b", "1"), 2, None),
        ],
    )
    .await;
    wait_pods(
        &client,
        "requests",
        "solo-",
        "both single pods bound",
        |p| bound_count(p) == 2,
    )
    .await;
    let (dry, real) = binding_requests(&cluster).await;
    assert_eq!(
        dry - dry_before,
        0.0,
        "single pods were validated by dry runs"
    );
    assert_eq!(real - real_before, 2.0, "one Binding per single pod");
    let events = gang_scheduled_events(&client, "requests").await;
    assert!(
        events.is_empty(),
        "GangScheduled events for single pods: {:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );

    create_pods(
        &client,
        "requests",
        gang("pair", 2, 8, Gang::Annotation("pair", "2"), None),
    )
    .await;
    wait_pods(&client, "requests", "pair-", "the gang bound", |p| {
        bound_count(p) == 2
    })
    .await;
    let (dry_after, real_after) = binding_requests(&cluster).await;
    assert_eq!(dry_after - dry, 2.0, "every gang member validated first");
    assert_eq!(real_after - real, 2.0, "one Binding per member");
    let events = gang_scheduled_events(&client, "requests").await;
    assert_eq!(events.len(), 1, "one GangScheduled event for the gang");
    let message = events[0].message.clone().unwrap_or_default();
    assert!(message.contains("requests/pair"), "{message}");
}

/// Single pods are never nominated: a nomination is one more pod status write each, and for a
/// pod kube-scheduler binds on its own the extender's filter already names the planned node.
/// Enough pods that background rounds plan many before kube-scheduler reaches them (those are
/// the ones that used to be nominated; a pod kube-scheduler asks about first never was).
/// (1,000-node throughput, Muster alone side by side: single pods 153 / 126 pods/s nominating,
/// 204 / 164 without.)
#[tokio::test(flavor = "multi_thread")]
async fn single_pods_are_not_nominated() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 30)], &[]).await;
    let client = cluster.client();
    namespace(&client, "nominations").await;
    // Created at once by 20 clients, as a burst of jobs would be.
    let creators = (0..20).map(|c| {
        let client = client.clone();
        let pods = (0..10)
            .map(|i| member(&format!("solo-{c}-{i}"), Gang::None, 1, None))
            .collect();
        async move { create_pods(&client, "nominations", pods).await }
    });
    futures::future::join_all(creators).await;
    wait_pods(
        &client,
        "nominations",
        "solo-",
        "every single pod bound",
        |p| bound_count(p) == 200,
    )
    .await;
    let nominated = ext
        .metric("muster_nominations_total{result=\"nominated\"}")
        .await;
    assert_eq!(nominated, 0.0, "single pods were nominated");
}
