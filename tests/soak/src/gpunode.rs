//! `GpuNode` objects as a node agent would publish them for a fixture node, with some GPUs
//! unhealthy (an XID 79): how the soak signals a failed GPU to the scheduler.

use std::collections::BTreeSet;

use anyhow::Context as _;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use muster_api::machines;
use muster_crds::{GpuNode, GpuNodeGpu, GpuNodeSpec};

const FIELD_MANAGER: &str = "muster-soak";

/// The spec the node agent would publish for `node` (fixture `fixture`), the GPUs at the
/// indices in `unhealthy` marked unhealthy. UUIDs are the fixture's for that node, the same
/// the scheduler derives from the fixture label, so pods already bound keep their GPUs.
pub fn spec_for(
    node: &str,
    fixture: &str,
    unhealthy: &BTreeSet<u32>,
) -> anyhow::Result<GpuNodeSpec> {
    let machine = machines::builtin(fixture)
        .with_context(|| format!("fixture {fixture}"))?
        .for_node(node);
    let gpus: Vec<GpuNodeGpu> = machine
        .gpus
        .iter()
        .map(|g| {
            let healthy = !unhealthy.contains(&g.index);
            GpuNodeGpu {
                index: g.index as i32,
                uuid: g.uuid.clone(),
                model: machine.model.clone(),
                memory_mib: machine.memory_mib as i64,
                pci_bus_id: g.pci_bus_id.clone(),
                numa_node: Some(g.numa_node as i32),
                healthy,
                unhealthy_reason: (!healthy).then(|| "XID 79 (injected by muster-soak)".into()),
                mig_enabled: false,
                mig_devices: Vec::new(),
                usage: None,
            }
        })
        .collect();
    Ok(GpuNodeSpec {
        node_name: node.to_string(),
        driver_version: machine.driver_version.clone(),
        cuda_version: Some(machine.cuda_version.clone()),
        model: machine.model.clone(),
        gpu_count: gpus.len() as i32,
        healthy_count: gpus.iter().filter(|g| g.healthy).count() as i32,
        clique: machine.clique.clone(),
        gpus,
        topology: machine.topology.to_rows(),
        last_seen: k8s_openapi::jiff::Timestamp::now().to_string(),
    })
}

/// UUID of GPU `index` of `node`.
pub fn uuid_of(node: &str, fixture: &str, index: u32) -> String {
    machines::node_gpu_uuid(node, fixture, index)
}

/// Server-side applies the GpuNode for `node`.
pub async fn apply(client: &Client, spec: GpuNodeSpec) -> anyhow::Result<()> {
    let api: Api<GpuNode> = Api::all(client.clone());
    let name = spec.node_name.clone();
    let object = GpuNode::new(&name, spec);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying GpuNode {name}"))?;
    Ok(())
}

/// Deletes the GpuNode of `node` if there is one.
pub async fn delete(client: &Client, node: &str) -> anyhow::Result<()> {
    let api: Api<GpuNode> = Api::all(client.clone());
    match api.delete(node, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting GpuNode {node}")),
    }
}
