//! Explaining waits: PodGroup status (Muster's own PodGroups) and Kubernetes Events.

use super::Answer;
use crate::gang::GangSource;
use crate::snapshot::Snapshot;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter as EventReporter};
use kube::{Api, Client};
use muster_core::GangKey;
use muster_crds::{PodGroup, PodGroupPhase};
use std::collections::{HashMap, HashSet};

#[derive(Clone)]
pub struct Reporter {
    client: Client,
    recorder: Recorder,
}

/// One PodGroup status write.
pub struct StatusUpdate {
    namespace: String,
    name: String,
    status: serde_json::Value,
}

impl Reporter {
    pub fn new(client: Client) -> Reporter {
        let recorder = Recorder::new(
            client.clone(),
            EventReporter {
                controller: "muster-scheduler".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Reporter { client, recorder }
    }

    pub async fn pod_event(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        };
        let event = Event {
            type_: if matches!(
                reason,
                "Preempted" | "PreemptionRefused" | "BindRefused" | "GangRolledBack"
            ) {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(pod = name, error = %e, "publishing event");
        }
    }

    pub async fn write_status(self, updates: Vec<StatusUpdate>) {
        for u in updates {
            let api: Api<PodGroup> = Api::namespaced(self.client.clone(), &u.namespace);
            let patch = serde_json::json!({ "status": u.status });
            if let Err(e) = api
                .patch_status(&u.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(podgroup = %u.name, error = %e, "writing PodGroup status");
            }
        }
    }
}

/// Status writes for Muster PodGroups whose status changed since the last round.
pub(super) fn updates(
    snap: &Snapshot,
    verdicts: &HashMap<GangKey, Answer>,
    planned: &HashSet<GangKey>,
    reported: &mut HashMap<GangKey, String>,
    now: u64,
) -> Vec<StatusUpdate> {
    let mut out = Vec::new();
    // Gangs whose pods are all gone are forgotten (the map would otherwise grow forever).
    reported.retain(|key, _| snap.gangs.contains_key(key));
    for (key, info) in &snap.gangs {
        let GangSource::Muster(name) = &info.source else {
            continue;
        };
        let min = info.min_member;
        let message = match verdicts.get(key) {
            Some(Answer::Wait { message, .. }) => Some(message.clone()),
            _ => None,
        };
        let phase = if info.problem.is_some() {
            PodGroupPhase::Pending
        } else if info.succeeded >= min {
            PodGroupPhase::Succeeded
        } else if info.failed > 0
            && info.failed + info.succeeded >= info.members
            && info.members > 0
        {
            PodGroupPhase::Failed
        } else if info.running >= min {
            PodGroupPhase::Running
        } else if info.bound >= min {
            PodGroupPhase::Scheduled
        } else if planned.contains(key) {
            PodGroupPhase::Scheduling
        } else {
            PodGroupPhase::Pending
        };
        let valid = info.problem.is_none();
        let conditions = vec![serde_json::json!({
            "type": "Valid",
            "status": if valid { "True" } else { "False" },
            "reason": if valid { "Valid" } else { "Invalid" },
            "message": info.problem.clone().unwrap_or_default(),
        })];
        let status = serde_json::json!({
            "phase": phase,
            "members": info.members,
            "scheduled": info.bound,
            "running": info.running,
            "succeeded": info.succeeded,
            "failed": info.failed,
            "message": message,
            "conditions": conditions,
        });
        // Dedupe on everything but timestamps.
        let fingerprint = status.to_string();
        if reported.get(key) == Some(&fingerprint) {
            continue;
        }
        reported.insert(key.clone(), fingerprint);
        let mut status = status;
        status["lastSchedulingAttempt"] = serde_json::Value::String(rfc3339(now));
        // Written only when something changed, so "now" is when the condition last moved.
        if let Some(c) = status["conditions"].get_mut(0) {
            c["lastTransitionTime"] = serde_json::Value::String(rfc3339(now));
        }
        out.push(StatusUpdate {
            namespace: key.namespace.clone(),
            name: name.clone(),
            status,
        });
    }
    out
}

fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
