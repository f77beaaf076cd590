//! `GetPreferredAllocation` and `Allocate` decisions, independent of gRPC transport.
//!
//! # Matching a kubelet request to a pod
//!
//! The device-plugin API does not say which pod is being admitted, so the plugin infers it. A pod
//! is a *candidate* for a container request when all of these hold:
//! - it is in the pod store, live (not terminated or deleting), bound to this node (or not
//!   bound yet), and its `muster.dev/gpu-node` names this node (a stale choice for another node
//!   is ignored);
//! - it carries `muster.dev/gpu-ids` and is not allocated yet (neither the annotation
//!   `muster.dev/gpu-allocation: allocated` nor an in-memory record);
//! - its chosen set has exactly `allocation_size` distinct IDs, all within the request's
//!   available IDs, containing every must-include ID, none held by another live pod.
//!
//! Among candidates the plugin returns the set of the one not already offered to an earlier
//! call, then the earliest bound (PodScheduled time, else creation time), then by
//! `namespace/name`: the kubelet admits pods one at a time, in roughly the order they were bound.
//! `Allocate` attributes a container's IDs to the candidate whose chosen set equals them exactly
//! (same order of preference) and records that pod as allocated. Without a candidate the plugin
//! picks the best-linked set itself ([`fallback`]), and an unattributed `Allocate` is served
//! without a ledger entry (the kubelet's own bookkeeping is then the only guard).
//!
//! Limitation: the annotation is per pod, so a pod with several GPU containers matches only when
//! one container requests all its GPUs; other shapes get the fallback choice.

pub mod fallback;
pub mod ledger;
pub mod response;

use crate::devices::{DeviceList, Devices, Gpu};
use crate::metrics::Metrics;
use crate::pods::PodInfo;
use crate::pods::PodStore;
use crate::pods::kube::AllocatedPod;
use crate::proto;
use ledger::Ledger;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

/// Where a preferred allocation came from (a metric label and a log field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The scheduler's choice written on the pod.
    Annotation,
    /// The plugin's own best-linked set.
    Fallback,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Annotation => "annotation",
            Source::Fallback => "fallback",
        }
    }
}

/// One preferred set, with the pod it was matched to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preferred {
    pub ids: Vec<String>,
    pub source: Source,
    pub pod: Option<String>,
}

#[derive(Clone, Debug)]
pub struct AllocatorConfig {
    pub node_name: String,
    pub driver_root: PathBuf,
    pub cdi: bool,
    /// See [`crate::PluginConfig::annotation_wait`].
    pub annotation_wait: Duration,
}

pub struct Allocator {
    config: AllocatorConfig,
    devices: Devices,
    pods: PodStore,
    ledger: Mutex<Ledger>,
    recorder: Option<mpsc::UnboundedSender<AllocatedPod>>,
    metrics: Metrics,
}

/// A refused request: the gRPC status and the metric reason.
fn refuse(metrics: &Metrics, reason: &'static str, status: Status) -> Status {
    metrics.allocation_error(reason);
    tracing::warn!(reason, message = status.message(), "refusing allocation");
    status
}

impl Allocator {
    pub fn new(
        config: AllocatorConfig,
        devices: Devices,
        pods: PodStore,
        recorder: Option<mpsc::UnboundedSender<AllocatedPod>>,
        metrics: Metrics,
    ) -> Allocator {
        Allocator {
            config,
            devices,
            pods,
            ledger: Mutex::default(),
            recorder,
            metrics,
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_for_this_node(&self, pod: &PodInfo) -> bool {
        let node = self.config.node_name.as_str();
        pod.gpu_node.as_deref() == Some(node) && pod.node_name.as_deref().is_none_or(|n| n == node)
    }

    /// Candidates whose chosen set passes `fits`, best first (see the module docs).
    fn candidates(
        &self,
        ledger: &Ledger,
        pods: &[PodInfo],
        fits: impl Fn(&[String]) -> bool,
    ) -> Vec<PodInfo> {
        let mut found: Vec<PodInfo> = pods
            .iter()
            .filter(|p| p.is_live() && self.is_for_this_node(p) && !ledger.is_allocated(p))
            .filter(|p| {
                let Some(ids) = p.gpu_ids.as_deref() else {
                    return false;
                };
                let distinct: HashSet<&String> = ids.iter().collect();
                distinct.len() == ids.len()
                    && fits(ids)
                    && ids
                        .iter()
                        .all(|id| ledger.holder(id, pods).is_none_or(|h| h.key() == p.key()))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            (ledger.is_offered(&a.key()), a.since_ms, a.key()).cmp(&(
                ledger.is_offered(&b.key()),
                b.since_ms,
                b.key(),
            ))
        });
        found
    }

    /// The annotated pod whose choice fits this container request, marked as offered.
    fn match_request(
        &self,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Option<Preferred> {
        let pods = self.pods.snapshot();
        let mut ledger = self.ledger();
        ledger.prune(&self.pods);
        let available: HashSet<&String> = available.iter().collect();
        let pod = self
            .candidates(&ledger, &pods, |ids| {
                ids.len() == size
                    && ids.iter().all(|id| available.contains(id))
                    && must_include.iter().all(|m| ids.contains(m))
            })
            .into_iter()
            .next()?;
        ledger.offer(pod.key());
        Some(Preferred {
            ids: pod.gpu_ids.clone().unwrap_or_default(),
            source: Source::Annotation,
            pod: Some(pod.key()),
        })
    }

    /// One container's preferred allocation.
    pub async fn preferred(
        &self,
        request: &proto::ContainerPreferredAllocationRequest,
    ) -> Result<Preferred, Status> {
        let size = usize::try_from(request.allocation_size)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                refuse(
                    &self.metrics,
                    "bad_request",
                    Status::invalid_argument(format!(
                        "allocation_size must be positive, got {}",
                        request.allocation_size
                    )),
                )
            })?;
        let available = &request.available_device_i_ds;
        let must = &request.must_include_device_i_ds;
        // The kubelet may learn of a binding before our watch does: give the watch a moment.
        let deadline = tokio::time::Instant::now() + self.config.annotation_wait;
        loop {
            let version = self.pods.version();
            if let Some(found) = self.match_request(available, must, size) {
                self.metrics.preferred(Source::Annotation);
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.pods.changed_since(version, left).await {
                break;
            }
        }
        let list = self.devices.current();
        let ids = fallback::best_set(&list, available, must, size).ok_or_else(|| {
            refuse(
                &self.metrics,
                "bad_request",
                Status::invalid_argument(format!(
                    "no set of {size} GPUs among {} available IDs includes the must-include IDs {must:?}",
                    available.len()
                )),
            )
        })?;
        self.metrics.preferred(Source::Fallback);
        Ok(Preferred {
            ids,
            source: Source::Fallback,
            pod: None,
        })
    }

    /// A device `Allocate` may hand out: known, healthy, not held by a live pod.
    fn check_device<'l>(
        &self,
        id: &str,
        list: &'l DeviceList,
        ledger: &Ledger,
        pods: &[PodInfo],
    ) -> Result<&'l Gpu, Status> {
        let gpu = list.by_uuid(id).ok_or_else(|| {
            refuse(
                &self.metrics,
                "unknown_device",
                Status::invalid_argument(format!(
                    "unknown device {id}: this plugin advertises {} GPUs on node {}",
                    list.gpus.len(),
                    self.config.node_name
                )),
            )
        })?;
        if !gpu.healthy {
            return Err(refuse(
                &self.metrics,
                "unhealthy_device",
                Status::failed_precondition(format!(
                    "device {id} (GPU {}) is unhealthy: {}",
                    gpu.index,
                    gpu.reason.as_deref().unwrap_or("unknown reason")
                )),
            ));
        }
        if let Some(holder) = ledger.holder(id, pods) {
            return Err(refuse(
                &self.metrics,
                "device_in_use",
                Status::failed_precondition(format!(
                    "device {id} (GPU {}) is allocated to live pod {}",
                    gpu.index,
                    holder.key()
                )),
            ));
        }
        Ok(gpu)
    }

    /// A whole `AllocateRequest`: every container is checked before any is recorded, so a
    /// refused request leaves no trace.
    pub fn allocate(
        &self,
        request: &proto::AllocateRequest,
    ) -> Result<proto::AllocateResponse, Status> {
        let list = self.devices.current();
        let pods = self.pods.snapshot();
        let mut ledger = self.ledger();
        ledger.prune(&self.pods);
        let mut seen: HashSet<&str> = HashSet::new();
        let mut plans: Vec<(Vec<&Gpu>, Option<PodInfo>)> = Vec::new();
        for (n, container) in request.container_requests.iter().enumerate() {
            let ids = &container.devices_ids;
            if ids.is_empty() {
                return Err(refuse(
                    &self.metrics,
                    "bad_request",
                    Status::invalid_argument(format!("container request {n} names no devices")),
                ));
            }
            let mut gpus = Vec::with_capacity(ids.len());
            for id in ids {
                if !seen.insert(id.as_str()) {
                    return Err(refuse(
                        &self.metrics,
                        "bad_request",
                        Status::invalid_argument(format!("device {id} is requested twice")),
                    ));
                }
                gpus.push(self.check_device(id, &list, &ledger, &pods)?);
            }
            let wanted: HashSet<&String> = ids.iter().collect();
            let pod = self
                .candidates(&ledger, &pods, |chosen| {
                    chosen.len() == wanted.len() && chosen.iter().all(|c| wanted.contains(c))
                })
                .into_iter()
                .find(|p| {
                    !plans
                        .iter()
                        .any(|(_, q)| q.as_ref().is_some_and(|q| q.key() == p.key()))
                });
            plans.push((gpus, pod));
        }
        let mut responses = Vec::with_capacity(plans.len());
        for (gpus, pod) in plans {
            let ids: Vec<String> = gpus.iter().map(|g| g.uuid.clone()).collect();
            match &pod {
                Some(pod) => {
                    ledger.record(pod, ids.clone());
                    tracing::info!(pod = %pod.key(), gpus = ?ids, "allocated the scheduler's choice");
                    if let Some(tx) = &self.recorder {
                        let sent = tx.send(AllocatedPod {
                            namespace: pod.namespace.clone(),
                            name: pod.name.clone(),
                            uid: pod.uid.clone(),
                        });
                        if sent.is_err() {
                            tracing::error!(pod = %pod.key(), "allocation recorder stopped; annotation not written");
                        }
                    }
                }
                None => tracing::info!(gpus = ?ids, "allocated GPUs no annotated pod chose"),
            }
            self.metrics.allocated();
            responses.push(response::container_response(
                &gpus,
                &self.config.driver_root,
                self.config.cdi,
            ));
        }
        Ok(proto::AllocateResponse {
            container_responses: responses,
        })
    }
}
