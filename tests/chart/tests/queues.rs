//! Queues in the chart (issue 17): the Queue CRD ships in crds/, a `default` Queue is created
//! unless `queues.createDefault=false`, and what the chart renders is a Queue Muster accepts.

mod common;
use common::*;
use muster_crds::queue_spec::{QueueResource, from_muster};

#[test]
fn the_queue_crd_ships_with_the_chart() {
    let objs = objects(&[]);
    let crd = one(&objs, "CustomResourceDefinition", "queues.muster.dev");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["kind"], "Queue");
}

#[test]
fn a_default_queue_is_created() {
    let objs = objects(&[]);
    let q = one(&objs, "Queue", "default");
    assert_eq!(q["apiVersion"], "muster.dev/v1alpha1");
    assert!(
        q["metadata"]["namespace"].is_null(),
        "Queue is cluster-scoped"
    );
    assert_eq!(q["metadata"]["labels"]["app.kubernetes.io/name"], "muster");
    let queue: muster_crds::Queue = serde_yaml::from_value(q.clone()).expect("a Queue");
    let d = from_muster(&queue).expect("Muster accepts the default queue");
    assert_eq!(d.name, "default");
    assert_eq!(d.parent, None);
    let gpu = d.quota(&QueueResource::Gpu { product: None });
    assert_eq!((gpu.guaranteed, gpu.limit, gpu.weight), (0, None, 1));
}

#[test]
fn the_default_queue_can_be_left_out_or_given_a_spec() {
    let objs = objects(&["queues.createDefault=false"]);
    assert!(of_kind(&objs, "Queue").is_empty());
    // The CRD still ships.
    one(&objs, "CustomResourceDefinition", "queues.muster.dev");

    let objs = objects(&[
        "queues.defaultSpec.gpu.limit=4",
        "queues.defaultSpec.gpu.weight=2",
    ]);
    let q = one(&objs, "Queue", "default");
    let queue: muster_crds::Queue = serde_yaml::from_value(q.clone()).unwrap();
    let gpu = from_muster(&queue)
        .unwrap()
        .quota(&QueueResource::Gpu { product: None });
    assert_eq!((gpu.limit, gpu.weight), (Some(4), 2));
}
