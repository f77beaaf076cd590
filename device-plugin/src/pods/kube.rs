//! The kube side of [`PodStore`]: a watch of the pods bound to this node (field selector
//! `spec.nodeName=<node>`, so the apiserver filters), and the patch that records an allocation.

use super::{PodInfo, PodStore};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use muster_api::names::{
    ANNOTATION_GPU_ALLOCATION, ANNOTATION_GPU_IDS, ANNOTATION_GPU_NODE, GPU_ALLOCATION_DONE,
};
use std::time::Duration;
use tokio::sync::mpsc;

/// The fields the plugin uses, from a pod object.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let annotations = meta.annotations.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    let scheduled_ms = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_millisecond());
    let created_ms = meta
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond());
    Some(PodInfo {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
        uid: meta.uid.clone().unwrap_or_default(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        gpu_ids: annotation(ANNOTATION_GPU_IDS).map(PodInfo::parse_gpu_ids),
        gpu_node: annotation(ANNOTATION_GPU_NODE).map(str::to_string),
        allocated: annotation(ANNOTATION_GPU_ALLOCATION) == Some(GPU_ALLOCATION_DONE),
        terminated: matches!(phase, Some("Succeeded" | "Failed"))
            || meta.deletion_timestamp.is_some(),
        since_ms: scheduled_ms.or(created_ms).unwrap_or(0),
    })
}

/// Keeps `store` in step with the pods bound to `node` until the task is dropped. Watch errors
/// are retried with backoff (the store keeps its last view meanwhile).
pub async fn watch_node_pods(client: Client, node: String, store: PodStore) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut buffer: Vec<PodInfo> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(pod)) => buffer.extend(pod_info(&pod)),
            Ok(Event::InitDone) => {
                tracing::debug!(node, pods = buffer.len(), "pod watch (re)listed");
                store.replace_all(std::mem::take(&mut buffer));
            }
            Ok(Event::Apply(pod)) => {
                if let Some(info) = pod_info(&pod) {
                    store.apply(info);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) {
                    store.delete(&format!("{ns}/{name}"));
                }
            }
            Err(e) => tracing::warn!(node, error = %e, "pod watch error; retrying"),
        }
    }
}

/// A pod whose allocation should be recorded on the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Patches `muster.dev/gpu-allocation: allocated` on each pod received. Runs off the `Allocate`
/// path: the allocation is already recorded in memory, the patch tells everyone else. A failed
/// patch is retried a few times, then logged (the in-memory record still protects the GPUs).
pub async fn record_allocations(client: Client, mut rx: mpsc::UnboundedReceiver<AllocatedPod>) {
    while let Some(pod) = rx.recv().await {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        let mut patch = serde_json::json!({
            "metadata": {"annotations": {ANNOTATION_GPU_ALLOCATION: GPU_ALLOCATION_DONE}}
        });
        // The uid acts as a precondition: a re-created pod of the same name is not marked.
        if !pod.uid.is_empty() {
            patch["metadata"]["uid"] = serde_json::Value::String(pod.uid.clone());
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match api
                .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), "pod marked allocated");
                    break;
                }
                Err(e) if attempt == 5 => {
                    tracing::error!(pod = %pod.name, namespace = %pod.namespace, error = %e, "could not mark pod allocated");
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name, attempt, error = %e, "marking pod allocated failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reads_the_scheduler_contract_from_a_pod() {
        let info = pod(serde_json::json!({
            "metadata": {
                "namespace": "ml", "name": "w-0", "uid": "u1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {
                    ANNOTATION_GPU_IDS: "GPU-a, GPU-b,,GPU-c",
                    ANNOTATION_GPU_NODE: "n1",
                    ANNOTATION_GPU_ALLOCATION: GPU_ALLOCATION_DONE
                }
            },
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}
            ]}
        }));
        let info = pod_info(&info).unwrap();
        assert_eq!(info.key(), "ml/w-0");
        assert_eq!(
            info.gpu_ids,
            Some(vec!["GPU-a".into(), "GPU-b".into(), "GPU-c".into()])
        );
        assert_eq!(info.gpu_node.as_deref(), Some("n1"));
        assert!(info.allocated && info.is_live());
        // Bound time, not creation time, orders candidates.
        assert_eq!(info.since_ms, 1_767_225_605_000);
    }

    #[test]
    fn finished_or_deleting_pods_are_not_live() {
        let done = pod(serde_json::json!({
            "metadata": {"namespace": "ml", "name": "a"},
            "status": {"phase": "Succeeded"}
        }));
        assert!(!pod_info(&done).unwrap().is_live());
        let deleting = pod(serde_json::json!({
            "metadata": {"namespace": "ml", "name": "b", "deletionTimestamp": "2026-01-01T00:00:00Z"}
        }));
        let info = pod_info(&deleting).unwrap();
        assert!(!info.is_live() && info.gpu_ids.is_none() && !info.allocated);
    }
}
