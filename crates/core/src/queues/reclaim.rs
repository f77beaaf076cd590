//! Reclaim: a queue below its guarantee takes back what others borrowed.
//!
//! Triggered for a gang that does not fit when its queue, with the gang, stays within its
//! guarantee on every resource it names (and the gang asks for at least one guaranteed
//! resource). Victims are whole running gangs of other queues (never the waiting queue nor
//! its ancestors: inside a queue, eviction is priority preemption), lowest priority first,
//! then fewest GPUs, newest first. A gang is a candidate only while its queue is above its
//! guarantee on a named resource the gang holds, and only while evicting it (with the
//! candidates before it) leaves its queue, and every ancestor not shared with the waiting
//! queue, at or above the guarantee on every named resource where they were at or above
//! it. The search itself is preemption's whole-gang search over those candidates. It runs
//! only for a reclaimable queue; a queue with `reclaimable: false` is told what reclaiming
//! would take and waits.

use super::usage::{Usage, of_gang, sub};
use super::{Amounts, QueueTree, RESOURCES};
use crate::cluster::RunningGang;
use crate::model::{Gang, GangKey, PodRequest};
use crate::placement::Work;
use crate::planner::{PlannerConfig, Victim};
use crate::preemption::{self, Outcome, Policy};
use std::collections::{BTreeMap, HashSet};

/// Whether the queue, with `need` more, stays within its guarantee on every resource it names,
/// `need` asking for at least one resource the queue is guaranteed.
pub(crate) fn within_guarantee(tree: &QueueTree, usage: &Usage, q: usize, need: Amounts) -> bool {
    let node = &tree.nodes[q];
    let mut uses_guarantee = false;
    for r in RESOURCES {
        let k = r.index();
        if !node.named[k] {
            continue;
        }
        if usage.alloc[q][k].saturating_add(need[k]) > node.guaranteed[k] {
            return false;
        }
        uses_guarantee |= need[k] > 0 && node.guaranteed[k] > 0;
    }
    uses_guarantee
}

/// Whether any leaf outside `q`'s chain holds more than its guarantee of a resource it names
/// and lets it be reclaimed: without one there is nothing to reclaim, and the per-gang search
/// (linear in running gangs) is skipped.
pub(crate) fn anyone_borrows(tree: &QueueTree, usage: &Usage, q: usize) -> bool {
    let waiting: Vec<usize> = tree.chain(q).collect();
    (0..tree.nodes.len()).any(|v| {
        let n = &tree.nodes[v];
        n.children.is_empty()
            && n.borrowed_reclaimable
            && !waiting.contains(&v)
            && (0..3).any(|k| n.named[k] && usage.alloc[v][k] > n.guaranteed[k])
    })
}

/// Running gangs that may be reclaimed for queue `q`, cheapest first, as a set every subset of
/// which keeps the victims' queues at their guarantees.
pub(crate) fn candidates(
    tree: &QueueTree,
    usage: &Usage,
    cluster_gangs: &BTreeMap<GangKey, RunningGang>,
    q: usize,
    evicted: &HashSet<GangKey>,
) -> Vec<GangKey> {
    let waiting: Vec<usize> = tree.chain(q).collect();
    let mut all: Vec<(&GangKey, &RunningGang, usize)> = usage
        .queue_of
        .iter()
        .filter(|(_, v)| !waiting.contains(v))
        .filter_map(|(k, &v)| cluster_gangs.get(k).map(|g| (k, g, v)))
        .filter(|(k, g, _)| g.preemptible && !g.terminating && !evicted.contains(*k))
        .collect();
    all.sort_by_key(|(k, g, _)| (g.priority, g.gpus, std::cmp::Reverse(g.newest_start), *k));
    let mut left = usage.alloc.clone();
    let mut out = Vec::new();
    for (key, g, v) in all {
        let held = of_gang(g);
        let leaf = &tree.nodes[v];
        if !leaf.borrowed_reclaimable {
            continue;
        }
        let borrows =
            (0..3).any(|k| leaf.named[k] && held[k] > 0 && left[v][k] > leaf.guaranteed[k]);
        if !borrows {
            continue;
        }
        let guards: Vec<usize> = tree.chain(v).filter(|c| !waiting.contains(c)).collect();
        let keeps = guards.iter().all(|&c| {
            let node = &tree.nodes[c];
            (0..3).all(|k| {
                !node.named[k]
                    || left[c][k] < node.guaranteed[k]
                    || left[c][k].saturating_sub(held[k]) >= node.guaranteed[k]
            })
        });
        if !keeps {
            continue;
        }
        for &c in &guards {
            left[c] = sub(left[c], held);
        }
        out.push(key.clone());
    }
    out
}

/// "16 GPUs borrowed by team-b (2 gangs), 8 GPUs borrowed by team-c (1 gang)".
fn borrowed_by(
    victims: &[Victim],
    queue_of: &BTreeMap<GangKey, usize>,
    tree: &QueueTree,
) -> String {
    let mut by: BTreeMap<usize, (u64, usize)> = BTreeMap::new();
    for v in victims {
        if let Some(&q) = queue_of.get(&v.gang) {
            let e = by.entry(q).or_default();
            e.0 = e.0.saturating_add(u64::from(v.gpus));
            e.1 += 1;
        }
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(&q, &(gpus, n))| {
            format!(
                "{} borrowed by {} ({n} gang{})",
                super::Resource::Gpu.amount(gpus),
                tree.nodes[q].name,
                if n == 1 { "" } else { "s" }
            )
        })
        .collect();
    parts.join(", ")
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn search(
    work: &mut Work<'_>,
    tree: &QueueTree,
    usage: &Usage,
    gang: &Gang,
    q: usize,
    members: &[&PodRequest],
    holder: Option<u32>,
    evicted: &HashSet<GangKey>,
    config: &PlannerConfig,
) -> Outcome {
    let allowed: HashSet<GangKey> = candidates(tree, usage, &work.cluster.gangs, q, evicted)
        .into_iter()
        .collect();
    let kept = protected(tree, usage, q);
    if allowed.is_empty() {
        return Outcome::Impossible(kept);
    }
    let name = &tree.nodes[q].name;
    let reclaimable = tree.nodes[q].reclaimable;
    let describe = |victims: &[Victim]| borrowed_by(victims, &usage.queue_of, tree);
    let outcome = preemption::search_with(
        work,
        gang,
        members,
        holder,
        evicted,
        config,
        &Policy {
            eligible: &|key, _| allowed.contains(key),
            refuse: &|victims| {
                if !reclaimable {
                    Some(format!(
                        "would fit after reclaiming {}, but queue {name} lends without reclaim (reclaimable: false)",
                        describe(victims)
                    ))
                } else if !gang.can_preempt {
                    Some(format!(
                        "would fit after reclaiming {}, but its preemption policy is Never",
                        describe(victims)
                    ))
                } else {
                    None
                }
            },
            message: &|victims| {
                format!(
                    "reclaiming {} for queue {name}, below its guarantee",
                    describe(victims)
                )
            },
            impossible: &|n| {
                format!(
                    "reclaiming all {n} gang{} borrowing above their queues' guarantees would still not make room",
                    if n == 1 { "" } else { "s" }
                )
            },
            reclaim: true,
        },
    );
    match (outcome, kept) {
        (Outcome::Impossible(note), Some(k)) => Outcome::Impossible(Some(match note {
            Some(n) => format!("{n}; {k}"),
            None => k,
        })),
        (o, _) => o,
    }
}

/// "team-b keeps what it borrows (...)": queues outside the waiting one's chain that hold
/// more than their guarantee but protect it from reclaim.
fn protected(tree: &QueueTree, usage: &Usage, q: usize) -> Option<String> {
    let waiting: Vec<usize> = tree.chain(q).collect();
    let names: Vec<&str> = (0..tree.nodes.len())
        .filter(|v| !waiting.contains(v))
        .filter(|&v| {
            let n = &tree.nodes[v];
            n.children.is_empty()
                && !n.borrowed_reclaimable
                && (0..3).any(|k| n.named[k] && usage.alloc[v][k] > n.guaranteed[k])
        })
        .map(|v| tree.nodes[v].name.as_str())
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "{} keep{} what {} borrow{} (borrowed capacity not reclaimable)",
        names.join(", "),
        if names.len() == 1 { "s" } else { "" },
        if names.len() == 1 { "it" } else { "they" },
        if names.len() == 1 { "s" } else { "" },
    ))
}
