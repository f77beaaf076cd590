//! What the background loop acts on before its next spaced round, noted from the pod watch:
//! gangs whose members arrive behind Muster's gate (kube-scheduler never asks about them, so
//! nothing else would place them between rounds), and capacity coming back (a bound pod
//! leaving) while gangs wait for room. Hints only: every round still plans from the whole
//! cache, so a hint lost to a restart costs time, never a decision.

use crate::gang::{carries_placement_gate, gang_of};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use muster_core::GangKey;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct PodSignals {
    freed: Arc<AtomicU64>,
    gated_arrivals: Arc<Mutex<HashSet<GangKey>>>,
    /// Woken on either signal only, not on every cache event (Node heartbeats).
    signalled: Arc<Notify>,
}

impl PodSignals {
    /// Notes one pod watch event.
    pub fn observe(&self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(p) => {
                if holds_a_node(p) && finished(p) {
                    self.freed.fetch_add(1, Ordering::AcqRel);
                } else if carries_placement_gate(p) && p.metadata.deletion_timestamp.is_none() {
                    self.gated_arrivals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(gang_of(p).key);
                } else {
                    return;
                }
            }
            watcher::Event::Delete(p) if holds_a_node(p) => {
                self.freed.fetch_add(1, Ordering::AcqRel);
            }
            // A relist is a change like any other: the next round plans from all of it.
            _ => return,
        }
        // A permit, not a wake-up of current waiters only: the one waiter (the background loop)
        // is often busy when the next member arrives, and must not miss it.
        self.signalled.notify_one();
    }

    /// Resolves at the next gated arrival or freed capacity, or at once if one came since the
    /// last call (one waiter: the background loop).
    pub async fn signalled(&self) {
        self.signalled.notified().await;
    }

    /// Counts bound pods that left or finished: changes whenever capacity may have come back.
    pub fn freed(&self) -> u64 {
        self.freed.load(Ordering::Acquire)
    }

    /// Gangs with a member newly seen behind Muster's gate since the last call.
    pub fn take_gated_arrivals(&self) -> Vec<GangKey> {
        let mut arrivals = self
            .gated_arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        arrivals.drain().collect()
    }
}

fn holds_a_node(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

fn finished(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, gated: bool) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name,
                "annotations": {"muster.dev/gang": "g", "muster.dev/min-available": "2"}},
            "spec": {"schedulerName": "muster", "containers": []},
            "status": {"phase": phase}
        });
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if gated {
            p["spec"]["schedulingGates"] = json!([{"name": muster_api::names::GATE_PLACEMENT}]);
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn capacity_comes_back_when_a_bound_pod_leaves_or_finishes() {
        let s = PodSignals::default();
        s.observe(&watcher::Event::Apply(pod(
            "a",
            Some("n1"),
            "Running",
            false,
        )));
        s.observe(&watcher::Event::Delete(pod("b", None, "Pending", false)));
        assert_eq!(s.freed(), 0, "nothing bound left");
        s.observe(&watcher::Event::Delete(pod(
            "a",
            Some("n1"),
            "Running",
            false,
        )));
        assert_eq!(s.freed(), 1);
        s.observe(&watcher::Event::Apply(pod(
            "c",
            Some("n1"),
            "Succeeded",
            false,
        )));
        assert_eq!(s.freed(), 2);
    }

    #[test]
    fn gated_members_name_their_gang_once_until_taken() {
        let s = PodSignals::default();
        s.observe(&watcher::Event::Apply(pod("a", None, "Pending", false)));
        assert!(s.take_gated_arrivals().is_empty(), "not gated");
        s.observe(&watcher::Event::Apply(pod("a", None, "Pending", true)));
        s.observe(&watcher::Event::Apply(pod("b", None, "Pending", true)));
        let taken = s.take_gated_arrivals();
        assert_eq!(taken, vec![GangKey::new("ns", "g")]);
        assert!(s.take_gated_arrivals().is_empty(), "taken once");
    }

    /// The background loop is often busy (placing the arrivals it was woken for) when the
    /// next member arrives: that arrival must still wake its next wait, or a gang completed
    /// in that gap waits out the whole spacing (seen in the preemption benchmark: the
    /// high-priority gang's round came 0.34 s after it arrived instead of ~0.1 s).
    #[tokio::test]
    async fn a_signal_raised_while_nobody_waits_wakes_the_next_wait() {
        let s = PodSignals::default();
        s.observe(&watcher::Event::Apply(pod("a", None, "Pending", true)));
        let woke = tokio::time::timeout(std::time::Duration::from_secs(1), s.signalled()).await;
        assert!(woke.is_ok(), "the arrival's signal was lost");
    }
}
