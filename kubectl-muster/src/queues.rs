//! Queues as the scheduler sees them: the queue objects read into the core's tree by the
//! scheduler's own `queues::build`, and every gang's queue by the documented rule.

use crate::scene::Scene;
use muster_api::names::LABEL_QUEUE;
use muster_crds::queue_spec::{self, QueueDefinition, resolve_queue};
use muster_scheduler::gang::GangSource;
use muster_scheduler::queues::QueueBuild;
use muster_scheduler::snapshot::Snapshot;
use std::collections::BTreeMap;

/// The tree the scheduler would plan with, with the problems of objects it cannot read (they
/// are left out, as the scheduler leaves them out) next to the tree's own.
pub fn build(scene: &Scene) -> QueueBuild {
    let mut unreadable: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut defs: Vec<QueueDefinition> = Vec::new();
    // Problem texts as the scheduler's (`engine::queues::from_cache`), so both say the same.
    let mut keep =
        |name: Option<&String>,
         dialect: &str,
         read: Result<QueueDefinition, queue_spec::QueueError>| match read {
            Ok(d) => {
                if !d.ignored.is_empty() {
                    unreadable
                        .entry(d.name.clone())
                        .or_default()
                        .push(format!("not accounted: {}", d.ignored.join(", ")));
                }
                defs.push(d);
            }
            Err(e) => unreadable
                .entry(name.cloned().unwrap_or_else(|| "?".into()))
                .or_default()
                .push(format!("queue not used: {dialect}{e}")),
        };
    for q in &scene.queues {
        keep(q.metadata.name.as_ref(), "", queue_spec::from_muster(q));
    }
    for q in &scene.volcano_queues {
        keep(
            q.metadata.name.as_ref(),
            "Volcano Queue: ",
            queue_spec::from_volcano(q),
        );
    }
    let mut out = muster_scheduler::queues::build(&defs);
    for (name, mut problems) in unreadable {
        out.problems.entry(name).or_default().append(&mut problems);
    }
    out
}

/// Gives every gang its queue: the group's `spec.queue`, else the `muster.dev/queue` label of
/// its pods, else its namespace's annotation, else `default`. Running gangs count against it
/// too. Done here as well as in the scheduler's snapshot so that running gangs are charged to
/// their queue whichever snapshot version is linked; the rule is the same, so it is idempotent.
pub fn assign(scene: &Scene, snapshot: &mut Snapshot) {
    let pods = scene.gang_pods();
    let namespace_annotations = |ns: &str| {
        scene
            .namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(ns))
            .and_then(|n| n.metadata.annotations.as_ref())
    };
    for (key, info) in &mut snapshot.gangs {
        let named = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, n: &str| {
            m.namespace.as_deref() == Some(key.namespace.as_str()) && m.name.as_deref() == Some(n)
        };
        let group = match &info.source {
            GangSource::Muster(n) => scene
                .pod_groups
                .iter()
                .find(|g| named(&g.metadata, n))
                .and_then(|g| g.spec.queue.as_deref()),
            GangSource::Volcano(n) => scene
                .volcano
                .iter()
                .find(|g| named(&g.metadata, n))
                .and_then(|g| g.spec.queue.as_deref()),
            _ => None,
        };
        let labels = pods.get(key).and_then(|ps| {
            ps.iter()
                .filter_map(|p| p.metadata.labels.as_ref())
                .find(|l| l.get(LABEL_QUEUE).is_some_and(|q| !q.is_empty()))
        });
        let queue = resolve_queue(group, labels, namespace_annotations(&key.namespace));
        info.queue = queue.to_string();
        snapshot.cluster.set_gang_queue(key, queue);
    }
    for g in &mut snapshot.pending {
        if let Some(info) = snapshot.gangs.get(&g.key) {
            g.queue = info.queue.clone();
        }
    }
}
