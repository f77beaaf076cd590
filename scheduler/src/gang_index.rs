//! Pods by gang, kept from the pod watch, so one gang can be planned without scanning every pod.
//!
//! A relist (watch restart) builds a fresh index that replaces the old one when the list is
//! complete, so pods deleted while the watch was down do not linger.

use crate::gang::gang_of;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use muster_core::GangKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Index {
    by_gang: HashMap<GangKey, HashMap<String, ObjectRef<Pod>>>,
    gang_of_uid: HashMap<String, GangKey>,
}

impl Index {
    fn insert(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let key = gang_of(pod).key;
        if let Some(old) = self.gang_of_uid.get(&uid)
            && *old != key
        {
            let old = old.clone();
            self.remove_uid(&uid, &old);
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let r = ObjectRef::new(&name).within(&key.namespace);
        self.by_gang
            .entry(key.clone())
            .or_default()
            .insert(uid.clone(), r);
        self.gang_of_uid.insert(uid, key);
    }

    fn remove(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        if let Some(key) = self.gang_of_uid.get(uid).cloned() {
            self.remove_uid(uid, &key);
        }
    }

    fn remove_uid(&mut self, uid: &str, key: &GangKey) {
        self.gang_of_uid.remove(uid);
        if let Some(members) = self.by_gang.get_mut(key) {
            members.remove(uid);
            if members.is_empty() {
                self.by_gang.remove(key);
            }
        }
    }
}

#[derive(Clone, Default)]
pub struct GangIndex {
    live: Arc<Mutex<Index>>,
    relisting: Arc<Mutex<Option<Index>>>,
}

impl GangIndex {
    /// Applies one pod watch event.
    pub fn apply(&self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(p) => lock(&self.live).insert(p),
            watcher::Event::Delete(p) => lock(&self.live).remove(p),
            watcher::Event::Init => *lock(&self.relisting) = Some(Index::default()),
            watcher::Event::InitApply(p) => {
                if let Some(ix) = lock(&self.relisting).as_mut() {
                    ix.insert(p);
                }
            }
            watcher::Event::InitDone => {
                if let Some(ix) = lock(&self.relisting).take() {
                    *lock(&self.live) = ix;
                }
            }
        }
    }

    /// References to the pods of `gang` (any phase).
    pub fn members(&self, gang: &GangKey) -> Vec<ObjectRef<Pod>> {
        lock(&self.live)
            .by_gang
            .get(gang)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain map; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, uid: &str, gang: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p.metadata.namespace = Some("ns".into());
        if let Some(g) = gang {
            p.metadata.annotations = Some(BTreeMap::from([
                (
                    muster_api::names::ANNOTATION_GANG.to_string(),
                    g.to_string(),
                ),
                (
                    muster_api::names::ANNOTATION_MIN_AVAILABLE.to_string(),
                    "2".to_string(),
                ),
            ]));
        }
        p
    }

    fn names(ix: &GangIndex, p: &Pod) -> Vec<String> {
        let mut v: Vec<String> = ix
            .members(&gang_of(p).key)
            .into_iter()
            .map(|r| r.name)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn tracks_members_through_applies_deletes_and_gang_changes() {
        let ix = GangIndex::default();
        let a = pod("a", "1", Some("g"));
        let b = pod("b", "2", Some("g"));
        ix.apply(&watcher::Event::Apply(a.clone()));
        ix.apply(&watcher::Event::Apply(b.clone()));
        assert_eq!(names(&ix, &a), vec!["a", "b"]);
        ix.apply(&watcher::Event::Delete(a.clone()));
        assert_eq!(names(&ix, &b), vec!["b"]);
        // b leaves the gang (label edited): it becomes a gang of one.
        let b_alone = pod("b", "2", None);
        ix.apply(&watcher::Event::Apply(b_alone.clone()));
        assert!(names(&ix, &a).is_empty());
        assert_eq!(names(&ix, &b_alone), vec!["b"]);
    }

    #[test]
    fn a_relist_drops_pods_deleted_while_the_watch_was_down() {
        let ix = GangIndex::default();
        let a = pod("a", "1", Some("g"));
        let b = pod("b", "2", Some("g"));
        ix.apply(&watcher::Event::Apply(a.clone()));
        ix.apply(&watcher::Event::Apply(b.clone()));
        ix.apply(&watcher::Event::Init);
        ix.apply(&watcher::Event::InitApply(b.clone()));
        // Until the relist completes, the old view answers.
        assert_eq!(names(&ix, &a), vec!["a", "b"]);
        ix.apply(&watcher::Event::InitDone);
        assert_eq!(names(&ix, &a), vec!["b"]);
    }
}
