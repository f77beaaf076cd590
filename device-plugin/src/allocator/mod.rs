//! `GetPreferredAllocation` and `Allocate` decisions, independent of gRPC transport.
//!
//! # Matching a kubelet request to a pod
//!
//! The device-plugin API does not say which pod is being admitted, so the plugin infers it. A pod
//! is a *candidate* for a container request when all of these hold:
//! - it is in the pod store, live (not terminated or deleting), and not allocated yet (neither
//!   the annotation `muster.dev/gpu-allocation: allocated` nor an in-memory record);
//! - its annotations are a valid choice for this node ([`annotated_choice`]): bound to this node
//!   (or not bound yet), `muster.dev/gpu-node` names this node, and `muster.dev/gpu-ids` names at
//!   least one GPU, each a GPU this plugin advertises, none twice. Anything else is ignored with
//!   a warning (once per pod), never honoured;
//! - its chosen set has exactly `allocation_size` IDs, all within the request's available IDs,
//!   containing every must-include ID, none held by another live pod. When no candidate fits a
//!   request while valid choices are waiting, the fallback is logged as a warning naming them.
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

/// Why a pod's `muster.dev/gpu-ids` / `muster.dev/gpu-node` cannot be honoured on this node,
/// whatever the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// `muster.dev/gpu-node` is absent or names another node, or the pod is bound to another
    /// node than the one its choice was made for.
    OtherNode {
        gpu_node: Option<String>,
        bound_to: Option<String>,
    },
    /// The annotation names no GPU.
    Empty,
    /// A UUID that is not one of this node's GPUs.
    UnknownDevice(String),
    /// A UUID named twice.
    Duplicate(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::OtherNode {
                gpu_node: None,
                bound_to,
            } => write!(
                f,
                "muster.dev/gpu-ids without muster.dev/gpu-node (pod bound to {})",
                bound_to.as_deref().unwrap_or("no node yet")
            ),
            Rejected::OtherNode {
                gpu_node: Some(planned),
                bound_to,
            } => write!(
                f,
                "the GPUs were chosen for node {planned} but the pod is bound to {}",
                bound_to.as_deref().unwrap_or("no node yet")
            ),
            Rejected::Empty => write!(f, "muster.dev/gpu-ids names no GPU"),
            Rejected::UnknownDevice(id) => write!(f, "{id} is not a GPU of this node"),
            Rejected::Duplicate(id) => write!(f, "{id} is named twice"),
        }
    }
}

/// The scheduler's choice on `pod` if this plugin may honour it on `node`: `Ok(None)` for a pod
/// without a choice or whose choice is another node's business (planned for and not bound to
/// `node`), `Err` for a choice that concerns this node but cannot be trusted.
pub fn annotated_choice<'p>(
    pod: &'p PodInfo,
    node: &str,
    list: &DeviceList,
) -> Result<Option<&'p [String]>, Rejected> {
    let Some(ids) = pod.gpu_ids.as_deref() else {
        return Ok(None);
    };
    let planned = pod.gpu_node.as_deref();
    let bound = pod.node_name.as_deref();
    if planned != Some(node) && bound != Some(node) {
        return Ok(None);
    }
    if planned != Some(node) || bound.is_some_and(|b| b != node) {
        return Err(Rejected::OtherNode {
            gpu_node: pod.gpu_node.clone(),
            bound_to: pod.node_name.clone(),
        });
    }
    if ids.is_empty() {
        return Err(Rejected::Empty);
    }
    let mut seen = HashSet::with_capacity(ids.len());
    for id in ids {
        if list.by_uuid(id).is_none() {
            return Err(Rejected::UnknownDevice(id.clone()));
        }
        if !seen.insert(id.as_str()) {
            return Err(Rejected::Duplicate(id.clone()));
        }
    }
    Ok(Some(ids))
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

    /// `pod`'s valid choice; an invalid one is warned about (once per pod and reason) and `None`.
    fn valid_choice<'p>(
        &self,
        ledger: &mut Ledger,
        pod: &'p PodInfo,
        list: &DeviceList,
    ) -> Option<&'p [String]> {
        match annotated_choice(pod, &self.config.node_name, list) {
            Ok(ids) => ids,
            Err(why) => {
                if ledger.first_rejection(pod, &why.to_string()) {
                    tracing::warn!(
                        pod = %pod.key(),
                        reason = %why,
                        gpu_ids = ?pod.gpu_ids,
                        gpu_node = ?pod.gpu_node,
                        "ignoring the scheduler's GPU choice on this pod"
                    );
                }
                None
            }
        }
    }

    /// Candidates whose chosen set passes `fits`, best first (see the module docs).
    fn candidates(
        &self,
        ledger: &mut Ledger,
        pods: &[PodInfo],
        list: &DeviceList,
        fits: impl Fn(&[String]) -> bool,
    ) -> Vec<PodInfo> {
        let mut valid: Vec<(&PodInfo, &[String])> = Vec::new();
        for pod in pods {
            if !pod.is_live() || ledger.is_allocated(pod) {
                continue;
            }
            if let Some(ids) = self.valid_choice(ledger, pod, list) {
                valid.push((pod, ids));
            }
        }
        let mut found: Vec<PodInfo> = valid
            .into_iter()
            .filter(|(p, ids)| {
                fits(ids)
                    && ids
                        .iter()
                        .all(|id| ledger.holder(id, pods).is_none_or(|h| h.key() == p.key()))
            })
            .map(|(p, _)| p.clone())
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

    /// Valid choices still waiting for their `Allocate`, as `namespace/name (N GPUs)`: named
    /// when a request falls back although they exist.
    fn waiting(&self, ledger: &mut Ledger, pods: &[PodInfo], list: &DeviceList) -> Vec<String> {
        self.candidates(ledger, pods, list, |_| true)
            .iter()
            .map(|p| {
                let n = p.gpu_ids.as_ref().map_or(0, Vec::len);
                format!("{} ({n} GPUs)", p.key())
            })
            .collect()
    }

    /// The annotated pod whose choice fits this container request, marked as offered.
    fn match_request(
        &self,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Option<Preferred> {
        let pods = self.pods.snapshot();
        let list = self.devices.current();
        let mut ledger = self.ledger();
        ledger.prune(&self.pods);
        let available: HashSet<&String> = available.iter().collect();
        let pod = self
            .candidates(&mut ledger, &pods, &list, |ids| {
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
        let waiting = {
            let pods = self.pods.snapshot();
            let mut ledger = self.ledger();
            self.waiting(&mut ledger, &pods, &list)
        };
        if !waiting.is_empty() {
            tracing::warn!(
                size,
                available = available.len(),
                must_include = ?must,
                waiting = ?waiting,
                "no waiting pod's GPU choice fits this request (count, available or must-include IDs); the plugin chooses"
            );
        }
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
                .candidates(&mut ledger, &pods, &list, |chosen| {
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
                None => {
                    let waiting = self.waiting(&mut ledger, &pods, &list);
                    if waiting.is_empty() {
                        tracing::info!(gpus = ?ids, "allocated GPUs no annotated pod chose");
                    } else {
                        tracing::warn!(gpus = ?ids, waiting = ?waiting, "allocated GPUs no waiting pod chose");
                    }
                }
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

#[cfg(test)]
mod tests {
    //! The scheduler's annotations are input: whatever they say, the plugin neither honours a
    //! choice it cannot check nor panics, and says why it ignored one.
    use super::*;
    use std::sync::Arc;

    const NODE: &str = "n1";

    /// Log lines at WARN and above, captured for the current thread.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
        type Writer = Log;
        fn make_writer(&'a self) -> Log {
            self.clone()
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
        /// WARN lines mentioning every needle.
        fn warnings(&self, needles: &[&str]) -> usize {
            self.text()
                .lines()
                .filter(|l| l.contains("WARN") && needles.iter().all(|n| l.contains(n)))
                .count()
        }
    }

    struct Fixture {
        allocator: Allocator,
        pods: PodStore,
        recorded: mpsc::UnboundedReceiver<AllocatedPod>,
        uuids: Vec<String>,
        log: Log,
        _guard: tracing::subscriber::DefaultGuard,
    }

    fn fixture() -> Fixture {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        let machine = muster_api::machines::builtin("dgx1-v100")
            .expect("built-in fixture")
            .for_node(NODE);
        let list = DeviceList::from_machine(&machine);
        let uuids = list.gpus.iter().map(|g| g.uuid.clone()).collect();
        let pods = PodStore::new();
        let (tx, recorded) = mpsc::unbounded_channel();
        let allocator = Allocator::new(
            AllocatorConfig {
                node_name: NODE.into(),
                driver_root: PathBuf::from("/"),
                cdi: false,
                annotation_wait: Duration::ZERO,
            },
            Devices::new(list),
            pods.clone(),
            Some(tx),
            Metrics::new().expect("metrics register"),
        );
        Fixture {
            allocator,
            pods,
            recorded,
            uuids,
            log,
            _guard: guard,
        }
    }

    /// A live pod bound to this node with this choice.
    fn pod(name: &str, ids: &[String]) -> PodInfo {
        PodInfo {
            namespace: "team".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node_name: Some(NODE.into()),
            gpu_ids: Some(ids.to_vec()),
            gpu_node: Some(NODE.into()),
            allocated: false,
            terminated: false,
            since_ms: 1,
        }
    }

    impl Fixture {
        /// Not the best-linked quad of a DGX-1 ({0,1,2,3} or {4,5,6,7}): only an honoured
        /// annotation explains it.
        fn odd_quad(&self) -> Vec<String> {
            [1, 3, 5, 7]
                .iter()
                .map(|&i| self.uuids[i].clone())
                .collect()
        }

        async fn preferred(&self, size: i32) -> Preferred {
            self.allocator
                .preferred(&proto::ContainerPreferredAllocationRequest {
                    available_device_i_ds: self.uuids.clone(),
                    must_include_device_i_ds: vec![],
                    allocation_size: size,
                })
                .await
                .expect("a preferred allocation")
        }

        fn allocate(&self, ids: &[String]) -> Result<proto::AllocateResponse, Status> {
            self.allocator.allocate(&proto::AllocateRequest {
                container_requests: vec![proto::ContainerAllocateRequest {
                    devices_ids: ids.to_vec(),
                }],
            })
        }

        /// The pods `Allocate` attributed GPUs to (and would mark allocated).
        fn recorded(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.recorded.try_recv().ok())
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect()
        }

        /// `pod`'s choice is not used: the preferred answer is the plugin's own, and an
        /// `Allocate` of the kubelet's IDs is served but not attributed to the pod.
        async fn assert_ignored(&mut self, size: i32) {
            let preferred = self.preferred(size).await;
            assert_eq!(preferred.source, Source::Fallback, "{preferred:?}");
            assert_eq!(preferred.pod, None);
            let response = self.allocate(&preferred.ids).expect("the kubelet's IDs");
            assert_eq!(response.container_responses.len(), 1);
            assert_eq!(self.recorded(), Vec::<String>::new(), "attributed to a pod");
        }
    }

    #[tokio::test]
    async fn a_valid_choice_is_honoured_without_warnings() {
        let mut f = fixture();
        let chosen = f.odd_quad();
        f.pods.apply(pod("ok", &chosen));
        let preferred = f.preferred(4).await;
        assert_eq!(preferred.source, Source::Annotation);
        assert_eq!(preferred.ids, chosen);
        f.allocate(&chosen).expect("allocated");
        assert_eq!(f.recorded(), ["team/ok"]);
        assert_eq!(f.log.warnings(&[]), 0, "{}", f.log.text());
    }

    #[tokio::test]
    async fn a_uuid_that_is_not_a_gpu_of_this_node_voids_the_choice() {
        let mut f = fixture();
        let foreign = "GPU-00000000-0000-0000-0000-00000000beef".to_string();
        let mut ids = f.odd_quad();
        ids[3] = foreign.clone();
        f.pods.apply(pod("foreign", &ids));
        f.assert_ignored(4).await;
        // Nor does a request for the three GPUs it does name pick it.
        f.assert_ignored(3).await;
        assert_eq!(
            f.log.warnings(&["team/foreign", &foreign]),
            1,
            "one warning naming the pod and the UUID:\n{}",
            f.log.text()
        );
        // Allocate never hands out the foreign ID either.
        let err = f.allocate(&[foreign]).expect_err("unknown device");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn a_duplicated_uuid_voids_the_choice() {
        let mut f = fixture();
        let quad = f.odd_quad();
        let ids = vec![
            quad[0].clone(),
            quad[1].clone(),
            quad[1].clone(),
            quad[2].clone(),
        ];
        f.pods.apply(pod("dup", &ids));
        f.assert_ignored(4).await;
        f.assert_ignored(3).await;
        assert_eq!(
            f.log.warnings(&["team/dup", "twice", &quad[1]]),
            1,
            "{}",
            f.log.text()
        );
    }

    #[tokio::test]
    async fn a_choice_of_more_or_fewer_gpus_than_requested_is_not_used() {
        let mut f = fixture();
        let u = f.uuids.clone();
        f.pods.apply(pod("five", &u[0..5]));
        f.pods.apply(pod("three", &u[5..8]));
        f.assert_ignored(4).await;
        assert!(
            f.log.warnings(&["team/five", "team/three"]) >= 1,
            "the fallback says which choices did not fit:\n{}",
            f.log.text()
        );
        // An Allocate of four of them is not attributed to either pod.
        f.allocate(&u[0..4]).expect("allocated");
        f.allocate(&u[4..8]).expect("allocated");
        assert_eq!(f.recorded(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_choice_for_another_node_is_ignored() {
        let mut f = fixture();
        let quad = f.odd_quad();
        // Bound here, planned for n2.
        let mut elsewhere = pod("elsewhere", &quad);
        elsewhere.gpu_node = Some("n2".into());
        f.pods.apply(elsewhere);
        f.assert_ignored(4).await;
        assert_eq!(
            f.log.warnings(&["team/elsewhere", "n2"]),
            1,
            "{}",
            f.log.text()
        );
        f.pods.delete("team/elsewhere");
        // GPU IDs without the node they were chosen for.
        let mut nameless = pod("nameless", &quad);
        nameless.gpu_node = None;
        f.pods.apply(nameless);
        f.assert_ignored(4).await;
        assert_eq!(f.log.warnings(&["team/nameless"]), 1, "{}", f.log.text());
        f.pods.delete("team/nameless");
        // Planned here but bound to n2.
        let mut moved = pod("moved", &quad);
        moved.node_name = Some("n2".into());
        f.pods.apply(moved);
        f.assert_ignored(4).await;
        assert_eq!(f.log.warnings(&["team/moved", "n2"]), 1, "{}", f.log.text());
    }

    #[tokio::test]
    async fn a_pending_pod_planned_for_another_node_is_none_of_our_business() {
        let mut f = fixture();
        let mut pending = pod("pending", &f.odd_quad());
        pending.node_name = None;
        pending.gpu_node = Some("n2".into());
        let list = f.allocator.devices.current();
        assert_eq!(annotated_choice(&pending, NODE, &list), Ok(None));
        f.pods.apply(pending);
        f.assert_ignored(4).await;
        assert_eq!(f.log.warnings(&[]), 0, "{}", f.log.text());
    }

    #[tokio::test]
    async fn an_empty_choice_is_ignored_without_a_panic() {
        let mut f = fixture();
        f.pods.apply(pod("empty", &[]));
        f.pods.apply(pod("blank", &PodInfo::parse_gpu_ids(" , ,")));
        f.assert_ignored(2).await;
        assert_eq!(f.log.warnings(&["team/empty"]), 1, "{}", f.log.text());
        assert_eq!(f.log.warnings(&["team/blank"]), 1, "{}", f.log.text());
    }

    #[tokio::test]
    async fn a_bad_choice_is_warned_about_once() {
        let mut f = fixture();
        let mut ids = f.odd_quad();
        ids[0] = "GPU-not-here".into();
        f.pods.apply(pod("noisy", &ids));
        for _ in 0..5 {
            f.assert_ignored(4).await;
        }
        assert_eq!(
            f.log.warnings(&["team/noisy", "GPU-not-here"]),
            1,
            "{}",
            f.log.text()
        );
    }
}
