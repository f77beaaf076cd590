//! Where published objects go: the API server (server-side apply), or nowhere (`--no-publish`,
//! where the writes the agent would make are still counted and shown on `/debug/state`).

use super::FIELD_MANAGER;
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use muster_crds::{GpuNode, GpuNodeSpec};
use serde_json::json;
use std::collections::BTreeMap;

pub enum Sink {
    Kube(Client),
    DryRun,
}

impl Sink {
    /// Server-side applies the whole `GpuNode` (the agent owns every field of its spec).
    pub async fn apply_gpu_node(&self, name: &str, spec: GpuNodeSpec) -> anyhow::Result<()> {
        let Sink::Kube(client) = self else {
            return Ok(());
        };
        let api: Api<GpuNode> = Api::all(client.clone());
        let object = GpuNode::new(name, spec);
        // Forced: a previous agent (another pod of the DaemonSet) may have owned the fields
        // under the same manager name after a rename; this agent is the only writer.
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying GpuNode {name}"))?;
        Ok(())
    }

    /// Server-side applies `metadata.labels` of the Node. Labels this manager set before and
    /// that are absent now are removed by the apply; labels of other managers are untouched.
    pub async fn apply_labels(
        &self,
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let Sink::Kube(client) = self else {
            return Ok(());
        };
        let api: Api<Node> = Api::all(client.clone());
        let patch = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": labels},
        });
        api.patch(
            node,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .with_context(|| format!("applying GFD labels to Node {node}"))?;
        Ok(())
    }
}
