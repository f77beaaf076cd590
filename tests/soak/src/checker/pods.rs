//! What the checker keeps of a pod, and the pod predicates every loop shares.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use muster_api::names;

/// The gang (`muster.dev/gang`) and its min-available, when the pod names one.
pub fn gang_of(pod: &Pod) -> Option<(String, u32)> {
    let ann = pod.metadata.annotations.as_ref()?;
    let gang = ann.get(names::ANNOTATION_GANG)?;
    let min = ann
        .get(names::ANNOTATION_MIN_AVAILABLE)
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1);
    Some((gang.clone(), min))
}

pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// Bound, not finished, not being deleted.
pub fn is_live_bound(pod: &Pod) -> bool {
    node_of(pod).is_some() && !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Whole GPUs the pod asks for (limits, else requests, summed over containers).
pub fn gpu_request(pod: &Pod) -> u32 {
    let Some(spec) = &pod.spec else {
        return 0;
    };
    spec.containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .map(|r| {
            r.limits
                .as_ref()
                .and_then(|l| l.get(names::GPU_RESOURCE))
                .or_else(|| r.requests.as_ref().and_then(|l| l.get(names::GPU_RESOURCE)))
                .and_then(|q| q.0.trim().parse::<u32>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// `muster.dev/gpu-ids`, split.
pub fn gpu_ids(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_GPU_IDS))
        .map(|ids| {
            ids.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Clone, Debug)]
pub struct PodRec {
    pub uid: String,
    pub name: String,
    pub gang: Option<(String, u32)>,
    pub node: Option<String>,
    pub gpu_node: Option<String>,
    pub uuids: Vec<String>,
    pub gpus: u32,
    pub live_bound: bool,
    pub deleting: bool,
    pub terminal: bool,
    /// When the checker first saw it live and bound.
    pub first_bound: Option<Instant>,
}

impl PodRec {
    pub fn from_pod(pod: &Pod) -> PodRec {
        let name = pod.metadata.name.clone().unwrap_or_default();
        PodRec {
            uid: pod.metadata.uid.clone().unwrap_or_else(|| name.clone()),
            gang: gang_of(pod),
            node: node_of(pod).map(str::to_string),
            gpu_node: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::ANNOTATION_GPU_NODE))
                .cloned(),
            uuids: gpu_ids(pod),
            gpus: gpu_request(pod),
            live_bound: is_live_bound(pod),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            terminal: is_terminal(pod),
            first_bound: None,
            name,
        }
    }
}
