//! The `k8s.io/kube-scheduler/extender/v1` wire format.
//!
//! The Go types carry no json tags, so field names are the Go names in PascalCase and unset
//! fields arrive as `null`. Pods and nodes are kept as Kubernetes objects.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Filter and prioritize requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderArgs {
    pub pod: Option<Pod>,
    /// Full nodes (only when `nodeCacheCapable` is false).
    #[serde(default)]
    pub nodes: Option<NodeList>,
    /// Node names (when `nodeCacheCapable` is true).
    #[serde(default)]
    pub node_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeList {
    #[serde(default, alias = "items")]
    pub items: Option<Vec<Node>>,
}

impl ExtenderArgs {
    /// Candidate node names, whichever form the scheduler sent.
    pub fn candidate_names(&self) -> Vec<String> {
        if let Some(names) = &self.node_names {
            return names.clone();
        }
        self.nodes
            .as_ref()
            .and_then(|l| l.items.as_ref())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|n| n.metadata.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    /// Always null: we answer with names (nodeCacheCapable).
    pub nodes: Option<()>,
    pub node_names: Option<Vec<String>>,
    pub failed_nodes: BTreeMap<String, String>,
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    pub error: String,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    pub host: String,
    pub score: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionArgs {
    pub pod: Option<Pod>,
    #[serde(default)]
    pub node_name_to_victims: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MetaVictims {
    #[serde(default)]
    pub pods: Option<Vec<MetaPod>>,
    #[serde(default)]
    pub num_pdb_violations: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct MetaPod {
    #[serde(rename = "UID")]
    pub uid: String,
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderPreemptionResult {
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingArgs {
    pub pod_name: String,
    pub pod_namespace: String,
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    pub node: String,
}

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderBindingResult {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_args_accept_go_field_names_and_nulls() {
        let json = r#"{"Pod":{"metadata":{"name":"p","namespace":"ns","uid":"u1"},"spec":{"containers":[]}},
                      "Nodes":null,"NodeNames":["a","b"]}"#;
        let args: ExtenderArgs = serde_json::from_str(json).unwrap();
        assert_eq!(args.candidate_names(), vec!["a", "b"]);
        assert_eq!(args.pod.unwrap().metadata.uid.as_deref(), Some("u1"));
    }

    #[test]
    fn filter_result_uses_pascal_case() {
        let r = ExtenderFilterResult {
            node_names: Some(vec!["a".into()]),
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["NodeNames"][0], "a");
        assert!(v["Nodes"].is_null());
        assert_eq!(v["Error"], "");
    }

    #[test]
    fn binding_args_parse() {
        let json = r#"{"PodName":"p","PodNamespace":"ns","PodUID":"u","Node":"n1"}"#;
        let b: ExtenderBindingArgs = serde_json::from_str(json).unwrap();
        assert_eq!((b.pod_uid.as_str(), b.node.as_str()), ("u", "n1"));
    }
}
