//! Fake GPU nodes: Node objects that kwok keeps Ready, with GPU capacity and the labels a real
//! GPU node would carry (GPU Feature Discovery's, Muster's fixture and rack labels).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use muster_api::machines::{self, MachineSpec};
use muster_api::names::{self, gfd};

use crate::TestCluster;
use crate::error::{Context, Error, Result};

/// Annotation kwok is told to manage (`--manage-nodes-with-annotation-selector`).
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// Label on every node the harness creates (kwok's own convention).
pub const KWOK_TYPE_LABEL: (&str, &str) = ("type", "kwok");

/// A batch of identical fake nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub count: u32,
    /// Nodes are named `<name_prefix><index>`, index from 0.
    pub name_prefix: String,
    /// Kubernetes quantities, e.g. "64" and "512Gi".
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    /// A built-in machine fixture (`muster_api::machines::builtin`), e.g. "dgx-a100": sets
    /// the GFD labels, `muster.dev/topology-fixture` and the default GPU count.
    pub fixture: Option<String>,
    /// `nvidia.com/gpu` capacity per node; default the fixture's GPU count, else 0.
    pub gpus: Option<u32>,
    /// Extra labels (win over derived ones).
    pub labels: BTreeMap<String, String>,
    /// `muster.dev/rack` value.
    pub rack: Option<String>,
    /// Split the batch into racks of this many nodes: node i gets rack `<rack>-<i / n>` (rack
    /// defaulting to "rack"), and, when it has an NVLink clique, clique id `<domain>.<i / n>`,
    /// since a rack-scale NVLink domain (GB200 NVL72) is one rack.
    pub nodes_per_rack: Option<u32>,
    /// GFD `nvidia.com/gpu.clique` (NVLink domain); default the fixture's clique.
    pub nvlink_domain: Option<String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            count: 1,
            name_prefix: "node-".into(),
            cpu: "64".into(),
            memory: "512Gi".into(),
            pods: 110,
            fixture: None,
            gpus: None,
            labels: BTreeMap::new(),
            rack: None,
            nodes_per_rack: None,
            nvlink_domain: None,
        }
    }
}

impl NodeSpec {
    /// `count` nodes of a machine fixture, named `<fixture>-<i>`.
    pub fn fixture(fixture: &str, count: u32) -> NodeSpec {
        NodeSpec {
            count,
            name_prefix: format!("{fixture}-"),
            fixture: Some(fixture.to_string()),
            ..NodeSpec::default()
        }
    }

    fn machine(&self) -> Result<Option<&'static MachineSpec>> {
        match &self.fixture {
            Some(name) => Ok(Some(machines::builtin(name)?)),
            None => Ok(None),
        }
    }

    /// Node names this spec produces.
    pub fn names(&self) -> Vec<String> {
        (0..self.count)
            .map(|i| format!("{}{i}", self.name_prefix))
            .collect()
    }

    /// The Node objects to create (status included: kwok keeps the capacity it finds).
    pub fn nodes(&self) -> Result<Vec<Node>> {
        if self.nodes_per_rack == Some(0) {
            return Err(Error::NodeSpec("nodes_per_rack must be at least 1".into()));
        }
        let machine = self.machine()?;
        let gpus = self
            .gpus
            .unwrap_or_else(|| machine.map_or(0, |m| m.gpu_count() as u32));
        let quantity = |s: String| Quantity(s);
        let mut capacity = BTreeMap::from([
            ("cpu".to_string(), quantity(self.cpu.clone())),
            ("memory".to_string(), quantity(self.memory.clone())),
            ("pods".to_string(), quantity(self.pods.to_string())),
            ("ephemeral-storage".to_string(), quantity("1Ti".into())),
        ]);
        if gpus > 0 {
            capacity.insert(names::GPU_RESOURCE.to_string(), quantity(gpus.to_string()));
        }
        let nodes = self
            .names()
            .into_iter()
            .enumerate()
            .map(|(i, name)| Node {
                metadata: ObjectMeta {
                    labels: Some(self.labels_for(i as u32, &name, machine, gpus)),
                    annotations: Some(BTreeMap::from([
                        (KWOK_NODE_ANNOTATION.to_string(), "fake".to_string()),
                        ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
                    ])),
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                spec: None,
                status: Some(NodeStatus {
                    allocatable: Some(capacity.clone()),
                    capacity: Some(capacity.clone()),
                    node_info: Some(NodeSystemInfo {
                        architecture: "amd64".into(),
                        operating_system: "linux".into(),
                        kubelet_version: "fake".into(),
                        ..NodeSystemInfo::default()
                    }),
                    phase: Some("Running".into()),
                    ..NodeStatus::default()
                }),
            })
            .collect();
        Ok(nodes)
    }

    fn labels_for(
        &self,
        index: u32,
        name: &str,
        machine: Option<&MachineSpec>,
        gpus: u32,
    ) -> BTreeMap<String, String> {
        let rack_index = self.nodes_per_rack.map(|n| index / n);
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), name.to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            (KWOK_TYPE_LABEL.0.to_string(), KWOK_TYPE_LABEL.1.to_string()),
        ]);
        if let Some(m) = machine {
            labels.insert(names::LABEL_TOPOLOGY_FIXTURE.into(), m.name.clone());
            labels.insert(gfd::PRODUCT.into(), m.product.clone());
            labels.insert(gfd::COUNT.into(), gpus.to_string());
            labels.insert(gfd::MEMORY.into(), m.memory_mib.to_string());
            labels.insert(gfd::FAMILY.into(), m.family.clone());
            labels.insert(gfd::MACHINE.into(), m.machine.clone());
        }
        let domain = self
            .nvlink_domain
            .clone()
            .or_else(|| machine.and_then(|m| m.clique.clone()));
        if let Some(domain) = domain {
            let clique = match rack_index {
                // GFD cliques read `<cluster>.<clique id>`: the id becomes the rack's index.
                Some(r) => match domain.rsplit_once('.') {
                    Some((cluster, _)) => format!("{cluster}.{r}"),
                    None => format!("{domain}.{r}"),
                },
                None => domain,
            };
            labels.insert(gfd::CLIQUE.into(), clique);
        }
        let rack = match (rack_index, &self.rack) {
            (Some(r), base) => Some(format!("{}-{r}", base.as_deref().unwrap_or("rack"))),
            (None, base) => base.clone(),
        };
        if let Some(rack) = rack {
            labels.insert(names::LABEL_RACK.into(), rack);
        }
        labels.extend(self.labels.clone());
        labels
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl TestCluster {
    /// Creates the nodes of `spec` and waits until kwok reports every one Ready.
    /// Returns their names.
    pub async fn add_gpu_nodes(&self, spec: &NodeSpec) -> Result<Vec<String>> {
        let nodes = spec.nodes()?;
        let api: Api<Node> = Api::all(self.client());
        let post = PostParams::default();
        // Bounded parallelism: fast for 1,000 nodes without flooding a 2-core apiserver.
        futures::stream::iter(nodes)
            .map(|node| {
                let api = api.clone();
                let post = post.clone();
                async move {
                    let name = node.name_any();
                    api.create(&post, &node)
                        .await
                        .context(format!("creating node {name}"))
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        let names = spec.names();
        self.wait_nodes_ready(&names, Duration::from_secs(300))
            .await?;
        Ok(names)
    }

    /// Waits until every named node has condition Ready=True (kwok's node-initialize stage).
    pub async fn wait_nodes_ready(&self, names: &[String], deadline: Duration) -> Result<()> {
        let api: Api<Node> = Api::all(self.client());
        let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
        let list =
            ListParams::default().labels(&format!("{}={}", KWOK_TYPE_LABEL.0, KWOK_TYPE_LABEL.1));
        let started = Instant::now();
        loop {
            let ready = api
                .list(&list)
                .await
                .context("listing nodes")?
                .items
                .iter()
                .filter(|n| wanted.contains(n.name_any().as_str()) && is_ready(n))
                .count();
            if ready == wanted.len() {
                return Ok(());
            }
            if started.elapsed() > deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{} of {} nodes to become Ready (is kwok running? see {})",
                        wanted.len() - ready,
                        wanted.len(),
                        self.log_path(crate::Component::Kwok).display()
                    ),
                    seconds: deadline.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(node: &Node) -> &BTreeMap<String, String> {
        node.metadata.labels.as_ref().unwrap()
    }

    #[test]
    fn fixture_nodes_carry_gfd_labels_and_gpu_capacity() {
        let nodes = NodeSpec {
            rack: Some("r7".into()),
            ..NodeSpec::fixture("dgx-a100", 3)
        }
        .nodes()
        .unwrap();
        assert_eq!(nodes.len(), 3);
        let node = &nodes[2];
        assert_eq!(node.metadata.name.as_deref(), Some("dgx-a100-2"));
        let l = labels(node);
        assert_eq!(l[names::LABEL_TOPOLOGY_FIXTURE], "dgx-a100");
        assert_eq!(l[gfd::PRODUCT], "NVIDIA-A100-SXM4-80GB");
        assert_eq!(l[gfd::COUNT], "8");
        assert_eq!(l[gfd::MEMORY], "81920");
        assert_eq!(l[gfd::FAMILY], "ampere");
        assert_eq!(l[names::LABEL_RACK], "r7");
        assert!(!l.contains_key(gfd::CLIQUE));
        let status = node.status.as_ref().unwrap();
        assert_eq!(
            status.capacity.as_ref().unwrap()[names::GPU_RESOURCE].0,
            "8"
        );
        assert_eq!(
            status.allocatable.as_ref().unwrap()[names::GPU_RESOURCE].0,
            "8"
        );
        let annotations = node.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[KWOK_NODE_ANNOTATION], "fake");
    }

    #[test]
    fn racks_split_the_batch_and_number_the_nvlink_domain() {
        let spec = NodeSpec {
            nodes_per_rack: Some(18),
            ..NodeSpec::fixture("gb200-nvl72", 36)
        };
        let nodes = spec.nodes().unwrap();
        assert_eq!(labels(&nodes[17])[names::LABEL_RACK], "rack-0");
        assert_eq!(labels(&nodes[18])[names::LABEL_RACK], "rack-1");
        assert_eq!(labels(&nodes[17])[gfd::CLIQUE], "nvl72-a.0");
        assert_eq!(labels(&nodes[35])[gfd::CLIQUE], "nvl72-a.1");
    }

    #[test]
    fn explicit_gpus_and_labels_win() {
        let mut spec = NodeSpec::fixture("dgx-h100", 1);
        spec.gpus = Some(4);
        spec.labels.insert(gfd::PRODUCT.into(), "custom".into());
        let nodes = spec.nodes().unwrap();
        assert_eq!(labels(&nodes[0])[gfd::COUNT], "4");
        assert_eq!(labels(&nodes[0])[gfd::PRODUCT], "custom");
    }

    #[test]
    fn cpu_only_nodes_have_no_gpu_resource() {
        let nodes = NodeSpec::default().nodes().unwrap();
        let capacity = nodes[0].status.as_ref().unwrap().capacity.clone().unwrap();
        assert!(!capacity.contains_key(names::GPU_RESOURCE));
        assert!(!labels(&nodes[0]).contains_key(gfd::PRODUCT));
    }

    #[test]
    fn unknown_fixture_and_empty_racks_are_errors() {
        assert!(matches!(
            NodeSpec::fixture("no-such-machine", 1).nodes(),
            Err(Error::Fixture(_))
        ));
        let spec = NodeSpec {
            nodes_per_rack: Some(0),
            ..NodeSpec::default()
        };
        assert!(matches!(spec.nodes(), Err(Error::NodeSpec(_))));
    }
}
