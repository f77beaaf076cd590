//! Which GPUs are held by which live pods, so a second pod never gets GPUs a first one holds.
//!
//! A GPU is held when a live pod (not terminated, still in the pod store) either was allocated
//! by this process (recorded here at `Allocate`, before the annotation patch lands) or carries
//! `muster.dev/gpu-allocation: allocated` (allocated before a plugin restart). Pods leaving the
//! store (the watch saw them go) or terminating free their GPUs without any bookkeeping.

use crate::pods::{PodInfo, PodKey, PodStore};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub uid: String,
    pub ids: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// Pods allocated by this process.
    allocated: BTreeMap<PodKey, Held>,
    /// Pods whose choice `GetPreferredAllocation` returned and that are not allocated yet: later
    /// calls prefer other candidates, so concurrent admissions do not all match the oldest pod.
    offered: BTreeSet<PodKey>,
    /// Pods whose annotations were rejected, with uid and reason: warned about once.
    rejected: BTreeMap<PodKey, (String, String)>,
}

impl Ledger {
    /// Drops entries of pods that are gone, terminated or re-created (uid changed).
    pub fn prune(&mut self, pods: &PodStore) {
        self.allocated.retain(|key, held| {
            pods.get(key)
                .is_some_and(|p| p.is_live() && (held.uid.is_empty() || p.uid == held.uid))
        });
        self.offered
            .retain(|key| pods.get(key).is_some_and(|p| p.is_live()));
        self.rejected
            .retain(|key, (uid, _)| pods.get(key).is_some_and(|p| p.uid == *uid));
    }

    /// Records that `pod`'s annotations were rejected for `reason`; whether this is news (a new
    /// pod, a re-created one, or a new reason), i.e. worth a warning.
    pub fn first_rejection(&mut self, pod: &PodInfo, reason: &str) -> bool {
        let entry = (pod.uid.clone(), reason.to_string());
        if self.rejected.get(&pod.key()) == Some(&entry) {
            return false;
        }
        self.rejected.insert(pod.key(), entry);
        true
    }

    pub fn is_allocated(&self, pod: &PodInfo) -> bool {
        pod.allocated || self.allocated.contains_key(&pod.key())
    }

    pub fn is_offered(&self, key: &str) -> bool {
        self.offered.contains(key)
    }

    pub fn offer(&mut self, key: PodKey) {
        self.offered.insert(key);
    }

    pub fn record(&mut self, pod: &PodInfo, ids: Vec<String>) {
        self.offered.remove(&pod.key());
        self.allocated.insert(
            pod.key(),
            Held {
                uid: pod.uid.clone(),
                ids,
            },
        );
    }

    /// The live pod holding `id`, if any (`pods` is a fresh snapshot of the store).
    pub fn holder<'p>(&self, id: &str, pods: &'p [PodInfo]) -> Option<&'p PodInfo> {
        pods.iter().filter(|p| p.is_live()).find(|p| {
            let in_memory = self
                .allocated
                .get(&p.key())
                .is_some_and(|h| h.ids.iter().any(|i| i == id));
            let annotated = p.allocated
                && p.gpu_ids
                    .as_ref()
                    .is_some_and(|ids| ids.iter().any(|i| i == id));
            in_memory || annotated
        })
    }
}
