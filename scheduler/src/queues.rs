//! Queue objects (Muster's and Volcano's, as [`QueueDefinition`]s) into the core's
//! [`QueueTree`], level-triggered: every round rebuilds the tree from what the API server
//! shows. A bad object costs only itself and the queues under it, each with a problem that
//! its status and `explain` report; everything else keeps its queues.
//!
//! Mapping decisions:
//! - Volcano's `deserved` is what the queue reclaims up to, which is Muster's guarantee; its
//!   `guarantee` counts only where no `deserved` is given.
//! - Muster's per-resource `reclaimable` (the lender's choice) becomes the queue's: it reclaims
//!   only if every resource it names does. Volcano's `reclaimable` is the borrower's side
//!   ([`QueueSpec::borrowed_reclaimable`]).
//! - Per-GPU-product quotas are not planned yet: they are dropped with a problem.
//! - Volcano's queue `priority` is not used.
//! - When queue objects exist but none is named `default`, an implicit root `default` with no
//!   quotas holds the gangs that name no queue, so they are not stranded.

use muster_core::queues::Resource;
use muster_core::{QueueSpec, QueueTree, QuotaSpec};
use muster_crds::Queue;
use muster_crds::compat::volcano;
use muster_crds::queue_spec::{
    DEFAULT_QUEUE, QueueDefinition, QueueDialect, QueueResource, from_muster, from_volcano,
};
use std::collections::{BTreeMap, BTreeSet};

/// The tree a round plans with, and what kept some queue objects out of it or in it only in
/// part (queue name -> problems).
#[derive(Clone, Debug, Default)]
pub struct QueueBuild {
    pub tree: QueueTree,
    pub problems: BTreeMap<String, Vec<String>>,
}

impl QueueBuild {
    fn problem(&mut self, queue: &str, text: String) {
        self.problems
            .entry(queue.to_string())
            .or_default()
            .push(text);
    }
}

/// Reads the queue objects and builds the tree: an object that does not convert is left out
/// with its problem (its gangs then wait on an unknown queue); fields naming resources queues
/// do not account are noted. The scheduler's rounds and `kubectl muster` both call this, so
/// they say the same.
pub fn from_objects<'a>(
    muster: impl IntoIterator<Item = &'a Queue>,
    volcano: impl IntoIterator<Item = &'a volcano::Queue>,
) -> QueueBuild {
    let mut defs = Vec::new();
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut keep = |name: Option<&String>, dialect: &str, read: Result<QueueDefinition, _>| {
        let read: Result<QueueDefinition, muster_crds::queue_spec::QueueError> = read;
        match read {
            Ok(d) => {
                if !d.ignored.is_empty() {
                    notes
                        .entry(d.name.clone())
                        .or_default()
                        .push(format!("not accounted: {}", d.ignored.join(", ")));
                }
                defs.push(d);
            }
            Err(e) => notes
                .entry(name.cloned().unwrap_or_else(|| "?".into()))
                .or_default()
                .push(format!("queue not used: {dialect}{e}")),
        }
    };
    for q in muster {
        keep(q.metadata.name.as_ref(), "", from_muster(q));
    }
    for q in volcano {
        keep(q.metadata.name.as_ref(), "Volcano Queue: ", from_volcano(q));
    }
    let mut out = build(&defs);
    for (name, mut problems) in notes {
        out.problems.entry(name).or_default().append(&mut problems);
    }
    out
}

/// Builds the tree. Muster's objects win over Volcano's of the same name. No objects: the empty
/// tree, with which the core plans exactly as without queues.
pub fn build(defs: &[QueueDefinition]) -> QueueBuild {
    let mut out = QueueBuild::default();
    let mut chosen: BTreeMap<&str, &QueueDefinition> = BTreeMap::new();
    for d in defs {
        let keep_prev = match chosen.get(d.name.as_str()) {
            None => false,
            Some(prev) if prev.dialect == d.dialect => false,
            Some(prev) => {
                out.problem(
                    &d.name,
                    "a Volcano Queue of the same name is ignored: Muster's Queue wins".into(),
                );
                prev.dialect == QueueDialect::Muster
            }
        };
        if !keep_prev {
            chosen.insert(&d.name, d);
        }
    }
    if chosen.is_empty() {
        return out;
    }
    let mut specs: Vec<QueueSpec> = Vec::with_capacity(chosen.len() + 1);
    for d in chosen.values() {
        specs.push(spec_of(d, &mut out));
    }
    if !chosen.contains_key(DEFAULT_QUEUE) {
        specs.push(QueueSpec::new(DEFAULT_QUEUE));
    }
    // Drop a queue the core refuses, and retry: the error names it; queues under it then name
    // a missing parent and are dropped in turn.
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    loop {
        match QueueTree::new(&specs) {
            Ok(tree) => {
                out.tree = tree;
                return out;
            }
            Err(e) => {
                let bad = culprit(&e, &specs);
                let Some(bad) = bad.filter(|b| !dropped.contains(b)) else {
                    // Not attributable to one queue (cannot happen for the errors the core
                    // gives); plan without queues rather than loop.
                    out.problem(DEFAULT_QUEUE, format!("queues not used: {e}"));
                    out.tree = QueueTree::default();
                    return out;
                };
                out.problem(&bad, format!("queue not used: {e}"));
                specs.retain(|s| s.name != bad);
                dropped.insert(bad);
            }
        }
    }
}

fn culprit(e: &muster_core::QueueError, specs: &[QueueSpec]) -> Option<String> {
    use muster_core::QueueError as E;
    let name = match e {
        E::EmptyName => {
            return specs
                .iter()
                .find(|s| s.name.is_empty())
                .map(|s| s.name.clone());
        }
        E::Duplicate(q) | E::Cycle(q) | E::UnknownQueue(q) | E::NotALeaf(q) => q,
        E::UnknownParent { queue, .. }
        | E::UnknownResource { queue, .. }
        | E::DuplicateResource { queue, .. }
        | E::Negative { queue, .. }
        | E::Weight { queue, .. }
        | E::GuaranteeAboveLimit { queue, .. }
        | E::ChildrenAboveLimit { queue, .. } => queue,
    };
    Some(name.clone())
}

fn spec_of(d: &QueueDefinition, out: &mut QueueBuild) -> QueueSpec {
    let mut s = QueueSpec::new(d.name.clone());
    s.parent = d.parent.clone();
    s.borrowed_reclaimable = d.borrowed_reclaimable;
    s.closed = d.closed;
    s.reclaimable = d.resources.iter().all(|r| r.reclaim_lent);
    for r in &d.resources {
        let resource = match &r.resource {
            QueueResource::Gpu { product: None } => Resource::Gpu,
            QueueResource::Cpu => Resource::Cpu,
            QueueResource::Memory => Resource::Memory,
            QueueResource::Gpu { product: Some(p) } => {
                out.problem(
                    &d.name,
                    format!("the quota for GPU product {p} is not enforced yet (only all GPUs)"),
                );
                continue;
            }
        };
        let guaranteed = r.deserved.unwrap_or(r.guaranteed);
        s.quotas.push(QuotaSpec {
            resource: resource.name().into(),
            guaranteed: i64::try_from(guaranteed).unwrap_or(i64::MAX),
            limit: r.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)),
            weight: i64::from(r.weight.max(1)),
        });
    }
    if !d
        .resources
        .iter()
        .any(|r| r.resource == (QueueResource::Gpu { product: None }))
    {
        // The weight of resources the object does not name.
        s = s.weight(Resource::Gpu, i64::from(d.default_weight.max(1)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_crds::queue_spec::ResourceQuota;

    fn def(name: &str, parent: Option<&str>, gpus: Option<(u64, Option<u64>)>) -> QueueDefinition {
        QueueDefinition {
            name: name.into(),
            parent: parent.map(str::to_string),
            dialect: QueueDialect::Muster,
            resources: gpus
                .map(|(g, l)| ResourceQuota {
                    resource: QueueResource::Gpu { product: None },
                    guaranteed: g,
                    limit: l,
                    weight: 1,
                    reclaim_lent: true,
                    deserved: None,
                })
                .into_iter()
                .collect(),
            default_weight: 1,
            borrowed_reclaimable: true,
            priority: 0,
            closed: false,
            ignored: Vec::new(),
        }
    }

    #[test]
    fn no_objects_no_queues() {
        let b = build(&[]);
        assert!(b.tree.is_empty());
        assert!(b.problems.is_empty());
    }

    #[test]
    fn an_implicit_default_holds_gangs_that_name_no_queue() {
        let b = build(&[def("research", None, Some((8, None)))]);
        assert!(b.tree.is_leaf(DEFAULT_QUEUE));
        assert!(b.tree.is_leaf("research"));
    }

    #[test]
    fn a_bad_queue_costs_itself_and_its_children_only() {
        let b = build(&[
            def("org", None, Some((8, Some(4)))),
            def("team", Some("org"), Some((2, None))),
            def("other", None, Some((8, None))),
        ]);
        assert!(b.tree.is_leaf("other"));
        assert!(!b.tree.is_leaf("org"));
        assert!(!b.tree.is_leaf("team"));
        assert!(
            b.problems["org"][0].contains("above its limit"),
            "{:?}",
            b.problems
        );
        assert!(
            b.problems["team"][0].contains("does not exist"),
            "{:?}",
            b.problems
        );
    }

    #[test]
    fn volcano_deserved_is_the_guarantee_and_muster_wins_a_name_clash() {
        let mut v = def("research", None, Some((2, Some(16))));
        v.dialect = QueueDialect::Volcano;
        v.resources[0].deserved = Some(8);
        v.borrowed_reclaimable = false;
        let b = build(&[v.clone()]);
        let spec = spec_of(&v, &mut QueueBuild::default());
        assert_eq!(spec.quotas[0].guaranteed, 8);
        assert!(!spec.borrowed_reclaimable);
        assert!(b.tree.is_leaf("research"));
        let b = build(&[v, def("research", None, None)]);
        assert!(b.problems["research"][0].contains("Muster's Queue wins"));
    }

    #[test]
    fn a_per_product_quota_is_reported_not_enforced() {
        let mut d = def("research", None, Some((8, None)));
        d.resources.push(ResourceQuota {
            resource: QueueResource::Gpu {
                product: Some("NVIDIA-A100-SXM4-80GB".into()),
            },
            guaranteed: 4,
            limit: None,
            weight: 1,
            reclaim_lent: true,
            deserved: None,
        });
        let b = build(&[d]);
        assert!(b.tree.is_leaf("research"));
        assert!(b.problems["research"][0].contains("not enforced yet"));
    }
}
