//! The pods every scheduler gets: identical except for what `gang_forms::dress` adds.

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::competitors::Competitor;
use crate::gang_forms::{create_group, dress};

/// Label naming the gang of a benchmark pod (the same for every scheduler).
pub const GANG_LABEL: &str = "bench.muster.dev/gang";

/// One gang: `size` pods of `gpus` GPUs each; all of them are needed (min = size).
#[derive(Clone, Debug)]
pub struct Gang {
    pub name: String,
    pub size: usize,
    pub gpus: u32,
    pub priority_class: Option<String>,
    /// Seconds the gang runs once whole (the benchmark deletes it then); None: forever.
    pub run_seconds: Option<f64>,
}

impl Gang {
    pub fn new(name: impl Into<String>, size: usize, gpus: u32) -> Gang {
        Gang {
            name: name.into(),
            size,
            gpus,
            priority_class: None,
            run_seconds: None,
        }
    }

    pub fn pod_name(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    pub fn gpu_total(&self) -> u64 {
        self.size as u64 * u64::from(self.gpus)
    }
}

/// Member `i` of `gang` as `competitor` receives it.
pub fn pod(competitor: Competitor, gang: &Gang, i: usize) -> Result<Pod> {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": gang.pod_name(i),
            "labels": {GANG_LABEL: gang.name},
            "annotations": {},
        },
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": "registry.example/train:1",
                "resources": {
                    "limits": {"nvidia.com/gpu": gang.gpus.to_string()},
                    "requests": {"cpu": "1", "memory": "1Gi"},
                },
            }],
        },
    });
    if let Some(pc) = &gang.priority_class {
        pod["spec"]["priorityClassName"] = json!(pc);
    }
    dress(&mut pod, competitor, &gang.name, gang.size);
    serde_json::from_value(pod).context("building the pod")
}

/// Pods in submission order: whole gangs one after another, or interleaved (member 0 of every
/// gang, then member 1, ...), which is what lets a gang-unaware scheduler deadlock.
pub fn order(gangs: &[Gang], interleave: bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if interleave {
        let max = gangs.iter().map(|g| g.size).max().unwrap_or(0);
        for i in 0..max {
            for (g, gang) in gangs.iter().enumerate() {
                if i < gang.size {
                    out.push((g, i));
                }
            }
        }
    } else {
        for (g, gang) in gangs.iter().enumerate() {
            for i in 0..gang.size {
                out.push((g, i));
            }
        }
    }
    out
}

pub async fn create_namespace(client: &Client, ns: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {ns}")),
    }
}

pub async fn create_priority_class(client: &Client, name: &str, value: i32) -> Result<()> {
    let api: Api<PriorityClass> = Api::all(client.clone());
    let obj: PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating PriorityClass {name}")),
    }
}

/// Concurrent API clients creating pods (the same for every scheduler).
pub const SUBMITTERS: usize = 32;

/// Creates the group objects, then the pods in `order`, with [`SUBMITTERS`] concurrent
/// requests; `on_create(gang, member)` runs just before each pod's create request.
pub async fn submit(
    client: &Client,
    competitor: Competitor,
    ns: &str,
    gangs: &[Gang],
    order: &[(usize, usize)],
    on_create: &(dyn Fn(usize, usize) + Sync),
) -> Result<()> {
    for gang in gangs {
        create_group(
            client,
            competitor,
            ns,
            &gang.name,
            gang.size,
            gang.priority_class.as_deref(),
        )
        .await?;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut pods = Vec::with_capacity(order.len());
    for &(g, i) in order {
        pods.push((g, i, pod(competitor, &gangs[g], i)?));
    }
    let results: Vec<Result<()>> = futures::stream::iter(pods)
        .map(|(g, i, p)| {
            let api = api.clone();
            async move {
                on_create(g, i);
                api.create(&PostParams::default(), &p)
                    .await
                    .map(|_| ())
                    .with_context(|| format!("creating pod {}", gangs[g].pod_name(i)))
            }
        })
        .buffer_unordered(SUBMITTERS)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Deletes a gang's pods at once (grace 0), as a finished job would disappear.
pub async fn delete_gang(client: &Client, ns: &str, gang: &Gang) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for i in 0..gang.size {
        if let Err(e) = api.delete(&gang.pod_name(i), &dp).await
            && !matches!(&e, kube::Error::Api(a) if a.code == 404)
        {
            tracing::warn!(pod = gang.pod_name(i), "delete failed: {e}");
        }
    }
}
