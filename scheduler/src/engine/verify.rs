//! Who may be answered: only a pod the cache holds, with the UID the request names, that opted
//! into Muster and is not bound yet. Anyone who can reach the extender can send a pod's JSON;
//! the engine decides from the cache's copy alone, so a forged or edited request can neither
//! place a pod of another scheduler nor change what Muster believes about its own pods.

use crate::cache::Cache;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use std::time::Duration;

/// How long a filter waits for the pod watch to catch up with kube-scheduler's own.
const WATCH_LAG: Duration = Duration::from_millis(500);

/// Why a request's pod is not answered.
#[derive(Debug, PartialEq)]
pub(super) enum Refusal {
    /// The cache has no such pod (yet): kube-scheduler retries; a forger gets nothing.
    NotCached,
    /// Forged or stale: the reason says which.
    Forged(String),
}

impl Refusal {
    pub(super) fn message(&self) -> String {
        match self {
            Refusal::NotCached => "Muster has not seen this pod yet; retrying".into(),
            Refusal::Forged(reason) => format!("refused: {reason}"),
        }
    }
}

/// The cache's copy of the pod the request names, if the request is consistent with it.
pub(super) fn cached_pod(cache: &Cache, requested: &Pod) -> Result<Arc<Pod>, Refusal> {
    let meta = &requested.metadata;
    let (Some(ns), Some(name), Some(uid)) = (&meta.namespace, &meta.name, &meta.uid) else {
        return Err(Refusal::Forged(
            "the request's pod lacks a namespace, name or UID".into(),
        ));
    };
    let Some(pod) = cache.pods.get(&ObjectRef::new(name).within(ns)) else {
        return Err(Refusal::NotCached);
    };
    check(cache, &pod, uid)?;
    Ok(pod)
}

/// Like [`cached_pod`], waiting briefly for the watch when the pod is not cached yet.
pub(super) async fn cached_pod_waiting(
    cache: &Cache,
    requested: &Pod,
) -> Result<Arc<Pod>, Refusal> {
    let deadline = tokio::time::Instant::now() + WATCH_LAG;
    loop {
        match cached_pod(cache, requested) {
            Err(Refusal::NotCached) if tokio::time::Instant::now() < deadline => {
                let _ = tokio::time::timeout_at(deadline, cache.changed()).await;
            }
            other => return other,
        }
    }
}

fn check(cache: &Cache, pod: &Pod, uid: &str) -> Result<(), Refusal> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if pod.metadata.uid.as_deref() != Some(uid) {
        return Err(Refusal::Forged(format!(
            "pod {ns}/{name} has another UID than {uid}"
        )));
    }
    let spec = pod.spec.as_ref();
    if !cache.is_ours(pod) {
        return Err(Refusal::Forged(format!(
            "pod {ns}/{name} is not scheduled by Muster (its scheduler names: {})",
            cache.scheduler_names()
        )));
    }
    if let Some(node) = spec.and_then(|s| s.node_name.as_deref()) {
        return Err(Refusal::Forged(format!(
            "pod {ns}/{name} is already bound to {node}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheObjects;
    use serde_json::json;

    fn pod(name: &str, uid: &str, scheduler: &str, node: Option<&str>) -> Pod {
        let mut spec = json!({"schedulerName": scheduler, "containers": []});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": spec,
        }))
        .unwrap()
    }

    fn cache(pods: Vec<Pod>) -> Cache {
        Cache::from_objects(CacheObjects {
            pods,
            ..Default::default()
        })
    }

    #[test]
    fn only_the_cached_muster_pod_with_its_uid_is_answered() {
        let c = cache(vec![
            pod("ours", "u1", "muster", None),
            pod("theirs", "u2", "default-scheduler", None),
            pod("bound", "u3", "muster", Some("n1")),
        ]);
        assert!(cached_pod(&c, &pod("ours", "u1", "muster", None)).is_ok());
        // The request's own spec is ignored: the cache's copy decides.
        assert!(cached_pod(&c, &pod("theirs", "u2", "muster", None)).is_err());
        assert!(matches!(
            cached_pod(&c, &pod("ours", "forged", "muster", None)),
            Err(Refusal::Forged(_))
        ));
        assert!(matches!(
            cached_pod(&c, &pod("bound", "u3", "muster", None)),
            Err(Refusal::Forged(_))
        ));
        assert_eq!(
            cached_pod(&c, &pod("unknown", "u9", "muster", None)).err(),
            Some(Refusal::NotCached)
        );
        let mut anonymous = pod("ours", "u1", "muster", None);
        anonymous.metadata.namespace = None;
        assert!(matches!(
            cached_pod(&c, &anonymous),
            Err(Refusal::Forged(_))
        ));
    }

    #[test]
    fn a_configured_extra_scheduler_name_is_ours_and_only_then() {
        let plugins = pod("ray-head", "u1", "scheduler-plugins-scheduler", None);
        let default_names = cache(vec![plugins.clone()]);
        assert!(matches!(
            cached_pod(&default_names, &plugins),
            Err(Refusal::Forged(_))
        ));
        let names =
            muster_api::SchedulerNames::new(["muster", "scheduler-plugins-scheduler"]).unwrap();
        let extra = cache(vec![plugins.clone()]).with_scheduler_names(names);
        assert!(cached_pod(&extra, &plugins).is_ok());
    }
}
