//! Smoke test of the real control plane: kube-apiserver, kube-controller-manager and the
//! default kube-scheduler schedule a Job onto kwok GPU nodes, and an oversized GPU request is
//! refused with the scheduler's reason.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use common::{DEADLINE, container, namespace, wait_for};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use muster_testcluster::{ClusterSpec, NodeSpec, TestCluster};
use serde_json::json;

fn condition(pod: &Pod, type_: &str) -> Option<(String, Option<String>, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_pods_run_then_succeed_on_kwok_gpu_nodes() {
    let cluster = TestCluster::start(ClusterSpec::default().with_default_scheduler())
        .await
        .unwrap();
    let nodes = cluster
        .add_gpu_nodes(&NodeSpec::fixture("dgx-a100", 2))
        .await
        .unwrap();
    let client = cluster.client();
    namespace(&client, "smoke").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "smoke");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "smoke");

    // Record every phase each Job pod goes through, from before the Job exists, so a short
    // Running phase cannot be missed.
    let phases: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let seen = phases.clone();
    let watch = tokio::spawn(
        watcher(
            pods.clone(),
            watcher::Config::default().labels("job-name=smoke"),
        )
        .applied_objects()
        .for_each(move |pod| {
            if let Ok(pod) = pod {
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                let name = pod.metadata.name.clone().unwrap_or_default();
                if let Some(phase) = phase {
                    let mut seen = seen.lock().unwrap();
                    let list = seen.entry(name).or_default();
                    if list.last() != Some(&phase) {
                        list.push(phase);
                    }
                }
            }
            async {}
        }),
    );

    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "smoke"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {
                    // kwok's pod-complete stage (see tests/tools/build.sh) waits this long.
                    "pod-complete.stage.kwok.x-k8s.io/delay": "2s"
                }},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container(Some(4))]
                }
            }
        }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let done = wait_for(&jobs, "smoke", "the Job to complete", |job| {
        job.status.as_ref().and_then(|s| s.succeeded) == Some(2)
    })
    .await;
    let conditions = done.status.unwrap().conditions.unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True"),
        "Job has no Complete condition: {conditions:#?}"
    );

    let job_pods = pods.list(&Default::default()).await.unwrap().items;
    assert_eq!(job_pods.len(), 2, "{job_pods:#?}");
    let node_names: HashSet<&str> = nodes.iter().map(String::as_str).collect();
    for pod in &job_pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        assert!(
            node.is_some_and(|n| node_names.contains(n)),
            "pod not bound to a kwok node: {node:?}"
        );
    }
    // The watch may lag the Job status by an event or two.
    let started = std::time::Instant::now();
    loop {
        let snapshot = phases.lock().unwrap().clone();
        let complete = snapshot.len() == 2
            && snapshot.values().all(|p| {
                let running = p.iter().position(|x| x == "Running");
                let succeeded = p.iter().position(|x| x == "Succeeded");
                matches!((running, succeeded), (Some(r), Some(s)) if r < s)
            });
        if complete {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "pods did not go Running then Succeeded: {snapshot:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_asking_more_gpus_than_any_node_stays_pending_with_reason() {
    let cluster = TestCluster::start(ClusterSpec::default().with_default_scheduler())
        .await
        .unwrap();
    cluster
        .add_gpu_nodes(&NodeSpec::fixture("dgx-h100", 2))
        .await
        .unwrap();
    let client = cluster.client();
    namespace(&client, "big").await;
    let pods: Api<Pod> = Api::namespaced(client, "big");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "too-big"},
        "spec": {"containers": [container(Some(9))]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let pending = wait_for(&pods, "too-big", "the scheduler's verdict", |p| {
        condition(p, "PodScheduled").is_some_and(|(status, _, _)| status == "False")
    })
    .await;
    let (_, reason, message) = condition(&pending, "PodScheduled").unwrap();
    assert_eq!(reason.as_deref(), Some("Unschedulable"));
    let message = message.unwrap_or_default();
    assert!(
        message.contains("Insufficient nvidia.com/gpu"),
        "unexpected scheduler message: {message}"
    );
    let status = pending.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert!(pending.spec.unwrap().node_name.is_none());
}
