//! `kubectl muster explain <pod|podgroup>`: the scheduler's recorded reason, a fresh analysis
//! with the same planner, what blocks the gang and what would unblock it.

use super::jobs::{self, JobRow};
use crate::error::Error;
use crate::scene::{Analysis, Scene, pod_gpus};
use k8s_openapi::api::core::v1::{Event, Pod};
use muster_api::names;
use muster_core::{GangKey, WaitReason};
use muster_scheduler::gang::gang_of;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pod(String),
    Gang(String),
    /// A bare name: a pod of that name, else a gang.
    Any(String),
}

pub fn parse_target(s: &str) -> Result<Target, Error> {
    let (kind, name) = match s.split_once('/') {
        Some((k, n)) => (Some(k.to_ascii_lowercase()), n),
        None => (None, s),
    };
    if name.is_empty() || name.contains('/') {
        return Err(Error::Usage(format!(
            "{s:?}: expected pod/NAME, podgroup/NAME or NAME"
        )));
    }
    Ok(match kind.as_deref() {
        None => Target::Any(name.into()),
        Some("pod" | "pods" | "po") => Target::Pod(name.into()),
        Some("podgroup" | "podgroups" | "pg" | "mpg" | "gang" | "job") => Target::Gang(name.into()),
        Some(k) => {
            return Err(Error::Usage(format!(
                "cannot explain a {k}: use pod/NAME or podgroup/NAME"
            )));
        }
    })
}

/// The gang to explain, and the pod named (if a pod was).
pub fn resolve<'a>(
    scene: &'a Scene,
    ns: &str,
    target: &Target,
) -> Result<(GangKey, Option<&'a Pod>), Error> {
    let pod = |name: &str| {
        scene.pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(name)
        })
    };
    let gang_exists = |name: &str| {
        let key = GangKey::new(ns, name);
        scene.gang_pods().contains_key(&key)
            || scene.pod_groups.iter().any(|g| {
                g.metadata.namespace.as_deref() == Some(ns)
                    && g.metadata.name.as_deref() == Some(name)
            })
    };
    match target {
        Target::Pod(n) => pod(n)
            .map(|p| (gang_of(p).key, Some(p)))
            .ok_or_else(|| Error::NotFound(format!("pod {ns}/{n} not found"))),
        Target::Gang(n) if gang_exists(n) => Ok((GangKey::new(ns, n.as_str()), None)),
        Target::Gang(n) => Err(Error::NotFound(format!(
            "gang {ns}/{n} not found: no PodGroup of that name and no pod of ours names it"
        ))),
        Target::Any(n) => match pod(n) {
            Some(p) => Ok((gang_of(p).key, Some(p))),
            None if gang_exists(n) => Ok((GangKey::new(ns, n.as_str()), None)),
            None => Err(Error::NotFound(format!(
                "no pod or gang named {n} in namespace {ns}"
            ))),
        },
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocker {
    /// capacity, fragmentation, priority, quota, unhealthy-gpus, members, no-matching-node,
    /// too-large, invalid, preemption-in-progress; queue-limit, queue-reclaim, fair-share,
    /// queue-closed, invalid-queue.
    pub kind: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    pub pod_group_phase: Option<String>,
    pub pod_group_message: Option<String>,
    pub last_attempt_seconds_ago: Option<i64>,
    pub pod: Option<String>,
    /// The pod's `PodScheduled` condition (written by kube-scheduler from the extender).
    pub pod_scheduled: Option<String>,
    pub events: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub gang: JobRow,
    /// The gang's queue (`None`: no queues configured).
    pub queue: Option<super::explain_queue::QueueInfo>,
    pub recorded: Recorded,
    /// What the gang needs, in the scheduler's terms.
    pub needs: String,
    /// The fresh plan's verdict.
    pub verdict: String,
    /// Nodes the gang runs on, would be placed on now, or would need after preemption.
    pub placement: Vec<String>,
    /// `running`, `now` (placed at the next attempt) or `if-preempting` (a what-if).
    pub placement_kind: String,
    /// The last time the scheduler preempted this gang, and for whom.
    pub preempted: Option<String>,
    pub blockers: Vec<Blocker>,
    pub unblock: Vec<String>,
}

pub fn explain(
    scene: &Scene,
    analysis: &Analysis,
    key: &GangKey,
    pod: Option<&Pod>,
    events: &[Event],
) -> Explanation {
    let row = jobs::rows(scene, analysis, Some(&key.namespace))
        .into_iter()
        .find(|r| r.name == key.name)
        .unwrap_or_else(|| empty_row(key));
    let members: Vec<&Pod> = scene.gang_pods().remove(key).unwrap_or_default();
    let shown_pod = pod.or_else(|| {
        members
            .iter()
            .copied()
            .find(|p| crate::scene::pod_node(p).is_none())
    });
    let recorded = recorded(scene, key, shown_pod, events);
    let needs = needs(&row, &members);
    let mut e = Explanation {
        queue: super::explain_queue::info(analysis, &row.queue),
        gang: row,
        recorded,
        needs,
        verdict: String::new(),
        placement: Vec::new(),
        placement_kind: String::new(),
        preempted: scene
            .preemptions()
            .get(key)
            .map(|p| format!("by {} at {}", p.by, crate::scene::rfc3339(p.at))),
        blockers: Vec::new(),
        unblock: Vec::new(),
    };
    super::explain_verdict::judge(scene, analysis, key, &mut e);
    if e.blockers.iter().any(|b| b.kind == "members") {
        quota(scene, key, &mut e);
    }
    e
}

fn empty_row(key: &GangKey) -> JobRow {
    JobRow {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        kind: "-".into(),
        owner: None,
        queue: "default".into(),
        priority: 0,
        ready: 0,
        min_member: 1,
        members: 0,
        gpus_requested: 0,
        gpus_allocated: 0,
        phase: "Pending".into(),
        waiting_seconds: None,
        nodes: Vec::new(),
        reason: None,
    }
}

fn needs(row: &JobRow, members: &[&Pod]) -> String {
    let mut shapes: Vec<u32> = members.iter().map(|p| pod_gpus(p)).collect();
    shapes.sort_unstable_by(|a, b| b.cmp(a));
    let per = shapes.first().copied().unwrap_or(0);
    let same = shapes.iter().all(|g| *g == per);
    let min = row.min_member;
    let what = if same {
        format!(
            "{min} pod{} x {per} GPU{} = {} GPUs",
            if min == 1 { "" } else { "s" },
            if per == 1 { "" } else { "s" },
            u64::from(min) * u64::from(per)
        )
    } else {
        format!("{min} pods (GPUs per member: {shapes:?})")
    };
    if min > 1 {
        format!("{what}, all at once, inside one NVLink domain or rack when one can hold them")
    } else {
        what
    }
}

fn recorded(scene: &Scene, key: &GangKey, pod: Option<&Pod>, events: &[Event]) -> Recorded {
    let pg = scene.pod_groups.iter().find(|g| {
        g.metadata.namespace.as_deref() == Some(&key.namespace)
            && g.metadata.name.as_deref() == Some(&key.name)
    });
    let status = pg.and_then(|g| g.status.as_ref());
    let pod_scheduled = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| {
            format!(
                "{} {}: {}",
                c.status,
                c.reason.as_deref().unwrap_or("-"),
                c.message.as_deref().unwrap_or("-")
            )
        });
    let mut evs: Vec<&Event> = events.iter().collect();
    evs.sort_by_key(|e| std::cmp::Reverse(crate::scene::event_time(e)));
    Recorded {
        pod_group_phase: status.and_then(|s| s.phase).map(|p| format!("{p:?}")),
        pod_group_message: status.and_then(|s| s.message.clone()),
        last_attempt_seconds_ago: status
            .and_then(|s| s.last_scheduling_attempt.as_deref())
            .and_then(crate::scene::parse_time)
            .map(|t| scene.now - t),
        pod: pod.map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name.as_deref().unwrap_or("")
            )
        }),
        pod_scheduled,
        events: evs
            .iter()
            .take(5)
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.as_deref().unwrap_or("-"),
                    e.message.as_deref().unwrap_or("").trim()
                )
            })
            .collect(),
    }
}

/// Members that cannot be created because a ResourceQuota's GPU budget is used up.
fn quota(scene: &Scene, key: &GangKey, e: &mut Explanation) {
    let keys = [
        format!("requests.{}", names::GPU_RESOURCE),
        format!("limits.{}", names::GPU_RESOURCE),
    ];
    for q in &scene.quotas {
        if q.metadata.namespace.as_deref() != Some(&key.namespace) {
            continue;
        }
        let Some(status) = q.status.as_ref() else {
            continue;
        };
        for k in &keys {
            let get = |m: &Option<
                std::collections::BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >,
            >| {
                m.as_ref()
                    .and_then(|m| m.get(k))
                    .and_then(|v| v.0.trim().parse::<u64>().ok())
            };
            if let (Some(hard), Some(used)) = (get(&status.hard), get(&status.used))
                && used >= hard
            {
                let name = q.metadata.name.as_deref().unwrap_or("?");
                e.blockers.push(Blocker {
                    kind: "quota".into(),
                    detail: format!(
                        "ResourceQuota {}/{name} has {k} {used} used of {hard}: new members are refused at creation",
                        key.namespace
                    ),
                });
                e.unblock.push(format!(
                    "raise {k} in ResourceQuota {}/{name} or free GPUs in the namespace",
                    key.namespace
                ));
            }
        }
    }
}

/// A blocker category for a planner reason.
pub fn category(reason: WaitReason) -> &'static str {
    match reason {
        WaitReason::MissingMembers => "members",
        WaitReason::NoMatchingNode => "no-matching-node",
        WaitReason::TooLarge => "too-large",
        WaitReason::Capacity => "capacity",
        WaitReason::Fragmentation => "fragmentation",
        WaitReason::WaitingForVictims => "preemption-in-progress",
    }
}
