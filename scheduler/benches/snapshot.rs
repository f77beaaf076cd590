//! Cost of one full planning round's snapshot: the cache (1,000 kwok-style DGX A100 nodes,
//! 4,000 pods, half bound with their GPU annotations) turned into the core's cluster and the
//! pending gangs, in steady state (objects unchanged since the last round, as between most
//! rounds). `cargo bench -p muster-scheduler --bench snapshot`.

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use muster_api::machines;
use muster_api::names;
use muster_scheduler::cache::{Cache, CacheObjects};
use muster_scheduler::snapshot;
use std::collections::BTreeMap;

/// The same allocator as the `muster-scheduler` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 1000;
const GANGS: usize = 500;
const GANG_SIZE: usize = 8;

fn node(i: usize) -> Node {
    let q = |s: &str| Quantity(s.to_string());
    let alloc = BTreeMap::from([
        ("cpu".to_string(), q("128")),
        ("memory".to_string(), q("1Ti")),
        ("pods".to_string(), q("110")),
        (names::GPU_RESOURCE.to_string(), q("8")),
    ]);
    let mut n = Node::default();
    n.metadata.name = Some(format!("gpu-{i}"));
    n.metadata.resource_version = Some("3".into());
    n.metadata.labels = Some(BTreeMap::from([
        (
            names::LABEL_TOPOLOGY_FIXTURE.to_string(),
            "dgx-a100".to_string(),
        ),
        ("kubernetes.io/hostname".to_string(), format!("gpu-{i}")),
    ]));
    n.status = Some(NodeStatus {
        allocatable: Some(alloc.clone()),
        capacity: Some(alloc),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    n
}

fn pod(gang: usize, member: usize, node: Option<usize>) -> Pod {
    let name = format!("g{gang}-{member}");
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{gang}-{member}"), "resourceVersion": "7",
            "creationTimestamp": "2026-11-23T10:00:00Z",
            "annotations": {names::ANNOTATION_GANG: format!("g{gang}"),
                names::ANNOTATION_MIN_AVAILABLE: GANG_SIZE.to_string()}},
        "spec": {"schedulerName": "muster", "containers": [{"name": "main", "image": "x",
            "resources": {"limits": {"nvidia.com/gpu": "1"},
                "requests": {"cpu": "1", "memory": "1Gi"}}}]}
    }))
    .unwrap_or_default();
    if let (Some(n), Some(spec)) = (node, p.spec.as_mut()) {
        let name = format!("gpu-{n}");
        let uuid = machines::builtin("dgx-a100")
            .map(|m| m.for_node(&name).gpus[member % 8].uuid.clone())
            .unwrap_or_default();
        spec.node_name = Some(name);
        p.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(names::ANNOTATION_GPU_IDS.to_string(), uuid);
    }
    p
}

fn bench(c: &mut Criterion) {
    let nodes = (0..NODES).map(node).collect();
    let pods = (0..GANGS)
        .flat_map(|g| (0..GANG_SIZE).map(move |m| pod(g, m, (g < GANGS / 2).then_some(g % NODES))))
        .collect();
    let cache = Cache::from_objects(CacheObjects {
        nodes,
        pods,
        ..Default::default()
    });
    c.bench_function("snapshot 1000 nodes, 4000 pods", |b| {
        b.iter(|| snapshot::build(&cache, &Default::default(), 1_800_000_000))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
