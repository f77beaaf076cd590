//! Muster Queues for the e2e tests: creating them, and waiting until the extender plans with
//! them.

use super::{DEADLINE, Extender, http};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use std::time::{Duration, Instant};

/// Creates a Muster `Queue` named `name` with this spec.
pub async fn muster_queue(client: &Client, name: &str, spec: serde_json::Value) {
    let api: Api<muster_crds::Queue> = Api::all(client.clone());
    let q = serde_json::from_value(json!({
        "apiVersion": "muster.dev/v1alpha1", "kind": "Queue",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("Queue json");
    api.create(&PostParams::default(), &q)
        .await
        .expect("create Queue");
}

/// Waits until the extender's rounds plan with these queues (their series are exported). A
/// Queue and a pod created right after it reach the extender through separate watches, so a
/// pod may be planned before its queue is seen: like users, tests create queues first and
/// submit work once the scheduler shows them.
pub async fn planned_with(ext: &Extender, queues: &[&str]) {
    let started = Instant::now();
    loop {
        let body = http(ext.metrics_port, "GET", "/metrics", "")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        let missing: Vec<&&str> = queues
            .iter()
            .filter(|q| !body.contains(&format!("muster_queue_running_gangs{{queue=\"{q}\"}}")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the extender never planned with queues {missing:?}: {}",
            ext.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
