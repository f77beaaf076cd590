//! The parts of a pod's affinity placement models itself: required node affinity (every
//! `nodeSelectorTerm`, `matchExpressions` and `matchFields`) and required anti-affinity
//! against its own gang's pods per node. Whatever else kube-scheduler checks (other pods'
//! affinity, spread, ports, volumes) reaches placement as a refused node (see
//! `Engine::planned_node_refused`).

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use muster_core::{FIELD_NODE_NAME, LabelRequirement};

const HOSTNAME: &str = "kubernetes.io/hostname";

/// Required node affinity as ORed terms of ANDed requirements. A term with an operator the
/// core does not model (`Gt`, `Lt`) keeps its other requirements: placement may then choose a
/// node kube-scheduler refuses, which is caught by the refusal path.
pub(super) fn node_terms(pod: &Pod) -> Vec<Vec<LabelRequirement>> {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    terms
        .iter()
        .map(|t| {
            let labels = t
                .match_expressions
                .iter()
                .flatten()
                .filter_map(|e| requirement(e, &e.key));
            // matchFields allows only metadata.name.
            let fields = t
                .match_fields
                .iter()
                .flatten()
                .filter(|e| e.key == FIELD_NODE_NAME)
                .filter_map(|e| requirement(e, FIELD_NODE_NAME));
            labels.chain(fields).collect()
        })
        .collect()
}

fn requirement(e: &NodeSelectorRequirement, key: &str) -> Option<LabelRequirement> {
    let values = e.values.clone().unwrap_or_default();
    let key = key.to_string();
    Some(match e.operator.as_str() {
        "In" => LabelRequirement::In(key, values),
        "NotIn" => LabelRequirement::NotIn(key, values),
        "Exists" => LabelRequirement::Exists(key),
        "DoesNotExist" => LabelRequirement::DoesNotExist(key),
        _ => return None,
    })
}

/// The pod refuses to share a node with pods like itself: a required anti-affinity term on
/// the hostname whose selector matches the pod's own labels (the usual "one worker per node"
/// of a training job), in the pod's own namespace.
pub(super) fn one_per_node(pod: &Pod) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|pa| {
            pa.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .any(|t| {
            t.topology_key == HOSTNAME
                && t.namespaces.as_ref().is_none_or(|n| n.is_empty())
                && t.namespace_selector.is_none()
                && t.label_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, &labels))
        })
}

/// Whether a label selector selects `labels` (an empty selector selects everything).
fn selects(s: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let equal = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = s.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    equal && expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_node_selector_term_and_match_fields_are_read() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "w"},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}],
                     "matchExpressions": [{"key": "gpu", "operator": "Exists"},
                                          {"key": "size", "operator": "Gt", "values": ["3"]}]}
                ]}}}}
        }));
        let terms = node_terms(&p);
        assert_eq!(terms.len(), 2);
        assert_eq!(
            terms[0],
            vec![LabelRequirement::In("zone".into(), vec!["a".into()])]
        );
        assert_eq!(
            terms[1],
            vec![
                LabelRequirement::Exists("gpu".into()),
                LabelRequirement::In(FIELD_NODE_NAME.into(), vec!["n7".into()]),
            ]
        );
    }

    #[test]
    fn anti_affinity_against_its_own_kind_means_one_per_node() {
        let with = |selector: serde_json::Value, key: &str| {
            pod(serde_json::json!({
                "metadata": {"name": "w", "labels": {"job": "llm", "role": "worker"}},
                "spec": {"containers": [], "affinity": {"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": selector, "topologyKey": key}]}}}
            }))
        };
        assert!(one_per_node(&with(
            serde_json::json!({"matchLabels": {"job": "llm"}}),
            HOSTNAME
        )));
        assert!(one_per_node(&with(
            serde_json::json!({"matchExpressions": [{"key": "role", "operator": "In", "values": ["worker"]}]}),
            HOSTNAME
        )));
        assert!(!one_per_node(&with(
            serde_json::json!({"matchLabels": {"job": "other"}}),
            HOSTNAME
        )));
        assert!(!one_per_node(&with(
            serde_json::json!({"matchLabels": {"job": "llm"}}),
            "topology.kubernetes.io/zone"
        )));
    }
}
