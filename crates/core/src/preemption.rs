//! Gang-aware preemption: the cheapest set of whole lower-priority gangs whose eviction lets
//! the whole preemptor fit.
//!
//! Victims are only gangs of strictly lower priority that run on nodes the preemptor could use.
//! Lower priority levels are exhausted before higher ones are touched. Within a level, nodes
//! are bought cheapest first: for each node, the cheapest victims (fewest GPUs, most recently
//! started) that open room on it, priced per member they make room for; if that estimate does
//! not verify, a binary search finds the shortest cheapest-first prefix that does. A bounded
//! pass then drops victims that turn out unnecessary. Victim gangs are evicted whole, so
//! no victim is ever left running below its minimum.

use crate::cluster::{NodeFree, RunningGang};
use crate::gpu_choice::mask_of;
use crate::model::{Gang, GangKey, PodRequest};
use crate::placement::{Assignment, Work};
use crate::planner::{PlannerConfig, Preemption, Victim};
use std::collections::{HashMap, HashSet};

pub(crate) enum Outcome {
    Preempt(Preemption),
    /// Earlier victims are still terminating; the gang fits once they are gone (nodes held).
    AwaitVictims(Vec<String>),
    /// Preemption would help but the gang may not preempt; the note says whom it would evict.
    NotAllowed(Option<String>),
    /// No set of lower-priority gangs makes room; the note says why when useful.
    Impossible(Option<String>),
}

/// Who may be evicted and how the outcome reads: priority preemption or a queue's reclaim.
pub(crate) struct Policy<'a> {
    /// Beyond the common rules (not the gang itself, not terminating, preemptible, not
    /// already evicted this cycle, on nodes the gang could use).
    pub eligible: &'a dyn Fn(&GangKey, &RunningGang) -> bool,
    /// `Some(note)`: the victims found may not be evicted, the note says why.
    pub refuse: &'a dyn Fn(&[Victim]) -> Option<String>,
    /// The preemption's message.
    pub message: &'a dyn Fn(&[Victim]) -> String,
    /// Why no set of eligible gangs makes room, given how many there are.
    pub impossible: &'a dyn Fn(usize) -> String,
    pub reclaim: bool,
}

fn names(victims: &[Victim]) -> String {
    let names: Vec<String> = victims
        .iter()
        .map(|v| format!("{} (priority {})", v.gang, v.priority))
        .collect();
    names.join(", ")
}

pub(crate) fn search(
    work: &mut Work<'_>,
    gang: &Gang,
    members: &[&PodRequest],
    holder: Option<u32>,
    evicted: &HashSet<GangKey>,
    config: &PlannerConfig,
) -> Outcome {
    search_within(work, gang, members, holder, evicted, config, &|_| true)
}

/// Priority preemption among the gangs `within` accepts (with queues: the gang's own queue).
pub(crate) fn search_within(
    work: &mut Work<'_>,
    gang: &Gang,
    members: &[&PodRequest],
    holder: Option<u32>,
    evicted: &HashSet<GangKey>,
    config: &PlannerConfig,
    within: &dyn Fn(&GangKey) -> bool,
) -> Outcome {
    search_with(
        work,
        gang,
        members,
        holder,
        evicted,
        config,
        &Policy {
            eligible: &|key, g| g.priority < gang.priority && within(key),
            refuse: &|victims| {
                (!gang.can_preempt).then(|| {
                    format!(
                        "would fit after preempting {}, but its preemption policy is Never",
                        names(victims)
                    )
                })
            },
            message: &|victims| {
                let freed: u32 = victims.iter().map(|v| v.gpus).sum();
                format!("preempting {} to free {freed} GPUs", names(victims))
            },
            impossible: &|n| {
                format!(
                    "preempting all {n} lower-priority gang{} on matching nodes would still not make room",
                    if n == 1 { "" } else { "s" }
                )
            },
            reclaim: false,
        },
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn search_with(
    work: &mut Work<'_>,
    gang: &Gang,
    members: &[&PodRequest],
    holder: Option<u32>,
    evicted: &HashSet<GangKey>,
    config: &PlannerConfig,
    policy: &Policy<'_>,
) -> Outcome {
    let cluster = work.cluster;
    let mut relevant = vec![false; work.free.len()];
    for m in members {
        for &i in &work.static_fit(m).nodes {
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
        return Outcome::AwaitVictims(hold(work, &assignments));
    }

    let mut candidates: Vec<(&GangKey, &RunningGang)> = cluster
        .gangs
        .iter()
        .filter(|(key, g)| {
            **key != gang.key
                && !g.terminating
                && g.preemptible
                && !evicted.contains(*key)
                && (policy.eligible)(key, g)
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
    // Lowest priorities first: only reach for a higher level when the lower ones cannot help.
    let mut levels: Vec<i32> = candidates.iter().map(|(_, g)| g.priority).collect();
    levels.dedup();
    let mut found = None;
    for level in levels {
        let pool: Vec<usize> = (0..candidates.len())
            .filter(|&v| candidates[v].1.priority <= level)
            .collect();
        let greedy = by_node(work, &base, members, &candidates, &pool, &relevant);
        if try_set(work, &greedy).is_some() {
            found = Some(greedy);
            break;
        }
        // The per-node estimate can miss (CPU, domains, several shapes): shortest working
        // prefix of the cheapest-first order instead, found by binary search.
        if try_set(work, &pool).is_some() {
            let (mut lo, mut hi) = (1, pool.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if try_set(work, &pool[..mid]).is_some() {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            found = Some(pool[..lo].to_vec());
            break;
        }
    }
    let Some(mut chosen) = found else {
        return Outcome::Impossible(Some((policy.impossible)(candidates.len())));
    };
    // Drop victims that are not needed, most expensive first, within a bounded budget.
    chosen.sort_unstable();
    for (checks, pos) in (0..chosen.len()).rev().enumerate() {
        if checks >= config.max_prune_checks || chosen.len() == 1 {
            break;
        }
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
    if let Some(note) = (policy.refuse)(&victims) {
        return Outcome::NotAllowed(Some(note));
    }
    hold(work, &assignments);
    Outcome::Preempt(Preemption {
        gang: gang.key.clone(),
        message: (policy.message)(&victims),
        victims,
        assignments,
        reclaim: policy.reclaim,
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

/// Keeps the preemptor's future spot from the rest of this cycle's gangs: exactly its GPUs,
/// not the whole node, so that a later gang may still evict other victims on the same node
/// (the GPUs it frees are disjoint from these) or use what is really free there.
fn hold(work: &mut Work<'_>, assignments: &[Assignment]) -> Vec<String> {
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
        work.touch(u32::try_from(i).unwrap_or(u32::MAX));
        if !nodes.iter().any(|n| **n == *a.node) {
            nodes.push(a.node.to_string());
        }
    }
    nodes
}

/// Victims chosen node by node: each node's cheapest victims that make room there, nodes taken
/// in order of cost per member of room gained, until the biggest members' shape fits.
fn by_node(
    work: &Work<'_>,
    base: &[NodeFree],
    members: &[&PodRequest],
    candidates: &[(&GangKey, &RunningGang)],
    pool: &[usize],
    relevant: &[bool],
) -> Vec<usize> {
    let cluster = work.cluster;
    let Some((big, want)) = crate::placement::dominant_shape(members) else {
        return Vec::new();
    };
    let res = big.resources;
    let in_pool: HashMap<&GangKey, usize> = pool.iter().map(|&v| (candidates[v].0, v)).collect();
    let mut have = 0u32;
    // (cost, gain, victims) per node.
    let mut options: Vec<(u64, u32, Vec<usize>)> = Vec::new();
    for (i, slot) in cluster.nodes.iter().enumerate() {
        if !relevant[i] || !slot.present {
            continue;
        }
        let cap0 = base[i].capacity_for(&res);
        have = have.saturating_add(cap0);
        let mut victims: Vec<usize> = slot
            .pods
            .iter()
            .filter_map(|id| cluster.pod(id))
            .filter_map(|p| in_pool.get(&p.gang).copied())
            .collect();
        victims.sort_unstable();
        victims.dedup();
        let mut free = base[i];
        let mut cost = 0u64;
        let mut taken = Vec::new();
        for v in victims {
            if free.capacity_for(&res) >= cap0.saturating_add(want) {
                break;
            }
            for id in &candidates[v].1.pods {
                if let Some(p) = cluster.pod(id).filter(|p| p.node == slot.info.name) {
                    free.give_back(
                        &p.resources,
                        mask_of(p.gpus.iter().map(|&x| x as usize)),
                        slot.healthy,
                    );
                }
            }
            cost += u64::from(candidates[v].1.gpus) + 1;
            taken.push(v);
        }
        let gain = free.capacity_for(&res).saturating_sub(cap0);
        if gain > 0 {
            options.push((cost, gain.min(want), taken));
        }
    }
    // Cheapest room per member first (cross-multiplied to stay in integers).
    // Ties go to the node whose victims come first in cheapest-first order.
    options.sort_by(|a, b| {
        (u128::from(a.0) * u128::from(b.1))
            .cmp(&(u128::from(b.0) * u128::from(a.1)))
            .then_with(|| a.2.first().cmp(&b.2.first()))
    });
    let mut chosen: Vec<usize> = Vec::new();
    for (_, gain, victims) in options {
        if have >= want {
            break;
        }
        have = have.saturating_add(gain);
        for v in victims {
            if !chosen.contains(&v) {
                chosen.push(v);
            }
        }
    }
    chosen
}
