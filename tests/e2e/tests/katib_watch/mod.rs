//! The trial-pod watcher of operators_katib.rs: polls every trial pod of namespace `ml` by the
//! training-operator's job-name label and records any trial placed in part, any GPU handed to
//! two running pods, and more trials running at once than the cluster has room for.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::muster::{gpu_ids, node_of};

pub const JOB_NAME_LABEL: &str = "training.kubeflow.org/job-name";
pub const NS: &str = "ml";
/// Pods per trial (master + worker), 8 GPUs each.
pub const TRIAL_PODS: usize = 2;
/// Trials that fit at once (32 GPUs, 16 per trial).
pub const ROOM_FOR: usize = 2;
/// A gang seen bound in part for longer than this is placed in part (Muster binds a gang's
/// members together behind a barrier: an observation may fall between two Bindings).
pub const PARTIAL_GRACE: Duration = Duration::from_secs(2);

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn finished(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

pub fn job_of(p: &Pod) -> Option<String> {
    p.meta().labels.as_ref()?.get(JOB_NAME_LABEL).cloned()
}

/// Every trial pod of the namespace by job.
pub async fn pods_by_job(client: &Client) -> BTreeMap<String, Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pods = api
        .list(&ListParams::default().labels(JOB_NAME_LABEL))
        .await
        .expect("list pods")
        .items;
    let mut by_job: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods {
        if let Some(j) = job_of(&p) {
            by_job.entry(j).or_default().push(p);
        }
    }
    by_job
}

/// A job's pods bound and not finished (and not being deleted).
pub fn running(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
        .filter(|p| node_of(p).is_some())
        .count()
}

pub fn bound(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| node_of(p).is_some()).count()
}

/// What the watcher saw.
#[derive(Default)]
pub struct Seen {
    pub violations: Vec<String>,
    /// Most trials with pods running at once.
    pub max_running_trials: usize,
    /// Jobs in the order they first ran whole.
    pub whole_order: Vec<String>,
    pub polls: u64,
}

/// Polls every trial pod every 100 ms until dropped: a trial bound in part (some of its pods
/// bound, fewer than all, before any finished) for longer than [`PARTIAL_GRACE`], a GPU on two
/// running pods, or more than two trials running at once is a violation.
pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn start(client: Client) -> Watcher {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let mut partial_since: HashMap<String, Instant> = HashMap::new();
            let mut done: HashSet<String> = HashSet::new();
            loop {
                let by_job = pods_by_job(&client).await;
                observe(
                    &mut s.lock().unwrap(),
                    &by_job,
                    &mut partial_since,
                    &mut done,
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Watcher { seen, task }
    }

    /// Stops watching; what was seen.
    pub fn finish(self) -> Seen {
        self.task.abort();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// One poll of the [`Watcher`].
pub fn observe(
    seen: &mut Seen,
    by_job: &BTreeMap<String, Vec<Pod>>,
    partial_since: &mut HashMap<String, Instant>,
    done: &mut HashSet<String>,
) {
    let now = Instant::now();
    seen.polls += 1;
    let mut running_trials = 0;
    let mut gpus: HashMap<String, String> = HashMap::new();
    for (job, pods) in by_job {
        if pods
            .iter()
            .any(|p| finished(p) || p.metadata.deletion_timestamp.is_some())
        {
            done.insert(job.clone());
        }
        if running(pods) > 0 {
            running_trials += 1;
        }
        let b = bound(pods);
        if b == TRIAL_PODS && !seen.whole_order.contains(job) {
            seen.whole_order.push(job.clone());
        }
        if !done.contains(job) && b > 0 && b < TRIAL_PODS {
            let since = *partial_since.entry(job.clone()).or_insert(now);
            if now - since > PARTIAL_GRACE {
                let v = format!(
                    "{job} bound in part for {:?}: {}",
                    now - since,
                    describe(pods)
                );
                seen.violations.push(v);
            }
        } else {
            partial_since.remove(job);
        }
        for p in pods.iter().filter(|p| !finished(p) && node_of(p).is_some()) {
            let pod = p.metadata.name.clone().unwrap_or_default();
            for id in gpu_ids(p) {
                if let Some(other) = gpus.insert(id.clone(), pod.clone()) {
                    seen.violations
                        .push(format!("GPU {id} on {other} and {pod}"));
                }
            }
        }
    }
    if running_trials > ROOM_FOR {
        seen.violations
            .push(format!("{running_trials} trials running at once"));
    }
    seen.max_running_trials = seen.max_running_trials.max(running_trials);
}

pub fn describe(pods: &[Pod]) -> String {
    let mut s: Vec<_> = pods
        .iter()
        .map(|p| {
            format!(
                "{}@{}:{}",
                p.metadata.name.as_deref().unwrap_or(""),
                node_of(p).unwrap_or_else(|| "-".into()),
                phase(p)
            )
        })
        .collect();
    s.sort();
    s.join(" ")
}

pub fn describe_all(by_job: &BTreeMap<String, Vec<Pod>>) -> String {
    by_job
        .iter()
        .map(|(j, p)| format!("{j}: {}", describe(p)))
        .collect::<Vec<_>>()
        .join("; ")
}
