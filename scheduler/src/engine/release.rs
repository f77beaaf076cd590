//! Releasing a gang at the barrier: every Binding of a gang is validated first (a dry run, which
//! runs admission; a lone Binding is all-or-nothing without one), then all are created with
//! retries on transient errors; if a member still cannot be bound, the members already bound
//! are rolled back (deleted, so their controller recreates them) and the gang is re-planned
//! whole.
//!
//! Every Binding carries the pod's UID (the API server refuses it if the pod was replaced)
//! and the GPU choice as annotations, which the API server copies onto the pod in the same
//! write that sets its node, so the device plugin never sees a bound pod without its GPUs.

use super::Engine;
use super::lifecycle::{Slot, Waiter};
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use muster_api::names;
use muster_core::GangKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Transient failures (throttling, timeouts, an API server restarting) are retried this long.
pub(crate) const RETRY_FOR: Duration = Duration::from_secs(10);

/// What became of a release, for the engine to act on.
#[derive(Debug)]
pub(super) enum Outcome {
    Bound,
    /// Validation refused a member: nothing was bound.
    Refused {
        uid: String,
        node: String,
        reason: String,
    },
    /// A planned node is gone or cordoned, as the API server says now: nothing was bound.
    Stale {
        reason: String,
    },
    /// Bindings failed part-way: the bound members were deleted.
    RolledBack {
        reason: String,
    },
    /// A member beyond the minimum could not be bound (the minimum is untouched).
    ExtraFailed {
        uid: String,
        reason: String,
    },
    /// This replica stopped leading before anything was bound.
    NotLeader,
}

/// A failure's class: transient ones are retried.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        // Connection refused or reset, timeouts: the API server may be restarting.
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn binding(uid: &str, slot: &Slot) -> Binding {
    let annotations = (!slot.gpu_ids.is_empty()).then(|| {
        std::collections::BTreeMap::from([
            (
                names::ANNOTATION_GPU_IDS.to_string(),
                slot.gpu_ids.join(","),
            ),
            (names::ANNOTATION_GPU_NODE.to_string(), slot.node.clone()),
        ])
    });
    Binding {
        metadata: kube::api::ObjectMeta {
            name: Some(slot.name.clone()),
            namespace: Some(slot.namespace.clone()),
            uid: Some(uid.to_string()),
            annotations,
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(slot.node.clone()),
            ..Default::default()
        },
    }
}

/// Creates (or, with `dry_run`, validates) one Binding, retrying transient failures.
async fn bind_one(client: &Client, uid: &str, slot: &Slot, dry_run: bool) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &slot.namespace);
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    let body = binding(uid, slot);
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let err = match pods
            .create_subresource::<Binding, serde_json::Value>("binding", &slot.name, &params, &body)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // A retried Binding whose first attempt landed: the pod is ours, on our node.
        if !dry_run
            && matches!(&err, kube::Error::Api(s) if s.code == 409)
            && bound_as_planned(&pods, uid, slot).await
        {
            return Ok(());
        }
        if !transient(&err) || started.elapsed() + backoff > RETRY_FOR {
            return Err(format!(
                "binding {}/{} to {}{}: {err}",
                slot.namespace,
                slot.name,
                slot.node,
                if dry_run { " (validation)" } else { "" }
            ));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn bound_as_planned(pods: &Api<Pod>, uid: &str, slot: &Slot) -> bool {
    pods.get(&slot.name).await.is_ok_and(|p| {
        p.metadata.uid.as_deref() == Some(uid)
            && p.spec.and_then(|s| s.node_name).as_deref() == Some(slot.node.as_str())
    })
}

/// Every planned node exists and is not cordoned, as the API server says now.
async fn nodes_still_there(client: &Client, slots: &[(String, Slot)]) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let names: std::collections::BTreeSet<&str> =
        slots.iter().map(|(_, s)| s.node.as_str()).collect();
    let reads = names.into_iter().map(|name| {
        let nodes = nodes.clone();
        async move { (name, nodes.get_opt(name).await) }
    });
    for (name, read) in futures::future::join_all(reads).await {
        match read {
            Ok(Some(n)) if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) => {
                return Err(format!("planned node {name} is cordoned"));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("planned node {name} was deleted")),
            // Unknown is not gone: the Bindings' own errors decide.
            Err(e) => tracing::debug!(node = name, error = %e, "reading planned node"),
        }
    }
    Ok(())
}

/// Deletes a bound member so its controller recreates it, retrying transient failures.
async fn roll_back(client: &Client, uid: &str, slot: &Slot) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &slot.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let started = Instant::now();
    loop {
        match pods.delete(&slot.name, &params).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
            Err(e) if transient(&e) && started.elapsed() < RETRY_FOR * 3 => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("deleting {}/{}: {e}", slot.namespace, slot.name)),
        }
    }
}

impl Engine {
    /// Binds `slots` together and answers each waiting bind call. `whole` says the slots
    /// include the gang's minimum (a failure rolls all back); otherwise `slots` is one member
    /// beyond the minimum joining its released gang on its own.
    pub(super) async fn release(
        self: Arc<Self>,
        gang: GangKey,
        slots: Vec<(String, Slot)>,
        mut waiters: HashMap<String, Waiter>,
        whole: bool,
    ) {
        let outcome = self.bind_all(&gang, &slots, whole).await;
        let answer: Result<(), String> = match &outcome {
            Outcome::Bound => Ok(()),
            Outcome::Refused { reason, .. }
            | Outcome::Stale { reason }
            | Outcome::RolledBack { reason } => Err(format!(
                "gang {gang} not bound: {reason}; it will be retried whole"
            )),
            Outcome::ExtraFailed { reason, .. } => Err(reason.clone()),
            Outcome::NotLeader => Err(super::NOT_LEADER.into()),
        };
        for (_, tx) in waiters.drain() {
            let _ = tx.send(answer.clone());
        }
        self.release_done(&gang, outcome).await;
    }

    async fn bind_all(&self, gang: &GangKey, slots: &[(String, Slot)], whole: bool) -> Outcome {
        if !self.is_leader() {
            return Outcome::NotLeader;
        }
        // One Binding is all-or-nothing by itself: validating it first would only double the
        // requests (single pods are most of a cluster's pods).
        let single = slots.len() == 1;
        if !single {
            let checks = slots.iter().map(|(uid, slot)| async move {
                (uid, slot, bind_one(&self.decisions, uid, slot, true).await)
            });
            for (uid, slot, result) in futures::future::join_all(checks).await {
                if let Err(reason) = result {
                    return self.refused(gang, uid, slot, reason, whole).await;
                }
            }
        }
        // The cache may not have seen a node go a moment ago, and the API server accepts a
        // Binding to any node name: ask it for each planned node.
        if whole && let Err(reason) = nodes_still_there(&self.decisions, slots).await {
            tracing::warn!(%gang, error = %reason, "planned node gone at release; nothing bound");
            return Outcome::Stale { reason };
        }
        // Leadership may have moved while validating: the new leader decides from here.
        if !self.is_leader() {
            return Outcome::NotLeader;
        }
        let binds = slots.iter().map(|(uid, slot)| async move {
            (uid, slot, bind_one(&self.decisions, uid, slot, false).await)
        });
        let results = futures::future::join_all(binds).await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(_, _, r)| r.as_ref().err().cloned())
            .collect();
        if failed.is_empty() {
            if !single {
                self.gang_bound(gang, slots).await;
            }
            return Outcome::Bound;
        }
        let reason = failed.join("; ");
        if let (true, Some((uid, slot, _))) = (single, results.first()) {
            return self.refused(gang, uid, slot, reason, whole).await;
        }
        if !whole {
            let uid = results
                .iter()
                .find(|(_, _, r)| r.is_err())
                .map(|(u, _, _)| (*u).clone())
                .unwrap_or_default();
            return Outcome::ExtraFailed { uid, reason };
        }
        tracing::warn!(%gang, error = %reason, "gang bound part-way; rolling back its bound members");
        self.metrics.rollbacks.inc();
        for (uid, slot, _) in results.iter().filter(|(_, _, r)| r.is_ok()) {
            if let Err(e) = roll_back(&self.decisions, uid, slot).await {
                tracing::error!(%gang, pod = %slot.name, error = %e, "rolling back a bound member failed");
            }
            self.reporter
                .pod_event(&slot.namespace, &slot.name, "GangRolledBack", "Delete", format!(
                    "gang {gang} could not be bound whole ({reason}); this member was bound and is deleted so the gang is re-planned whole"
                ))
                .await;
        }
        Outcome::RolledBack { reason }
    }

    /// A member's Binding was refused (at validation, or a single pod's own): nothing of the
    /// release was bound.
    async fn refused(
        &self,
        gang: &GangKey,
        uid: &str,
        slot: &Slot,
        reason: String,
        whole: bool,
    ) -> Outcome {
        tracing::warn!(%gang, pod = %slot.name, error = %reason, "gang member's Binding refused; nothing bound");
        self.reporter
            .pod_event(&slot.namespace, &slot.name, "BindRefused", "Bind", format!(
                "gang {gang}: this member's Binding was refused, so no member was bound: {reason}"
            ))
            .await;
        if whole {
            Outcome::Refused {
                uid: uid.to_string(),
                node: slot.node.clone(),
                reason,
            }
        } else {
            Outcome::ExtraFailed {
                uid: uid.to_string(),
                reason,
            }
        }
    }

    /// One event per gang bound together (kube-scheduler records a Scheduled event per pod).
    async fn gang_bound(&self, gang: &GangKey, slots: &[(String, Slot)]) {
        let nodes: std::collections::BTreeSet<&str> =
            slots.iter().map(|(_, s)| s.node.as_str()).collect();
        tracing::info!(%gang, members = slots.len(), nodes = nodes.len(), "gang bound");
        // One event per gang, on its first member by name: kube-scheduler already records a
        // Scheduled event per pod, and the GPUs are on each pod's annotation.
        if let Some((_, first)) = slots.iter().min_by(|a, b| a.1.name.cmp(&b.1.name)) {
            let note = format!(
                "gang {gang}: {} member(s) bound together on {} node(s): {}",
                slots.len(),
                nodes.len(),
                nodes.iter().copied().collect::<Vec<_>>().join(",")
            );
            self.reporter
                .pod_event(&first.namespace, &first.name, "GangScheduled", "Bind", note)
                .await;
        }
    }
}
