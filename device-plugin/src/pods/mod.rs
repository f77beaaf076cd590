//! What the plugin knows of the pods on its node: the scheduler's GPU choice, whether it was
//! allocated, whether the pod still holds its GPUs.
//!
//! [`PodStore`] is the seam: the kube watch ([`kube`]) writes it in production, tests write it
//! directly, and the allocator only reads it. Without a cluster the store stays empty and every
//! choice is the plugin's own.

pub mod kube;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::watch;

/// `namespace/name`.
pub type PodKey = String;

/// The parts of a pod the plugin needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `muster.dev/gpu-ids`, split on commas (`None` when absent).
    pub gpu_ids: Option<Vec<String>>,
    /// `muster.dev/gpu-node`.
    pub gpu_node: Option<String>,
    /// `muster.dev/gpu-allocation: allocated` is set.
    pub allocated: bool,
    /// Phase `Succeeded`/`Failed`, or being deleted: its GPUs are free again.
    pub terminated: bool,
    /// When it was bound (PodScheduled condition), else created: milliseconds since the epoch.
    /// Orders candidates (the kubelet admits pods roughly in binding order).
    pub since_ms: i64,
}

impl PodInfo {
    pub fn key(&self) -> PodKey {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Still holds (or will hold) the GPUs given to it.
    pub fn is_live(&self) -> bool {
        !self.terminated
    }

    /// Parses the annotation value: comma-separated, blanks dropped.
    pub fn parse_gpu_ids(value: &str) -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[derive(Debug, Default)]
struct Inner {
    pods: BTreeMap<PodKey, PodInfo>,
    /// False until the first full list arrived (the kube watch's initial sync).
    synced: bool,
}

/// Shared pod view. Cloning shares it. Every change bumps a version that waiters observe.
#[derive(Clone, Debug)]
pub struct PodStore {
    inner: Arc<RwLock<Inner>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for PodStore {
    fn default() -> Self {
        PodStore::new()
    }
}

impl PodStore {
    pub fn new() -> PodStore {
        let (tx, _) = watch::channel(0);
        PodStore {
            inner: Arc::default(),
            version: Arc::new(tx),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Adds or replaces a pod.
    pub fn apply(&self, pod: PodInfo) {
        self.write().pods.insert(pod.key(), pod);
        self.bump();
    }

    pub fn delete(&self, key: &str) {
        self.write().pods.remove(key);
        self.bump();
    }

    /// Replaces everything (a watch relist) and marks the store synced.
    pub fn replace_all(&self, pods: impl IntoIterator<Item = PodInfo>) {
        {
            let mut inner = self.write();
            inner.pods = pods.into_iter().map(|p| (p.key(), p)).collect();
            inner.synced = true;
        }
        self.bump();
    }

    pub fn mark_synced(&self) {
        self.write().synced = true;
        self.bump();
    }

    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    pub fn get(&self, key: &str) -> Option<PodInfo> {
        self.read().pods.get(key).cloned()
    }

    /// All pods, by key.
    pub fn snapshot(&self) -> Vec<PodInfo> {
        self.read().pods.values().cloned().collect()
    }

    /// Current version; pass to [`PodStore::changed_since`].
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Waits until the store changes after `version`, or `timeout`. Returns whether it changed.
    pub async fn changed_since(&self, version: u64, timeout: Duration) -> bool {
        let mut rx = self.version.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v != version))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
