//! Muster's and Volcano's Queues read into one `QueueDefinition`: good input, bad input, and
//! Volcano's published sample.

use muster_crds::compat::volcano;
use muster_crds::queue_spec::{
    DEFAULT_QUEUE, QueueDefinition, QueueDialect, QueueError, QueueResource, ResourceQuota,
    from_muster, from_volcano, resolve_queue,
};
use muster_crds::{QuantityError, Queue};
use std::collections::BTreeMap;

fn muster(yaml: &str) -> Result<QueueDefinition, QueueError> {
    let q: Queue = serde_yaml::from_str(yaml).expect("Queue YAML");
    from_muster(&q)
}

fn volcano_q(yaml: &str) -> Result<QueueDefinition, QueueError> {
    let q: volcano::Queue = serde_yaml::from_str(yaml).expect("Volcano Queue YAML");
    from_volcano(&q)
}

const GPU: QueueResource = QueueResource::Gpu { product: None };

fn h100() -> QueueResource {
    QueueResource::Gpu {
        product: Some("NVIDIA-H100-80GB-HBM3".into()),
    }
}

#[test]
fn muster_queue_converts_every_resource() {
    let d = muster(
        r#"
apiVersion: muster.dev/v1alpha1
kind: Queue
metadata: {name: team-a}
spec:
  parent: research
  gpu:
    guaranteed: 8
    limit: "16"
    weight: 3
    reclaimable: false
    products:
      - {product: NVIDIA-H100-80GB-HBM3, guaranteed: 4, limit: 8}
  cpu: {guaranteed: 500m, limit: "64"}
  memory: {guaranteed: 1Gi, weight: 0}
"#,
    )
    .unwrap();
    assert_eq!(d.name, "team-a");
    assert_eq!(d.parent.as_deref(), Some("research"));
    assert_eq!(d.dialect, QueueDialect::Muster);
    assert!(d.borrowed_reclaimable && !d.closed && d.ignored.is_empty());
    assert_eq!(
        d.quota(&GPU),
        ResourceQuota {
            resource: GPU,
            guaranteed: 8,
            limit: Some(16),
            weight: 3,
            reclaim_lent: false,
            deserved: None,
        }
    );
    // A product inherits weight and reclaimable from the GPU quota.
    let p = d.quota(&h100());
    assert_eq!(
        (p.guaranteed, p.limit, p.weight, p.reclaim_lent),
        (4, Some(8), 3, false)
    );
    let cpu = d.quota(&QueueResource::Cpu);
    assert_eq!(
        (cpu.guaranteed, cpu.limit, cpu.weight),
        (500, Some(64_000), 1)
    );
    let mem = d.quota(&QueueResource::Memory);
    assert_eq!((mem.guaranteed, mem.limit, mem.weight), (1 << 30, None, 0));
    assert!(mem.reclaim_lent);
    // Resources are sorted, one entry each.
    let names: Vec<_> = d.resources.iter().map(|r| r.resource.name()).collect();
    assert_eq!(
        names,
        [
            "nvidia.com/gpu",
            "nvidia.com/gpu/NVIDIA-H100-80GB-HBM3",
            "cpu",
            "memory"
        ]
    );
}

#[test]
fn an_empty_muster_queue_has_defaults() {
    let d = muster("metadata: {name: default}\nspec: {}").unwrap();
    assert_eq!(d.parent, None);
    assert!(d.resources.is_empty());
    let q = d.quota(&GPU);
    assert_eq!(
        (q.guaranteed, q.limit, q.weight, q.reclaim_lent),
        (0, None, 1, true)
    );
    assert_eq!(d.quota(&h100()).weight, 1);
}

#[test]
fn product_guarantees_fill_an_unset_gpu_guarantee() {
    let d = muster(
        r#"
metadata: {name: q}
spec:
  gpu:
    products:
      - {product: A, guaranteed: 2}
      - {product: B, guaranteed: 3}
"#,
    )
    .unwrap();
    assert_eq!(d.quota(&GPU).guaranteed, 5);
}

#[test]
fn bad_muster_queues_are_refused_with_a_clear_error() {
    let cases: &[(&str, &str)] = &[
        (
            "spec: {gpu: {guaranteed: lots}}",
            "queue q: spec.gpu.guaranteed: \"lots\" is not a Kubernetes quantity",
        ),
        (
            "spec: {gpu: {limit: 1.5}}",
            "queue q: spec.gpu.limit: \"1.5\" is not a whole number",
        ),
        (
            "spec: {cpu: {guaranteed: \"-1\"}}",
            "queue q: spec.cpu.guaranteed: \"-1\" is negative",
        ),
        (
            "spec: {memory: {limit: 16Ei}}",
            "spec.memory.limit: \"16Ei\" is too large",
        ),
        (
            "spec: {gpu: {guaranteed: 9, limit: 8}}",
            "queue q: nvidia.com/gpu: guaranteed 9 is above limit 8",
        ),
        (
            "spec: {cpu: {weight: 70000}}",
            "queue q: spec.cpu.weight: 70000 is not in 0..=65535",
        ),
        ("spec: {parent: q}", "queue q: is its own parent"),
        (
            "spec: {gpu: {products: [{product: A}, {product: A}]}}",
            "queue q: GPU product \"A\" is listed twice",
        ),
        (
            "spec: {gpu: {products: [{product: \"\"}]}}",
            "queue q: a GPU product entry has no product",
        ),
        (
            "spec: {gpu: {guaranteed: 4, products: [{product: A, guaranteed: 3}, {product: B, guaranteed: 2}]}}",
            "queue q: GPU product guarantees (5) exceed the GPU guarantee (4)",
        ),
        (
            "spec: {gpu: {products: [{product: A, guaranteed: 3, limit: 2}]}}",
            "queue q: nvidia.com/gpu/A: guaranteed 3 is above limit 2",
        ),
        (
            "spec: {gpu: {products: [{product: A, guaranteed: 18446744073709551615}, {product: B, guaranteed: 1}]}}",
            "queue q: GPU product guarantees overflow",
        ),
    ];
    for (spec, want) in cases {
        let err = muster(&format!("metadata: {{name: q}}\n{spec}")).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{spec}: {err} (want {want})"
        );
    }
    assert_eq!(
        muster("metadata: {}\nspec: {}").unwrap_err(),
        QueueError::NoName
    );
    // The underlying quantity error stays inspectable.
    match muster("metadata: {name: q}\nspec: {gpu: {guaranteed: x}}").unwrap_err() {
        QueueError::Quantity { field, error, .. } => {
            assert_eq!(field, "spec.gpu.guaranteed");
            assert_eq!(error, QuantityError::Malformed("x".into()));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn volcano_queue_maps_onto_the_same_definition() {
    let d = volcano_q(
        r#"
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: research}
spec:
  weight: 4
  reclaimable: false
  parent: org
  priority: 10
  type: whatever
  capability: {cpu: "32", memory: 128Gi, nvidia.com/gpu: 16, pods: "100"}
  deserved: {nvidia.com/gpu: "8", cpu: "16"}
  guarantee: {resource: {nvidia.com/gpu: 4}}
  affinity:
    nodeGroupAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [g1]}
  extendClusters: [{name: c1, weight: 1, capacity: {cpu: "1"}}]
  fieldFromTheFuture: {x: 1}
status:
  state: Open
  allocated: {cpu: "0"}
  reservation: {nodes: [n1]}
"#,
    )
    .unwrap();
    assert_eq!(d.name, "research");
    assert_eq!(d.dialect, QueueDialect::Volcano);
    assert_eq!(d.parent.as_deref(), Some("org"));
    assert_eq!(d.priority, 10);
    assert!(!d.borrowed_reclaimable, "Volcano reclaimable: false");
    assert!(!d.closed);
    assert_eq!(
        d.quota(&GPU),
        ResourceQuota {
            resource: GPU,
            guaranteed: 4,
            limit: Some(16),
            weight: 4,
            reclaim_lent: true,
            deserved: Some(8),
        }
    );
    let cpu = d.quota(&QueueResource::Cpu);
    assert_eq!(
        (cpu.guaranteed, cpu.limit, cpu.deserved),
        (0, Some(32_000), Some(16_000))
    );
    assert_eq!(d.quota(&QueueResource::Memory).limit, Some(128 << 30));
    assert_eq!(d.ignored, ["spec.capability.pods"]);
    // A resource Volcano does not mention still has the queue's weight.
    assert_eq!(d.quota(&h100()).weight, 4);
}

#[test]
fn volcano_defaults_and_states() {
    let d =
        volcano_q("metadata: {name: q}\nspec: {parent: \"\"}\nstatus: {state: Closed}").unwrap();
    assert_eq!(d.parent, None);
    assert_eq!(d.quota(&GPU).weight, 1, "unset weight is 1");
    assert!(d.borrowed_reclaimable, "unset reclaimable is true");
    assert!(d.closed);
    let d = volcano_q("metadata: {name: q}\nspec: {weight: 0}").unwrap();
    assert_eq!(d.quota(&GPU).weight, 1, "weight 0 (omitempty) is 1");
    assert!(volcano_q("metadata: {name: q}").is_ok(), "no spec at all");
}

#[test]
fn bad_volcano_queues_are_refused_with_a_clear_error() {
    let cases: &[(&str, &str)] = &[
        (
            "capability: {memory: 4Gb}",
            "queue q: spec.capability.memory: \"4Gb\" is not a Kubernetes quantity",
        ),
        (
            "guarantee: {resource: {nvidia.com/gpu: 500m}}",
            "spec.guarantee.resource.nvidia.com/gpu: \"500m\" is not a whole number",
        ),
        (
            "capability: {nvidia.com/gpu: 2}\nguarantee: {resource: {nvidia.com/gpu: 3}}",
            "queue q: nvidia.com/gpu: guaranteed 3 is above limit 2",
        ),
        (
            "capability: {cpu: 2}\ndeserved: {cpu: 3}",
            "queue q: cpu: deserved 3000 is above limit 2000",
        ),
        (
            "deserved: {cpu: 1}\nguarantee: {resource: {cpu: 2}}",
            "queue q: cpu: guaranteed 2000 is above deserved 1000",
        ),
        ("weight: -1", "queue q: spec.weight: -1 is not in 1..=65535"),
        (
            "weight: 65536",
            "queue q: spec.weight: 65536 is not in 1..=65535",
        ),
        ("parent: q", "queue q: is its own parent"),
    ];
    for (spec, want) in cases {
        let yaml = format!(
            "metadata: {{name: q}}\nspec:\n{}",
            spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        let err = volcano_q(&yaml).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{spec}: {err} (want {want})"
        );
    }
}

#[test]
fn volcano_published_sample_queue_deserializes() {
    // volcano.sh/apis v1.12.1 artifacts/queue.yaml, verbatim.
    const SAMPLE: &str = "apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata:
  name: default
spec:
  reclaimable: true
  weight: 1
  capability:
    cpu: 2000m
    memory: 4G";
    let q: volcano::Queue = serde_yaml::from_str(SAMPLE).unwrap();
    let d = from_volcano(&q).unwrap();
    assert_eq!(d.name, "default");
    assert_eq!(d.quota(&QueueResource::Cpu).limit, Some(2000));
    assert_eq!(d.quota(&QueueResource::Memory).limit, Some(4_000_000_000));
    assert_eq!(d.quota(&GPU).limit, None);
    // The same file from the module cache, when it is there.
    let cached = "/root/go/pkg/mod/volcano.sh/apis@v1.12.1/artifacts/queue.yaml";
    if let Ok(text) = std::fs::read_to_string(cached) {
        let q2: volcano::Queue = serde_yaml::from_str(&text).unwrap();
        assert_eq!(q2, q);
    }
}

#[test]
fn the_queue_of_a_gang() {
    let map = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let pod = map("muster.dev/queue", "from-pod");
    let ns = map("muster.dev/queue", "from-ns");
    assert_eq!(resolve_queue(Some("group"), Some(&pod), Some(&ns)), "group");
    assert_eq!(resolve_queue(None, Some(&pod), Some(&ns)), "from-pod");
    assert_eq!(resolve_queue(Some(""), Some(&pod), Some(&ns)), "from-pod");
    assert_eq!(resolve_queue(None, None, Some(&ns)), "from-ns");
    assert_eq!(
        resolve_queue(None, Some(&map("other", "x")), None),
        DEFAULT_QUEUE
    );
    assert_eq!(
        resolve_queue(None, Some(&map("muster.dev/queue", "")), None),
        "default"
    );
}

#[test]
fn volcano_queue_is_a_cluster_resource_that_writes_its_kind() {
    use kube::Resource;
    assert_eq!(
        volcano::Queue::api_version(&()),
        "scheduling.volcano.sh/v1beta1"
    );
    assert_eq!(volcano::Queue::plural(&()), "queues");
    assert_eq!(
        volcano::Queue::url_path(&(), None),
        "/apis/scheduling.volcano.sh/v1beta1/queues"
    );
    let q = volcano::Queue::new("q", volcano::QueueSpec::default());
    let v = serde_json::to_value(&q).unwrap();
    assert_eq!(v["kind"], "Queue");
    assert_eq!(v["apiVersion"], "scheduling.volcano.sh/v1beta1");
    let back: volcano::Queue = serde_json::from_value(v).unwrap();
    assert_eq!(back, q);
}
