//! Writes to the API server: releasing a gang (Bindings carrying the GPU choice), evictions.

use super::Slot;
use super::status::Reporter;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{EvictParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use muster_api::names;
use muster_core::GangKey;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Binds every member concurrently and answers each waiting bind call. Each Binding carries
/// the GPU choice as annotations, which the API server copies onto the pod in the same write
/// that sets its node, so the device plugin never sees a bound pod without its GPUs.
pub(super) async fn release(
    client: Client,
    gang: GangKey,
    slots: Vec<(String, Slot)>,
    mut waiters: HashMap<String, oneshot::Sender<Result<(), String>>>,
    reporter: Reporter,
) {
    let binds = slots.iter().map(|(uid, slot)| {
        let client = client.clone();
        async move { (uid.clone(), bind_one(client, slot).await) }
    });
    let results = futures::future::join_all(binds).await;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    for (uid, result) in results {
        if let Err(e) = &result {
            tracing::warn!(%gang, pod = uid, error = %e, "binding gang member failed");
        }
        if let Some(tx) = waiters.remove(&uid) {
            let _ = tx.send(result);
        }
    }
    if failed == 0 {
        let nodes: std::collections::BTreeSet<&str> =
            slots.iter().map(|(_, s)| s.node.as_str()).collect();
        tracing::info!(%gang, members = slots.len(), nodes = nodes.len(), "gang bound");
        // One event per gang, on its first member by name: kube-scheduler already records a
        // Scheduled event per pod, and the GPUs are on each pod's annotation.
        if let Some((_, first)) = slots.iter().min_by(|a, b| a.1.name.cmp(&b.1.name)) {
            let note = format!(
                "gang {gang}: all {} members bound together on {} node(s): {}",
                slots.len(),
                nodes.len(),
                nodes.iter().copied().collect::<Vec<_>>().join(",")
            );
            reporter
                .pod_event(&first.namespace, &first.name, "GangScheduled", "Bind", note)
                .await;
        }
    }
}

async fn bind_one(client: Client, slot: &Slot) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client, &slot.namespace);
    let annotations = (!slot.gpu_ids.is_empty()).then(|| {
        std::collections::BTreeMap::from([
            (
                names::ANNOTATION_GPU_IDS.to_string(),
                slot.gpu_ids.join(","),
            ),
            (names::ANNOTATION_GPU_NODE.to_string(), slot.node.clone()),
        ])
    });
    let binding = Binding {
        metadata: kube::api::ObjectMeta {
            name: Some(slot.name.clone()),
            namespace: Some(slot.namespace.clone()),
            annotations,
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(slot.node.clone()),
            ..Default::default()
        },
    };
    pods.create_subresource::<Binding, serde_json::Value>(
        "binding",
        &slot.name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        format!(
            "binding {}/{} to {}: {e}",
            slot.namespace, slot.name, slot.node
        )
    })
}

/// Evicts victim pods (whole gangs) through the Eviction API, honouring PodDisruptionBudgets.
pub(super) async fn evict(
    client: Client,
    preemptor: GangKey,
    victims: Vec<(String, String, GangKey)>,
    metrics: Metrics,
    reporter: Reporter,
) {
    for (ns, name, gang) in victims {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match pods.evict(&name, &EvictParams::default()).await {
            Ok(_) => {
                metrics.evictions.with_label_values(&["evicted"]).inc();
                tracing::info!(victim = %gang, pod = %name, preemptor = %preemptor, "evicted");
                let note =
                    format!("gang {gang} preempted whole by higher-priority gang {preemptor}");
                reporter
                    .pod_event(&ns, &name, "Preempted", "Evict", note)
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                metrics.evictions.with_label_values(&["gone"]).inc();
            }
            Err(e) => {
                metrics.evictions.with_label_values(&["failed"]).inc();
                tracing::warn!(victim = %gang, pod = %name, error = %e, "eviction failed; retried on a later round");
            }
        }
    }
}

/// Touches waiting members of a newly planned gang so kube-scheduler retries them now instead
/// of after its unschedulable-queue timeout.
pub(super) async fn nudge(client: Client, pods: Vec<(String, String, String)>) {
    for (ns, name, node) in pods {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch =
            serde_json::json!({"metadata": {"annotations": {"muster.dev/planned-node": node}}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "nudging planned pod");
        }
    }
}

/// Sets `status.nominatedNodeName` on planned members kube-scheduler has not asked about yet.
/// kube-scheduler tries a pod's nominated node first and alone, so the member is filtered on
/// one node (in-tree plugins and the extender) instead of on every node of the cluster. If
/// the plan is later dropped, kube-scheduler's next failed attempt clears the nomination.
pub(super) async fn nominate(
    client: Client,
    pods: Vec<(String, String, String)>,
    metrics: Metrics,
) {
    let writes = pods.into_iter().map(|(ns, name, node)| {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let metrics = metrics.clone();
        async move {
            let patch = serde_json::json!({"status": {"nominatedNodeName": node}});
            let result = match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => "nominated",
                // Bound or deleted meanwhile: nothing to nominate.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => "gone",
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "nominating planned node failed");
                    "failed"
                }
            };
            metrics.nominations.with_label_values(&[result]).inc();
        }
    });
    futures::future::join_all(writes).await;
}
