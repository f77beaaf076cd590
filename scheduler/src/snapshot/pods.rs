//! Pods as the core sees them: requests, node selection, tolerations, GPU annotations.

use super::nodes::effect;
use crate::cache::Cache;
pub use crate::gang::{carries_placement_gate, is_gated};
use crate::resources::pod_requests;
use k8s_openapi::api::core::v1::Pod;
use muster_api::names;
use muster_core::{LabelRequirement, PodId, PodRequest, Toleration};
use std::collections::HashMap;

/// A pod waiting for placement, as the core sees it.
pub struct PendingMember {
    pub request: PodRequest,
    /// Why the pod's requests cannot be counted (its gang cannot be planned), if so.
    pub invalid: Option<String>,
    pub priority: i32,
    pub can_preempt: bool,
    /// The pod's `activeDeadlineSeconds`: the kubelet stops it that long after it starts, so
    /// the scheduler may count on it (an annotation could lie to jump a reservation).
    pub runtime_limit: Option<u64>,
}

pub fn pending_member(cache: &Cache, pod: &Pod, uid: String) -> PendingMember {
    let spec = pod.spec.as_ref();
    let requests = cached_requests(cache, pod);
    PendingMember {
        invalid: requests.as_ref().err().map(|e| {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            format!("pod {name} cannot be placed: {e}")
        }),
        request: PodRequest {
            id: PodId::new(uid),
            resources: requests.unwrap_or_default(),
            selector: selector(pod),
            node_terms: super::affinity::node_terms(pod),
            tolerations: tolerations(pod),
            one_per_node: super::affinity::one_per_node(pod),
        },
        priority: spec.and_then(|s| s.priority).unwrap_or(0),
        can_preempt: spec.and_then(|s| s.preemption_policy.as_deref()) != Some("Never"),
        runtime_limit: runtime_limit(pod),
    }
}

/// Seconds the kubelet lets `pod` run once started (`spec.activeDeadlineSeconds`; the API
/// server refuses values below 1).
pub fn runtime_limit(pod: &Pod) -> Option<u64> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    u64::try_from(secs).ok().filter(|&s| s > 0)
}

/// When a bound `pod` will have been stopped by its deadline: from its start (or `now`, if
/// the kubelet has not started it yet, which only moves the bound later).
pub fn ends_by(pod: &Pod, now: u64) -> Option<u64> {
    let limit = runtime_limit(pod)?;
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(now, |t| created_secs(Some(t)));
    Some(start.saturating_add(limit))
}

pub(crate) fn created_secs(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> u64 {
    t.map(|t| t.0.as_second().max(0) as u64).unwrap_or(0)
}

/// GPU indices named by the scheduler's annotation. The annotation is only believed when it is
/// for this node and every UUID is one of its GPUs, once: anything else is ignored (the pod's
/// GPUs still count, just not on particular indices), and the reason returned for a warning.
pub(super) fn annotated_gpus(
    pod: &Pod,
    node: &str,
    ids: Option<&Vec<String>>,
) -> Result<Vec<u32>, String> {
    let annotations = pod.metadata.annotations.as_ref();
    let (Some(value), Some(ids)) = (
        annotations.and_then(|a| a.get(names::ANNOTATION_GPU_IDS)),
        ids,
    ) else {
        return Ok(Vec::new());
    };
    if let Some(other) = annotations.and_then(|a| a.get(names::ANNOTATION_GPU_NODE))
        && other != node
    {
        return Err(format!(
            "its GPU choice is for node {other}, but it is bound to {node}"
        ));
    }
    let mut found: Vec<u32> = Vec::new();
    for uuid in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(index) = ids.iter().position(|id| id == uuid) else {
            return Err(format!("GPU {uuid} is not on node {node}"));
        };
        let index = u32::try_from(index).map_err(|_| format!("GPU index {index} out of range"))?;
        if found.contains(&index) {
            return Err(format!("GPU {uuid} is named twice"));
        }
        found.push(index);
    }
    Ok(found)
}

/// Warns that a bound pod's GPU annotation was ignored, once per pod (rounds read every pod).
pub(super) fn warn_once(cache: &Cache, pod: &Pod, why: &str) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    let mut warned = cache
        .annotation_warnings
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Bounded: a flood of bad pods costs repeated warnings, never memory.
    if warned.len() >= 10_000 {
        warned.clear();
    }
    if warned.insert(uid.to_string()) {
        tracing::warn!(
            namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod = pod.metadata.name.as_deref().unwrap_or_default(),
            reason = why,
            "ignoring the pod's muster.dev/gpu-ids annotation"
        );
    }
}

/// A pod's requests, memoised on its resourceVersion (rounds read every pod).
pub(super) fn cached_requests(cache: &Cache, pod: &Pod) -> crate::cache::Requests {
    let (Some(uid), Some(rv)) = (
        pod.metadata.uid.as_deref(),
        pod.metadata.resource_version.as_deref(),
    ) else {
        return pod_requests(pod);
    };
    let mut memo = cache.pod_requests.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, r)) = memo.get(uid)
        && k == rv
    {
        return r.clone();
    }
    let r = pod_requests(pod);
    memo.insert(uid.to_string(), (rv.to_string(), r.clone()));
    r
}

/// Drops memo entries of deleted objects once they are a noticeable share of the memo.
pub(super) fn forget_deleted<V>(
    memo: &std::sync::Mutex<HashMap<String, V>>,
    live: usize,
    exists: impl Fn(&str) -> bool,
) {
    let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
    if memo.len() > live + live / 4 + 64 {
        memo.retain(|k, _| exists(k));
    }
}

/// `nodeSelector` as requirements every node must meet.
pub(super) fn selector(pod: &Pod) -> Vec<LabelRequirement> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| LabelRequirement::equals(k.clone(), v.clone()))
        .collect()
}

pub(crate) fn tolerations(pod: &Pod) -> Vec<Toleration> {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| Toleration {
                    key: t.key.clone().filter(|k| !k.is_empty()),
                    value: match t.operator.as_deref() {
                        Some("Exists") => None,
                        _ => Some(t.value.clone().unwrap_or_default()),
                    },
                    effect: t.effect.as_deref().and_then(effect),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gated_by(gates: &[&str]) -> Pod {
        let gates: Vec<_> = gates.iter().map(|g| json!({"name": g})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [], "schedulingGates": gates},
        }))
        .unwrap()
    }

    /// Muster's own gate waits for planning, so it never keeps a pod out of it; any other
    /// gate (a queue's) does, with or without Muster's beside it.
    #[test]
    fn only_gates_of_others_keep_a_pod_out_of_planning() {
        let ours = gated_by(&[names::GATE_PLACEMENT]);
        assert!(!is_gated(&ours) && carries_placement_gate(&ours));
        let both = gated_by(&["kueue.x-k8s.io/admission", names::GATE_PLACEMENT]);
        assert!(is_gated(&both) && carries_placement_gate(&both));
        let theirs = gated_by(&["kueue.x-k8s.io/admission"]);
        assert!(is_gated(&theirs) && !carries_placement_gate(&theirs));
        let none = gated_by(&[]);
        assert!(!is_gated(&none) && !carries_placement_gate(&none));
    }

    fn with_deadline(deadline: Option<i64>, start_time: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [], "activeDeadlineSeconds": deadline},
            "status": {"startTime": start_time},
        }))
        .unwrap()
    }

    #[test]
    fn the_runtime_limit_is_the_pods_active_deadline_counted_from_its_start() {
        let started = with_deadline(Some(600), Some("1970-01-01T00:16:40Z"));
        assert_eq!(runtime_limit(&started), Some(600));
        assert_eq!(ends_by(&started, 5000), Some(1000 + 600));
        // Bound but not started yet: the deadline runs from some time after now.
        let waiting = with_deadline(Some(600), None);
        assert_eq!(ends_by(&waiting, 5000), Some(5600));
        assert_eq!(runtime_limit(&with_deadline(None, None)), None);
        // The API server refuses these; a forged object must not declare a past end.
        assert_eq!(runtime_limit(&with_deadline(Some(0), None)), None);
        assert_eq!(runtime_limit(&with_deadline(Some(-5), None)), None);
    }

    fn bound(node: &str, ids: &str, gpu_node: Option<&str>) -> Pod {
        let mut annotations = json!({ names::ANNOTATION_GPU_IDS: ids });
        if let Some(n) = gpu_node {
            annotations[names::ANNOTATION_GPU_NODE] = json!(n);
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "annotations": annotations},
            "spec": {"nodeName": node, "containers": []},
        }))
        .unwrap()
    }

    #[test]
    fn a_gpu_choice_that_does_not_fit_the_node_is_not_believed() {
        let ids: Vec<String> = ["GPU-a", "GPU-b", "GPU-c"].map(String::from).to_vec();
        let ids = Some(&ids);
        assert_eq!(
            annotated_gpus(&bound("n1", "GPU-c, GPU-a", Some("n1")), "n1", ids),
            Ok(vec![2, 0])
        );
        assert_eq!(
            annotated_gpus(&bound("n1", "GPU-b", None), "n1", ids),
            Ok(vec![1])
        );
        for (pod, why) in [
            (bound("n1", "GPU-a,GPU-z", Some("n1")), "not on node n1"),
            (bound("n1", "GPU-a,GPU-a", Some("n1")), "twice"),
            (bound("n1", "GPU-a", Some("n2")), "for node n2"),
        ] {
            let err = annotated_gpus(&pod, "n1", ids).expect_err(why);
            assert!(err.contains(why), "{err}");
        }
        // Nothing to check against: no GPU identities known for the node.
        assert_eq!(
            annotated_gpus(&bound("n1", "GPU-z", None), "n1", None),
            Ok(vec![])
        );
    }
}
