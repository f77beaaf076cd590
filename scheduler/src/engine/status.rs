//! Explaining waits: PodGroup status (Muster's own PodGroups) and Kubernetes Events.

use super::Answer;
use crate::gang::GangSource;
use crate::snapshot::GangInfo;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter as EventReporter};
use kube::{Api, Client};
use muster_core::GangKey;
use muster_crds::compat::{coscheduling, volcano};
use muster_crds::{PodGroup, PodGroupPhase};
use std::collections::{HashMap, HashSet};

#[derive(Clone)]
pub struct Reporter {
    client: Client,
    recorder: Recorder,
}

/// Which PodGroup API a status write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Muster,
    Coscheduling,
    Volcano,
}

/// One PodGroup status write.
pub struct StatusUpdate {
    dialect: Dialect,
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
            let patch = serde_json::json!({ "status": u.status });
            let (ns, name, params) = (&u.namespace, &u.name, PatchParams::default());
            let written = match u.dialect {
                Dialect::Muster => Api::<PodGroup>::namespaced(self.client.clone(), ns)
                    .patch_status(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
                Dialect::Coscheduling => {
                    Api::<coscheduling::PodGroup>::namespaced(self.client.clone(), ns)
                        .patch_status(name, &params, &Patch::Merge(&patch))
                        .await
                        .map(drop)
                }
                // Volcano's CRD has no status subresource: status is part of the object.
                Dialect::Volcano => Api::<volcano::PodGroup>::namespaced(self.client.clone(), ns)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
            };
            if let Err(e) = written {
                tracing::debug!(podgroup = %u.name, dialect = ?u.dialect, error = %e, "writing PodGroup status");
            }
        }
    }
}

/// Status writes for PodGroups whose status changed since the last round: Muster's own, and
/// the scheduler-plugins and Volcano PodGroups job operators create (in their own status
/// shapes, so `kubectl get podgroups` and the operators that read them see what Muster does).
/// `volcano_groups`: every Volcano PodGroup in the cache, with pods or not: one without pods
/// yet is admitted at once (`Inqueue`), because Muster holds gangs at the pods, not before
/// them, and operators such as training-operator create pods only once it is.
pub(super) fn updates(
    gangs: &HashMap<GangKey, GangInfo>,
    volcano_groups: &[GangKey],
    verdicts: &HashMap<GangKey, Answer>,
    planned: &HashSet<GangKey>,
    reported: &mut HashMap<GangKey, String>,
    now: u64,
) -> Vec<StatusUpdate> {
    let mut out = Vec::new();
    // Gangs whose pods and group are gone are forgotten (the map would otherwise grow forever).
    let volcano: HashSet<&GangKey> = volcano_groups.iter().collect();
    reported.retain(|key, _| gangs.contains_key(key) || volcano.contains(key));
    let mut wanted: Vec<(GangKey, Dialect, String, serde_json::Value)> = Vec::new();
    for (key, info) in gangs {
        let message = match verdicts.get(key) {
            Some(Answer::Wait { message, .. }) => Some(message.clone()),
            _ => None,
        };
        let stage = Stage::of(info, planned.contains(key));
        let (dialect, name, status) = match &info.source {
            GangSource::Muster(name) => {
                (Dialect::Muster, name, muster_status(info, stage, message))
            }
            GangSource::Coscheduling(name) => (
                Dialect::Coscheduling,
                name,
                coscheduling_status(info, stage),
            ),
            GangSource::Volcano(name) => {
                (Dialect::Volcano, name, volcano_status(info, stage, message))
            }
            _ => continue,
        };
        wanted.push((key.clone(), dialect, name.clone(), status));
    }
    for key in volcano_groups {
        if !gangs.contains_key(key) {
            let status =
                serde_json::json!({"phase": "Inqueue", "running": 0, "succeeded": 0, "failed": 0});
            wanted.push((key.clone(), Dialect::Volcano, key.name.clone(), status));
        }
    }
    for (key, dialect, name, mut status) in wanted {
        // Dedupe on everything but timestamps.
        let fingerprint = status.to_string();
        if reported.get(&key) == Some(&fingerprint) {
            continue;
        }
        reported.insert(key.clone(), fingerprint);
        // Written only when something changed, so "now" is when the conditions last moved.
        if dialect == Dialect::Muster {
            status["lastSchedulingAttempt"] = serde_json::Value::String(rfc3339(now));
        }
        if let Some(conditions) = status["conditions"].as_array_mut() {
            for c in conditions {
                c["lastTransitionTime"] = serde_json::Value::String(rfc3339(now));
            }
        }
        out.push(StatusUpdate {
            dialect,
            namespace: key.namespace.clone(),
            name,
            status,
        });
    }
    out
}

/// Where a gang stands, in the terms every dialect's phases are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Invalid,
    Succeeded,
    Failed,
    Running,
    /// The minimum is bound, not yet running.
    Scheduled,
    /// Planned: members are being bound.
    Scheduling,
    Pending,
}

impl Stage {
    fn of(info: &GangInfo, planned: bool) -> Stage {
        let min = info.min_member;
        if info.problem.is_some() {
            Stage::Invalid
        } else if info.succeeded >= min {
            Stage::Succeeded
        } else if info.failed > 0
            && info.failed + info.succeeded >= info.members
            && info.members > 0
        {
            Stage::Failed
        } else if info.running >= min {
            Stage::Running
        } else if info.bound >= min {
            Stage::Scheduled
        } else if planned {
            Stage::Scheduling
        } else {
            Stage::Pending
        }
    }
}

fn muster_status(info: &GangInfo, stage: Stage, message: Option<String>) -> serde_json::Value {
    let phase = match stage {
        Stage::Invalid | Stage::Pending => PodGroupPhase::Pending,
        Stage::Succeeded => PodGroupPhase::Succeeded,
        Stage::Failed => PodGroupPhase::Failed,
        Stage::Running => PodGroupPhase::Running,
        Stage::Scheduled => PodGroupPhase::Scheduled,
        Stage::Scheduling => PodGroupPhase::Scheduling,
    };
    let valid = info.problem.is_none();
    serde_json::json!({
        "phase": phase,
        "members": info.members,
        "scheduled": info.bound,
        "running": info.running,
        "succeeded": info.succeeded,
        "failed": info.failed,
        "message": message,
        "conditions": [{
            "type": "Valid",
            "status": if valid { "True" } else { "False" },
            "reason": if valid { "Valid" } else { "Invalid" },
            "message": info.problem.clone().unwrap_or_default(),
        }],
    })
}

/// scheduler-plugins' PodGroupStatus (phases Pending, Scheduling, Running, Finished, Failed).
fn coscheduling_status(info: &GangInfo, stage: Stage) -> serde_json::Value {
    let phase = match stage {
        Stage::Invalid | Stage::Pending | Stage::Scheduling => "Pending",
        Stage::Scheduled => "Scheduling",
        Stage::Running => "Running",
        Stage::Succeeded => "Finished",
        Stage::Failed => "Failed",
    };
    serde_json::json!({
        "phase": phase,
        "running": info.running,
        "succeeded": info.succeeded,
        "failed": info.failed,
        "scheduleStartTime": rfc3339(info.created_at),
    })
}

/// Volcano's PodGroupStatus (phases Pending, Inqueue, Running, Completed; conditions
/// Unschedulable / Scheduled).
fn volcano_status(info: &GangInfo, stage: Stage, message: Option<String>) -> serde_json::Value {
    let phase = match stage {
        Stage::Running => "Running",
        Stage::Succeeded | Stage::Failed => "Completed",
        Stage::Invalid | Stage::Pending | Stage::Scheduling | Stage::Scheduled => "Inqueue",
    };
    let condition = match (stage, message, &info.problem) {
        (Stage::Invalid, _, Some(problem)) => Some(("Unschedulable", "Invalid", problem.clone())),
        (Stage::Pending, Some(message), _) => {
            Some(("Unschedulable", "NotEnoughResources", message))
        }
        (Stage::Scheduled | Stage::Running, _, _) => Some((
            "Scheduled",
            "tasks in gang are ready to be scheduled",
            String::new(),
        )),
        _ => None,
    };
    let conditions: Vec<serde_json::Value> = condition
        .into_iter()
        .map(|(kind, reason, message)| {
            serde_json::json!({"type": kind, "status": "True", "reason": reason, "message": message})
        })
        .collect();
    serde_json::json!({
        "phase": phase,
        "running": info.running,
        "succeeded": info.succeeded,
        "failed": info.failed,
        "conditions": conditions,
    })
}

pub(super) fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(source: GangSource, min: u32, members: u32, bound: u32, running: u32) -> GangInfo {
        GangInfo {
            source,
            min_member: min,
            members,
            bound,
            running,
            succeeded: 0,
            failed: 0,
            problem: None,
            created_at: 1_000,
            queue: "default".into(),
            priority: 0,
            schedule_timeout_secs: None,
        }
    }

    fn key(name: &str) -> GangKey {
        GangKey::new("ml", name)
    }

    fn wait(message: &str) -> Answer {
        Answer::Wait {
            message: message.into(),
            unresolvable: false,
        }
    }

    #[test]
    fn operator_podgroups_get_status_in_their_own_dialect() {
        let gangs = HashMap::from([
            (
                key("pt"),
                info(GangSource::Coscheduling("pt".into()), 4, 4, 4, 4),
            ),
            (
                key("rj"),
                info(GangSource::Volcano("rj".into()), 3, 3, 0, 0),
            ),
            (key("plain"), info(GangSource::Single, 1, 1, 0, 0)),
        ]);
        let verdicts = HashMap::from([(key("rj"), wait("needs 3 pods x 8 GPUs"))]);
        let mut reported = HashMap::new();
        let out = updates(
            &gangs,
            &[key("rj")],
            &verdicts,
            &HashSet::new(),
            &mut reported,
            2_000,
        );
        assert_eq!(out.len(), 2, "single pods have no group to write");
        let pt = out.iter().find(|u| u.name == "pt").unwrap();
        assert_eq!(pt.dialect, Dialect::Coscheduling);
        assert_eq!(pt.status["phase"], "Running");
        assert_eq!(pt.status["running"], 4);
        let rj = out.iter().find(|u| u.name == "rj").unwrap();
        assert_eq!(rj.dialect, Dialect::Volcano);
        // Admitted (pods may be created); why it waits is the Unschedulable condition.
        assert_eq!(rj.status["phase"], "Inqueue");
        assert_eq!(rj.status["conditions"][0]["type"], "Unschedulable");
        assert_eq!(
            rj.status["conditions"][0]["message"],
            "needs 3 pods x 8 GPUs"
        );
        // Unchanged next round: nothing written again.
        let again = updates(
            &gangs,
            &[key("rj")],
            &verdicts,
            &HashSet::new(),
            &mut reported,
            2_001,
        );
        assert!(again.is_empty());
    }

    #[test]
    fn a_volcano_group_without_pods_is_admitted_so_its_operator_creates_them() {
        let mut reported = HashMap::new();
        let none = HashMap::new();
        let out = updates(
            &none,
            &[key("tf")],
            &HashMap::new(),
            &HashSet::new(),
            &mut reported,
            5,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dialect, Dialect::Volcano);
        assert_eq!(out[0].status["phase"], "Inqueue");
        // Remembered while the group exists, forgotten once it is gone.
        assert!(
            updates(
                &none,
                &[key("tf")],
                &HashMap::new(),
                &HashSet::new(),
                &mut reported,
                6
            )
            .is_empty()
        );
        assert!(
            updates(
                &none,
                &[],
                &HashMap::new(),
                &HashSet::new(),
                &mut reported,
                7
            )
            .is_empty()
        );
        assert!(reported.is_empty());
    }

    #[test]
    fn coscheduling_phases_follow_the_gang() {
        let cases = [
            ((0, 0), false, "Pending"),
            ((0, 0), true, "Pending"),
            ((4, 0), false, "Scheduling"),
            ((4, 4), false, "Running"),
        ];
        for ((bound, running), planned, want) in cases {
            let g = info(GangSource::Coscheduling("g".into()), 4, 4, bound, running);
            let stage = Stage::of(&g, planned);
            assert_eq!(
                coscheduling_status(&g, stage)["phase"],
                want,
                "{bound} {running}"
            );
        }
        let mut done = info(GangSource::Coscheduling("g".into()), 4, 4, 4, 0);
        done.succeeded = 4;
        assert_eq!(
            coscheduling_status(&done, Stage::of(&done, false))["phase"],
            "Finished"
        );
    }
}
