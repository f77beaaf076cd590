//! Which gang a pod belongs to, in every form users already write.
//!
//! Precedence: Muster's `PodGroup` label, scheduler-plugins' label, Volcano's annotation,
//! upstream `spec.schedulingGroup.podGroupName`, Muster's annotation-only form; otherwise the
//! pod is a gang of one.

use k8s_openapi::api::core::v1::Pod;
use muster_api::names;
use muster_core::GangKey;

/// Where a gang's definition lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GangSource {
    /// `muster.dev/v1alpha1` PodGroup named by label `muster.dev/pod-group`.
    Muster(String),
    /// `scheduling.x-k8s.io/v1alpha1` PodGroup named by label `scheduling.x-k8s.io/pod-group`.
    Coscheduling(String),
    /// `scheduling.volcano.sh/v1beta1` PodGroup named by annotation `scheduling.k8s.io/group-name`.
    Volcano(String),
    /// `scheduling.k8s.io/v1beta1` PodGroup named by `spec.schedulingGroup.podGroupName`.
    Upstream(String),
    /// Annotations `muster.dev/gang` + `muster.dev/min-available` (plain Jobs, no CRD).
    Annotation { min_available: Result<u32, String> },
    /// No gang: the pod alone.
    Single,
}

impl GangSource {
    pub fn kind(&self) -> &'static str {
        match self {
            GangSource::Muster(_) => "PodGroup.muster.dev",
            GangSource::Coscheduling(_) => "PodGroup.scheduling.x-k8s.io",
            GangSource::Volcano(_) => "PodGroup.scheduling.volcano.sh",
            GangSource::Upstream(_) => "PodGroup.scheduling.k8s.io",
            GangSource::Annotation { .. } => "annotation muster.dev/gang",
            GangSource::Single => "pod",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangRef {
    pub key: GangKey,
    pub source: GangSource,
}

/// The gang of `pod` (never fails: malformed forms are reported when the gang is resolved).
pub fn gang_of(pod: &Pod) -> GangRef {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let labels = pod.metadata.labels.as_ref();
    let annotations = pod.metadata.annotations.as_ref();
    let label = |k: &str| {
        labels
            .and_then(|l| l.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let annotation = |k: &str| {
        annotations
            .and_then(|a| a.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let named = |name: String, source: GangSource| GangRef {
        key: GangKey::new(ns.clone(), name),
        source,
    };
    if let Some(n) = label(names::LABEL_POD_GROUP) {
        return named(n.clone(), GangSource::Muster(n));
    }
    if let Some(n) = label(names::LABEL_COSCHEDULING_POD_GROUP) {
        return named(n.clone(), GangSource::Coscheduling(n));
    }
    if let Some(n) = annotation(names::ANNOTATION_VOLCANO_GROUP_NAME) {
        return named(n.clone(), GangSource::Volcano(n));
    }
    let upstream = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_group.as_ref())
        .and_then(|g| g.pod_group_name.clone())
        .filter(|n| !n.is_empty());
    if let Some(n) = upstream {
        return named(n.clone(), GangSource::Upstream(n));
    }
    if let Some(n) = annotation(names::ANNOTATION_GANG).or_else(|| label(names::ANNOTATION_GANG)) {
        let min_available = match annotation(names::ANNOTATION_MIN_AVAILABLE) {
            None => Err(format!(
                "annotation {} is missing",
                names::ANNOTATION_MIN_AVAILABLE
            )),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    format!(
                        "annotation {}={v:?} is not a whole number of at least 1",
                        names::ANNOTATION_MIN_AVAILABLE
                    )
                }),
        };
        return named(n, GangSource::Annotation { min_available });
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    named(format!("pod/{name}"), GangSource::Single)
}

/// A pod with scheduling gates of others (a queue such as Kueue holding it back) is not
/// scheduled by kube-scheduler until they are removed, so planning it would only hold
/// capacity. Muster's own gate ([`names::GATE_PLACEMENT`]) waits for exactly this planning.
pub fn is_gated(pod: &Pod) -> bool {
    gates(pod).any(|g| g != names::GATE_PLACEMENT)
}

/// The pod still carries Muster's gate: the scheduler removes it once the gang is planned.
pub fn carries_placement_gate(pod: &Pod) -> bool {
    gates(pod).any(|g| g == names::GATE_PLACEMENT)
}

fn gates(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let mut p = Pod::default();
        p.metadata.name = Some("w-0".into());
        p.metadata.namespace = Some("ml".into());
        p.metadata.labels = map(labels);
        p.metadata.annotations = map(annotations);
        p
    }

    #[test]
    fn every_form_is_recognised() {
        let g = gang_of(&pod(&[("muster.dev/pod-group", "a")], &[]));
        assert_eq!(g.source, GangSource::Muster("a".into()));
        assert_eq!(g.key, GangKey::new("ml", "a"));
        let g = gang_of(&pod(&[("scheduling.x-k8s.io/pod-group", "b")], &[]));
        assert_eq!(g.source, GangSource::Coscheduling("b".into()));
        let g = gang_of(&pod(&[], &[("scheduling.k8s.io/group-name", "c")]));
        assert_eq!(g.source, GangSource::Volcano("c".into()));
        let g = gang_of(&pod(
            &[],
            &[("muster.dev/gang", "d"), ("muster.dev/min-available", "4")],
        ));
        assert_eq!(
            g.source,
            GangSource::Annotation {
                min_available: Ok(4)
            }
        );
        let g = gang_of(&pod(&[], &[]));
        assert_eq!(
            (g.source, g.key.name),
            (GangSource::Single, "pod/w-0".into())
        );
    }

    #[test]
    fn upstream_scheduling_group_is_read() {
        let mut p = pod(&[], &[]);
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            scheduling_group: Some(k8s_openapi::api::core::v1::PodSchedulingGroup {
                pod_group_name: Some("u".into()),
            }),
            ..Default::default()
        });
        assert_eq!(gang_of(&p).source, GangSource::Upstream("u".into()));
    }

    #[test]
    fn bad_min_available_is_reported_not_guessed() {
        for bad in ["0", "-1", "four", ""] {
            let g = gang_of(&pod(
                &[],
                &[("muster.dev/gang", "d"), ("muster.dev/min-available", bad)],
            ));
            match g.source {
                GangSource::Annotation {
                    min_available: Err(e),
                } => assert!(e.contains("min-available"), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
