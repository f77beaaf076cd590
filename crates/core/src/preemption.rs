//! Gang-aware preemption: the cheapest set of whole lower-priority gangs whose eviction lets
//! the whole preemptor fit.
//!
//! Victims are only gangs of strictly lower priority that run on nodes the preemptor could use.
//! They are tried cheapest first (lowest priority, fewest GPUs, most recently started); a binary
//! search finds the shortest prefix that makes room (room only grows with more victims), then
//! a bounded pass drops victims that turn out unnecessary. Victim gangs are evicted whole, so
//! no victim is ever left running below its minimum.

use crate::cluster::{NodeFree, RunningGang};
use crate::gpu_choice::mask_of;
use crate::model::{Gang, GangKey, PodRequest};
use crate::placement::{Assignment, Work};
use crate::planner::{PlannerConfig, Preemption, Victim};
use std::collections::HashSet;

pub(crate) enum Outcome {
    Preempt(Preemption),
    /// Earlier victims are still terminating; the gang fits once they are gone (nodes held).
    AwaitVictims(Vec<String>),
    /// Preemption would help but the gang may not preempt; the note says whom it would evict.
    NotAllowed(Option<String>),
    /// No set of lower-priority gangs makes room; the note says why when useful.
    Impossible(Option<String>),
}

pub(crate) fn search(
    work: &mut Work<'_>,
    gang: &Gang,
    members: &[&PodRequest],
    holder: Option<u32>,
    evicted: &HashSet<GangKey>,
    config: &PlannerConfig,
) -> Outcome {
    let cluster = work.cluster;
    let mut relevant = vec![false; work.free.len()];
    for m in members {
        for &i in &work.static_fit(&m.selector, &m.tolerations).nodes {
            relevant[i as usize] = true;
        }
    }
    let on_relevant = |g: &RunningGang| {
        g.pods.iter().any(|id| {
            cluster
                .pod(id)
                .and_then(|p| cluster.index_of(&p.node))
                .is_some_and(|i| relevant[i])
        })
    };

    // Terminating pods will free their resources: count on them before evicting anyone new.
    let mut base = work.free.clone();
    let mut terminating = false;
    for (key, g) in &cluster.gangs {
        if g.terminating && !evicted.contains(key) && on_relevant(g) {
            terminating = true;
            release(work, &mut base, g);
        }
    }
    if terminating && let Ok(assignments) = work.fork(base.clone()).place(members, holder) {
        return Outcome::AwaitVictims(hold(work, &assignments, holder));
    }

    let mut candidates: Vec<(&GangKey, &RunningGang)> = cluster
        .gangs
        .iter()
        .filter(|(key, g)| {
            **key != gang.key
                && !g.terminating
                && g.preemptible
                && g.priority < gang.priority
                && !evicted.contains(*key)
                && on_relevant(g)
        })
        .collect();
    if candidates.is_empty() {
        return Outcome::Impossible(None);
    }
    candidates.sort_by_key(|(key, g)| {
        (
            g.priority,
            g.gpus,
            std::cmp::Reverse(g.newest_start),
            (*key).clone(),
        )
    });

    let try_set = |work: &Work<'_>, set: &[usize]| -> Option<Vec<Assignment>> {
        let mut free = base.clone();
        for &v in set {
            release(work, &mut free, candidates[v].1);
        }
        work.fork(free).place(members, holder).ok()
    };
    let all: Vec<usize> = (0..candidates.len()).collect();
    if try_set(work, &all).is_none() {
        return Outcome::Impossible(Some(format!(
            "preempting all {} lower-priority gang{} on matching nodes would still not make room",
            candidates.len(),
            if candidates.len() == 1 { "" } else { "s" }
        )));
    }
    // Shortest prefix of the cheapest-first order that makes room.
    let (mut lo, mut hi) = (1, candidates.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if try_set(work, &all[..mid]).is_some() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut chosen: Vec<usize> = all[..lo].to_vec();
    // Drop victims that are not needed, most expensive first, within a bounded budget.
    let mut checks = 0;
    for pos in (0..chosen.len().saturating_sub(1)).rev() {
        if checks >= config.max_prune_checks {
            break;
        }
        checks += 1;
        let mut without = chosen.clone();
        without.remove(pos);
        if try_set(work, &without).is_some() {
            chosen = without;
        }
    }
    let Some(assignments) = try_set(work, &chosen) else {
        return Outcome::Impossible(None);
    };
    let victims: Vec<Victim> = chosen
        .iter()
        .map(|&v| {
            let (key, g) = candidates[v];
            Victim {
                gang: key.clone(),
                priority: g.priority,
                pods: g.pods.clone(),
                gpus: g.gpus,
            }
        })
        .collect();
    let names: Vec<String> = victims
        .iter()
        .map(|v| format!("{} (priority {})", v.gang, v.priority))
        .collect();
    if !gang.can_preempt {
        return Outcome::NotAllowed(Some(format!(
            "would fit after preempting {}, but its preemption policy is Never",
            names.join(", ")
        )));
    }
    hold(work, &assignments, holder);
    let freed: u32 = victims.iter().map(|v| v.gpus).sum();
    Outcome::Preempt(Preemption {
        gang: gang.key.clone(),
        message: format!("preempting {} to free {freed} GPUs", names.join(", ")),
        victims,
        assignments,
    })
}

/// Gives a running gang's resources back in `free` (a what-if copy).
fn release(work: &Work<'_>, free: &mut [NodeFree], g: &RunningGang) {
    for id in &g.pods {
        let Some(p) = work.cluster.pod(id) else {
            continue;
        };
        let Some(i) = work.cluster.index_of(&p.node) else {
            continue;
        };
        let healthy = work.cluster.nodes[i].healthy;
        free[i].give_back(
            &p.resources,
            mask_of(p.gpus.iter().map(|&x| x as usize)),
            healthy,
        );
    }
}

/// Keeps the preemptor's future spot from the rest of this cycle's gangs.
fn hold(work: &mut Work<'_>, assignments: &[Assignment], holder: Option<u32>) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for a in assignments {
        let Some(i) = work.cluster.index_of(&a.node) else {
            continue;
        };
        work.free[i].take(
            &crate::model::Resources::default(),
            mask_of(a.gpus.iter().map(|&x| x as usize)),
        );
        work.free[i].gpu_budget = work.free[i].gpu_budget.saturating_sub(a.gpus.len() as u32);
        if holder.is_some() {
            work.reserved_by[i] = holder;
        }
        if !nodes.contains(&a.node) {
            nodes.push(a.node.clone());
        }
    }
    nodes
}
