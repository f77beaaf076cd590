//! Gangs in every dialect users write: the group object's minimum, queue and
//! timeout, or why the gang cannot be planned at all.

use super::pods::PendingMember;
use super::pods::created_secs;
use crate::cache::Cache;
use crate::gang::GangSource;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use muster_core::{Gang, GangKey};
use muster_crds::queue_spec::resolve_queue;

/// What the engine knows about one gang besides what the core needs.
#[derive(Clone, Debug)]
pub struct GangInfo {
    pub source: GangSource,
    pub min_member: u32,
    pub members: u32,
    pub bound: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Why the gang cannot be planned at all (missing group, bad annotation, bad spec).
    pub problem: Option<String>,
    pub created_at: u64,
    pub queue: String,
    /// The highest priority among the gang's pods, as their admission set it (a group's
    /// class is not a grant: waiting and running, a gang ranks the same).
    pub priority: i32,
    /// `scheduleTimeoutSeconds` of the group: how long members may take to appear.
    pub schedule_timeout_secs: Option<u64>,
}

/// A group whose `scheduleTimeoutSeconds` passed with fewer member pods than `minMember` is
/// reported invalid (it still schedules if the members appear later).
pub(super) fn flag_missing_members(info: &mut GangInfo, now: u64) {
    let Some(timeout) = info.schedule_timeout_secs else {
        return;
    };
    let waited = now.saturating_sub(info.created_at);
    if info.problem.is_none()
        && info.created_at > 0
        && waited > timeout
        && info.members < info.min_member
        && info.bound < info.min_member
    {
        info.problem = Some(format!(
            "invalid PodGroup: minMember is {} but only {} member pod(s) exist {waited}s after it was created (scheduleTimeoutSeconds {timeout})",
            info.min_member, info.members
        ));
    }
}

/// The core's view of a gang's waiting members; the gang's priority is the highest of its
/// pods'.
pub fn pending_gang(key: GangKey, info: &GangInfo, members: Vec<PendingMember>) -> Gang {
    Gang {
        queue: info.queue.clone(),
        priority: members
            .iter()
            .map(|m| m.priority)
            .fold(info.priority, i32::max),
        created_at: info.created_at,
        min_member: info.min_member,
        can_preempt: members.iter().all(|m| m.can_preempt),
        runtime_limit: gang_runtime_limit(members.iter().map(|m| m.runtime_limit)),
        pending: members.into_iter().map(|m| m.request).collect(),
        key,
    }
}

/// A gang ends when its last member must have: known only if every member says.
fn gang_runtime_limit(mut limits: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let first = limits.next()??;
    limits.try_fold(first, |longest, l| l.map(|l| longest.max(l)))
}

/// The gang's definition as the cache shows it; `member` (any member pod) and the gang's
/// namespace decide its queue when its group names none (see [`resolve_queue`]).
pub fn gang_info(
    cache: &Cache,
    key: &GangKey,
    source: &GangSource,
    member: Option<&Pod>,
) -> GangInfo {
    let mut group_queue: Option<String> = None;
    let mut info = GangInfo {
        source: source.clone(),
        min_member: 1,
        members: 0,
        bound: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        problem: None,
        created_at: 0,
        schedule_timeout_secs: None,
        queue: "default".into(),
        priority: i32::MIN,
    };
    let missing = |kind: &str, name: &str| {
        Some(format!(
            "waiting for {kind} {}/{name}: it does not exist",
            key.namespace
        ))
    };
    match source {
        GangSource::Muster(name) => match cache
            .pod_groups
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.muster.dev", name),
            Some(pg) => {
                info.created_at = created_secs(pg.metadata.creation_timestamp.as_ref());
                info.schedule_timeout_secs = pg
                    .spec
                    .schedule_timeout_seconds
                    .and_then(|t| u64::try_from(t).ok());
                group_queue.clone_from(&pg.spec.queue);
                if pg.spec.min_member < 1 {
                    info.problem = Some(format!(
                        "invalid PodGroup: minMember is {}, must be at least 1",
                        pg.spec.min_member
                    ));
                } else {
                    info.min_member = pg.spec.min_member as u32;
                }
                // The class is checked, not granted: a gang ranks by its pods' own priority,
                // which their admission set (see `GangInfo::priority`).
                if let Some(pc) = &pg.spec.priority_class_name
                    && cache.priority_classes.get(&ObjectRef::new(pc)).is_none()
                {
                    info.problem = Some(format!(
                        "invalid PodGroup: priority class {pc:?} does not exist"
                    ));
                }
            }
        },
        GangSource::Coscheduling(name) => match cache
            .coscheduling
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.scheduling.x-k8s.io", name),
            Some(pg) => info.min_member = pg.spec.min_member.max(1) as u32,
        },
        GangSource::Volcano(name) => match cache
            .volcano
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.scheduling.volcano.sh", name),
            Some(pg) => {
                info.min_member = pg.spec.min_member.max(1) as u32;
                group_queue.clone_from(&pg.spec.queue);
            }
        },
        GangSource::Upstream(name) => match cache
            .upstream
            .get(&ObjectRef::new(name).within(&key.namespace))
        {
            None => info.problem = missing("PodGroup.scheduling.k8s.io", name),
            Some(pg) => {
                info.min_member = pg
                    .spec
                    .scheduling_policy
                    .gang
                    .as_ref()
                    .map_or(1, |g| g.min_count.max(1) as u32);
            }
        },
        GangSource::Annotation { min_available } => match min_available {
            Ok(n) => info.min_member = *n,
            Err(e) => info.problem = Some(format!("invalid gang annotations: {e}")),
        },
        GangSource::Single => {}
    }
    let namespace = cache.namespaces.get(&ObjectRef::new(&key.namespace));
    info.queue = resolve_queue(
        group_queue.as_deref(),
        member.and_then(|p| p.metadata.labels.as_ref()),
        namespace
            .as_ref()
            .and_then(|n| n.metadata.annotations.as_ref()),
    )
    .to_string();
    info
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gangs_runtime_limit_is_its_longest_members_if_all_declare_one() {
        assert_eq!(
            gang_runtime_limit([Some(60), Some(600)].into_iter()),
            Some(600)
        );
        assert_eq!(gang_runtime_limit([Some(60), None].into_iter()), None);
        assert_eq!(gang_runtime_limit(std::iter::empty()), None);
    }

    use super::*;

    fn group(min: u32, members: u32, created_at: u64, timeout: Option<u64>) -> GangInfo {
        GangInfo {
            source: GangSource::Muster("g".into()),
            min_member: min,
            members,
            bound: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            problem: None,
            created_at,
            queue: "default".into(),
            priority: 0,
            schedule_timeout_secs: timeout,
        }
    }

    /// A gang's queue: its group's `spec.queue` (Muster's or Volcano's), else the member pod's
    /// label, else its namespace's annotation, else `default`.
    #[test]
    fn the_queue_comes_from_the_group_then_the_pod_then_the_namespace() {
        use crate::cache::CacheObjects;
        use serde_json::json;
        let label = muster_api::names::LABEL_QUEUE;
        let pod = |labels: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "ml", "labels": labels}}),
            )
            .unwrap()
        };
        let group = |kind: &str, queue: Option<&str>| {
            let mut spec = json!({"minMember": 1});
            if let Some(q) = queue {
                spec["queue"] = json!(q);
            }
            json!({"apiVersion": kind, "kind": "PodGroup", "metadata": {"name": "g", "namespace": "ml"}, "spec": spec})
        };
        let cache = |muster_queue: Option<&str>, volcano_queue: Option<&str>, annotated: bool| {
            let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
                "metadata": {"name": "ml", "annotations": if annotated { json!({label: "from-namespace"}) } else { json!({}) }}
            }))
            .unwrap();
            Cache::from_objects(CacheObjects {
                pod_groups: vec![
                    serde_json::from_value(group("muster.dev/v1alpha1", muster_queue)).unwrap(),
                ],
                volcano: vec![
                    serde_json::from_value(group("scheduling.volcano.sh/v1beta1", volcano_queue))
                        .unwrap(),
                ],
                ..Default::default()
            })
            .with_queue_objects(Vec::new(), Vec::new(), vec![ns])
        };
        let key = GangKey::new("ml", "g");
        let muster = GangSource::Muster("g".into());
        let volcano = GangSource::Volcano("g".into());
        let labelled = pod(json!({label: "from-pod"}));
        let plain = pod(json!({}));
        let queue_of =
            |c: &Cache, source: &GangSource, p: Option<&Pod>| gang_info(c, &key, source, p).queue;

        let all = cache(Some("from-group"), Some("from-volcano"), true);
        assert_eq!(queue_of(&all, &muster, Some(&labelled)), "from-group");
        assert_eq!(queue_of(&all, &volcano, Some(&labelled)), "from-volcano");
        let no_group = cache(None, Some(""), true);
        assert_eq!(queue_of(&no_group, &muster, Some(&labelled)), "from-pod");
        assert_eq!(
            queue_of(&no_group, &volcano, Some(&labelled)),
            "from-pod",
            "an empty spec.queue is unset"
        );
        assert_eq!(queue_of(&no_group, &muster, Some(&plain)), "from-namespace");
        assert_eq!(
            queue_of(&no_group, &GangSource::Single, None),
            "from-namespace"
        );
        let nothing = cache(None, None, false);
        assert_eq!(queue_of(&nothing, &muster, Some(&plain)), "default");
    }

    #[test]
    fn missing_members_are_flagged_only_after_the_schedule_timeout() {
        let mut early = group(4, 2, 1_000, Some(60));
        flag_missing_members(&mut early, 1_030);
        assert_eq!(early.problem, None);

        let mut late = group(4, 2, 1_000, Some(60));
        flag_missing_members(&mut late, 1_090);
        let problem = late.problem.unwrap();
        assert!(problem.contains("minMember is 4 but only 2"), "{problem}");
        assert!(problem.contains("scheduleTimeoutSeconds 60"), "{problem}");

        let mut complete = group(4, 4, 1_000, Some(60));
        flag_missing_members(&mut complete, 5_000);
        assert_eq!(complete.problem, None);

        let mut no_timeout = group(4, 1, 1_000, None);
        flag_missing_members(&mut no_timeout, 5_000);
        assert_eq!(no_timeout.problem, None);
    }
}
