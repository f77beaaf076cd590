//! Writes to the API server besides Bindings (see `release`): evictions, nudges, nominations,
//! lifting Muster's gate and explaining gated pods.

use super::status::Reporter;
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{EvictParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use muster_core::GangKey;

/// Evicts victim gangs whole through the Eviction API. Each gang's evictions are validated
/// first (a dry run, which checks PodDisruptionBudgets): if any member may not go, none is
/// evicted, so a preemption never leaves a victim gang broken. `leading` is checked before
/// each gang: a replica that lost leadership stops at once. A queue's reclaim (`reclaim`)
/// evicts exactly the same way; only what the Events say differs.
pub(super) async fn evict(
    client: Client,
    (preemptor, reclaim): (GangKey, bool),
    victims: Vec<(String, String, GangKey)>,
    metrics: Metrics,
    reporter: Reporter,
    leading: impl Fn() -> bool,
) {
    let mut by_gang: std::collections::BTreeMap<GangKey, Vec<(String, String)>> =
        Default::default();
    for (ns, name, gang) in victims {
        by_gang.entry(gang).or_default().push((ns, name));
    }
    tracing::debug!(preemptor = %preemptor, gangs = by_gang.len(), "evicting victim gangs");
    for (gang, pods) in by_gang {
        if !leading() {
            tracing::info!(victim = %gang, "not the leader any more: preemption abandoned");
            return;
        }
        let dry = EvictParams {
            post_options: PostParams {
                dry_run: true,
                ..Default::default()
            },
            ..Default::default()
        };
        // Every member's dry run at once (one after the other, they took ~0.5 s for a gang of
        // 8); none is evicted unless every one passed.
        let checks = futures::future::join_all(pods.iter().map(|(ns, name)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let dry = &dry;
            async move { api.evict(name, dry).await }
        }))
        .await;
        let mut refused = None;
        for ((ns, name), checked) in pods.iter().zip(checks) {
            tracing::debug!(victim = %gang, pod = %name, ok = checked.is_ok(), "eviction validated");
            match checked {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    refused = Some(format!("{ns}/{name}: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = refused {
            metrics.evictions.with_label_values(&["refused"]).inc();
            tracing::warn!(victim = %gang, preemptor = %preemptor, error = %why, "victim gang may not be evicted whole (PodDisruptionBudget or admission); evicting none of it");
            if let Some((ns, name)) = pods.first() {
                let note = format!(
                    "gang {gang} was chosen to make room for {preemptor}, but {why}; no member was evicted"
                );
                reporter
                    .pod_event(ns, name, "PreemptionRefused", "Evict", note)
                    .await;
            }
            continue;
        }
        // Every member at once, as the barrier binds: one after the other, the gang was seen
        // evicted in part (its other members still running) for one round trip per member.
        let results = futures::future::join_all(pods.iter().map(|(ns, name)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            async move { api.evict(name, &EvictParams::default()).await }
        }))
        .await;
        for ((ns, name), result) in pods.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    metrics.evictions.with_label_values(&["evicted"]).inc();
                    tracing::info!(victim = %gang, pod = %name, preemptor = %preemptor, "evicted");
                    let note = if reclaim {
                        format!(
                            "gang {gang} evicted whole: gang {preemptor}'s queue reclaims what {gang}'s queue borrowed"
                        )
                    } else {
                        format!("gang {gang} preempted whole by higher-priority gang {preemptor}")
                    };
                    reporter
                        .pod_event(&ns, &name, "Preempted", "Evict", note)
                        .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    metrics.evictions.with_label_values(&["gone"]).inc();
                }
                Err(e) => {
                    metrics.evictions.with_label_values(&["failed"]).inc();
                    tracing::warn!(victim = %gang, pod = %name, error = %e, "eviction failed; retried on a later round");
                }
            }
        }
    }
}

/// Touches waiting members of a newly planned gang so kube-scheduler retries them now instead
/// of after its unschedulable-queue timeout.
/// All at once: the gang binds only when its last member is retried.
pub(super) async fn nudge(client: Client, pods: Vec<(String, String, String)>) {
    let writes = pods.into_iter().map(|(ns, name, node)| {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        async move {
            let patch =
                serde_json::json!({"metadata": {"annotations": {"muster.dev/planned-node": node}}});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "nudging planned pod");
            }
        }
    });
    futures::future::join_all(writes).await;
}

/// Sets `status.nominatedNodeName` on planned members kube-scheduler has not asked about yet.
/// kube-scheduler tries a pod's nominated node first and alone, so the member is filtered on
/// one node (in-tree plugins and the extender) instead of on every node of the cluster. If
/// the plan is later dropped, kube-scheduler's next failed attempt clears the nomination.
pub(super) async fn nominate(
    client: Client,
    pods: Vec<(String, String, String)>,
    metrics: Metrics,
) {
    let writes = pods.into_iter().map(|(ns, name, node)| {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let metrics = metrics.clone();
        async move { nominate_one(&api, &name, &node, &metrics).await }
    });
    futures::future::join_all(writes).await;
}

/// Removes Muster's scheduling gate from planned members (nominating each to its node first
/// when `node` is given): kube-scheduler then attempts them, and only them, at once. Each
/// member is its own write; all go out together, as the barrier binds them together.
pub(super) async fn release_gates(
    client: Client,
    pods: Vec<(String, String, Option<String>)>,
    metrics: Metrics,
) {
    let writes = pods.into_iter().map(|(ns, name, node)| {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let metrics = metrics.clone();
        async move {
            if let Some(node) = node {
                nominate_one(&api, &name, &node, &metrics).await;
            }
            // A strategic-merge delete of our gate alone: gates others hold stay.
            let patch = serde_json::json!({"spec": {"schedulingGates": [
                {"$patch": "delete", "name": muster_api::names::GATE_PLACEMENT}
            ]}});
            let result = api
                .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
            let result = outcome(result, "released", &name, "removing the placement gate");
            metrics.gate_releases.with_label_values(&[result]).inc();
        }
    });
    futures::future::join_all(writes).await;
}

/// One nomination write, counted by result.
async fn nominate_one(api: &Api<Pod>, name: &str, node: &str, metrics: &Metrics) {
    let patch = serde_json::json!({"status": {"nominatedNodeName": node}});
    let result = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let result = outcome(result, "nominated", name, "nominating planned node");
    metrics.nominations.with_label_values(&[result]).inc();
}

/// A pod write's result as a metric label: `ok`, `gone` (bound or deleted meanwhile: nothing
/// left to write) or `failed` (logged; the next round writes again).
fn outcome<T>(
    result: Result<T, kube::Error>,
    ok: &'static str,
    pod: &str,
    what: &str,
) -> &'static str {
    match result {
        Ok(_) => ok,
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => "gone",
        Err(e) => {
            tracing::warn!(pod = %pod, error = %e, "{what} failed");
            "failed"
        }
    }
}

/// Writes Muster's reason (`message`, whole) into gated members' `PodScheduled` condition
/// (reason `SchedulingGated`, as the API server set it; see `gate::explain_gated`). Best effort.
pub(super) async fn explain_gated(client: Client, pods: Vec<super::explanations::GatedWait>) {
    let writes = pods.into_iter().map(|w| {
        let (name, message) = (w.name, w.message);
        let api: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
        async move {
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "SchedulingGated",
                "message": message,
            }]}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "explaining a gated pod");
            }
        }
    });
    futures::future::join_all(writes).await;
}
