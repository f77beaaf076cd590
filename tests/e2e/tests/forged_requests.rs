//! Issue 15: a process that is not kube-scheduler forges extender calls. Muster answers only
//! for pods its cache holds, with the same UID, that opted into Muster; it plans them from the
//! cache's copy (never from the request's), and binds nothing on a forged request.

mod muster;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use muster::*;
use muster_testcluster::NodeSpec;
use serde_json::{Value, json};
use std::time::Duration;

/// A forged `/filter` for `pod` (as JSON, possibly edited) against every node; the node
/// names Muster accepted.
async fn forged_filter(ext: &Extender, pod: &Value, nodes: &[String]) -> Vec<String> {
    let body = json!({"Pod": pod, "NodeNames": nodes}).to_string();
    let (status, answer) = http(ext.port, "POST", "/filter", &body)
        .await
        .expect("filter call");
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("filter answer");
    answer["NodeNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A forged `/bind`; the extender's error (empty when it bound).
async fn forged_bind(ext: &Extender, ns: &str, name: &str, uid: &str, node: &str) -> String {
    let body = json!({"PodName": name, "PodNamespace": ns, "PodUID": uid, "Node": node});
    let (status, answer) = http(ext.port, "POST", "/bind", &body.to_string())
        .await
        .expect("bind call");
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("bind answer");
    answer["Error"].as_str().unwrap_or_default().to_string()
}

async fn node_names(client: &Client) -> Vec<String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .list(&Default::default())
        .await
        .expect("nodes")
        .items
        .iter()
        .map(|n| n.name_any())
        .collect()
}

async fn created(client: &Client, ns: &str, pod: Pod) -> Value {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = api.create(&PostParams::default(), &pod).await.expect("pod");
    // Give the extender's watch time to see it: the refusals below must not be a lag.
    tokio::time::sleep(Duration::from_secs(2)).await;
    serde_json::to_value(pod).expect("pod json")
}

async fn assert_unbound(client: &Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = api.get(name).await.expect("pod");
    assert_eq!(node_of(&pod), None, "{name} was bound by a forged request");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_filter_and_bind_bind_nothing() {
    let (cluster, ext) = muster_cluster(&[NodeSpec::fixture("dgx-a100", 2)], &[]).await;
    let client = cluster.client();
    let ns = "forged";
    namespace(&client, ns).await;
    let nodes = node_names(&client).await;

    // 1. A pod of another scheduler (nobody schedules it here), with its real UID.
    let mut other = member("other-0", Gang::None, 1, None);
    other.spec.as_mut().unwrap().scheduler_name = Some("someone-else".into());
    let other = created(&client, ns, other).await;
    let uid = other["metadata"]["uid"].as_str().unwrap().to_string();
    let mut as_ours = other.clone();
    as_ours["spec"]["schedulerName"] = json!("muster");
    for forged in [&other, &as_ours] {
        let accepted = forged_filter(&ext, forged, &nodes).await;
        assert!(
            accepted.is_empty(),
            "filter accepted {accepted:?} for another scheduler's pod"
        );
    }
    let error = forged_bind(&ext, ns, "other-0", &uid, &nodes[0]).await;
    assert!(
        !error.is_empty(),
        "bind of another scheduler's pod was accepted"
    );
    assert_unbound(&client, ns, "other-0").await;

    // 2. A Muster pod waiting for its gang (minimum 2, one member): forged with a wrong UID,
    //    and with its real UID but a minimum of 1.
    let waiting = created(
        &client,
        ns,
        member("gang-0", Gang::Annotation("g", "2"), 1, None),
    )
    .await;
    let real_uid = waiting["metadata"]["uid"].as_str().unwrap().to_string();
    let mut wrong_uid = waiting.clone();
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
    wrong_uid["metadata"]["annotations"]["muster.dev/min-available"] = json!("1");
    let mut edited = waiting.clone();
    edited["metadata"]["annotations"]["muster.dev/min-available"] = json!("1");
    for (what, forged) in [("wrong UID", &wrong_uid), ("edited minimum", &edited)] {
        let accepted = forged_filter(&ext, forged, &nodes).await;
        assert!(accepted.is_empty(), "{what}: filter accepted {accepted:?}");
    }
    for uid in ["00000000-0000-0000-0000-000000000001", real_uid.as_str()] {
        let error = forged_bind(&ext, ns, "gang-0", uid, &nodes[0]).await;
        assert!(!error.is_empty(), "bind with UID {uid} was accepted");
    }
    assert_unbound(&client, ns, "gang-0").await;
    assert!(
        ext.log_contains("not in Muster's cache") || ext.log_contains("forged"),
        "refusals are logged: {}",
        ext.log_tail()
    );

    // The real gang still schedules once it is complete: the refusals broke nothing.
    create_pods(
        &client,
        ns,
        vec![member("gang-1", Gang::Annotation("g", "2"), 1, None)],
    )
    .await;
    wait_pods(&client, ns, "gang-", "the real gang bound", |p| {
        bound_count(p) == 2
    })
    .await;
}
