//! The demo's scene: the examples submitted with kubectl, each waited for until Muster has
//! acted on it, then the cluster seen through `kubectl muster`.

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;

use muster_api::names::{ANNOTATION_GPU_ALLOCATION, GPU_ALLOCATION_DONE};

use crate::demo::{Shell, has_event, job_pods, poll};

/// Pods with the node the scheduler bound them to and the device plugin's mark.
const POD_COLUMNS: &str = "custom-columns=POD:.metadata.name,PHASE:.status.phase,\
NODE:.spec.nodeName,DEVICE-PLUGIN:.metadata.annotations.muster\\.dev/gpu-allocation";

fn bound(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The scheduler has looked at the pod and said why it cannot place it.
fn unschedulable(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.message.is_some())
    })
}

/// The node's device plugin allocated the scheduler's choice (the fake kubelet admitted it).
fn allocated(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_GPU_ALLOCATION))
        .is_some_and(|v| v == GPU_ALLOCATION_DONE)
}

/// Waits until `members` pods of `job` run with their GPUs allocated by the device plugin.
async fn wait_running(client: &Client, job: &str, members: usize) -> Result<()> {
    poll(&format!("{job}: {members} pods Running"), || async {
        let pods = job_pods(client, job).await?;
        Ok(pods.iter().filter(|p| bound(p) && allocated(p)).count() == members)
    })
    .await
}

async fn wait_pending(client: &Client, job: &str, members: usize) -> Result<()> {
    poll(&format!("{job}: {members} pods pending"), || async {
        let pods = job_pods(client, job).await?;
        Ok(pods.len() == members && pods.iter().all(|p| !bound(p) && unschedulable(p)))
    })
    .await
}

pub async fn play(sh: &Shell, client: &Client) -> Result<()> {
    println!("\n# A gang that runs: an Indexed Job, 4 workers x 2 GPUs, all or nothing.");
    sh.kubectl(&["apply", "-f", "examples/indexed-job-gang.yaml"])?;
    wait_running(client, "train-indexed", 4).await?;

    println!("\n# Muster's own PodGroup in a queue: 2 workers x 4 GPUs.");
    sh.kubectl(&["apply", "-f", "examples/muster-podgroup.yaml"])?;
    wait_running(client, "llm-finetune", 2).await?;

    println!(
        "\n# A gang that waits: 2 x 8 GPUs, more than is free; no member holds a GPU meanwhile."
    );
    sh.kubectl(&["apply", "-f", "examples/waiting-gang.yaml"])?;
    wait_pending(client, "pretrain", 2).await?;

    println!(
        "\n# A high-priority gang that preempts: 2 x 8 GPUs; lower-priority gangs are evicted whole."
    );
    sh.kubectl(&["apply", "-f", "examples/preempting-gang.yaml"])?;
    wait_running(client, "urgent-train", 2).await?;
    poll("a Preempted event", || has_event(client, "Preempted")).await?;

    sh.kubectl(&["get", "events", "--field-selector", "reason=Preempted"])?;
    sh.kubectl(&["get", "jobs"])?;
    sh.kubectl(&["get", "pods", "-o", POD_COLUMNS])?;
    sh.kubectl(&["get", "podgroups"])?;
    sh.kubectl(&["muster", "top", "jobs"])?;
    sh.kubectl(&["muster", "top", "nodes"])?;
    sh.kubectl(&["muster", "explain", "pretrain"])?;
    Ok(())
}
