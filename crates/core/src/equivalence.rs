//! Equivalence classes within one planning round (kube-scheduler and Slurm's backfill do the
//! same): once `want` members of one shape cannot fit, no later gang made only of that shape
//! and needing at least `want` members can, because capacity only shrinks within a round
//! (placements, preemptors' holds and reservations take; nothing gives back). Such a gang
//! gets its verdict without the search. The facts its explanation is written from are kept
//! up to date node by node as capacity changes, so verdicts and messages are exactly the
//! search's (`tests/equivalence.rs` checks plans with and without the skip are equal) at a
//! cost of the nodes changed since, not of the cluster.

use crate::explain::{self, WaitReason};
use crate::model::PodRequest;
use crate::placement::{Contribution, Shortfall, Work, same_shape};

/// `want` members of `shape` did not fit; `facts` say why as of the first `seen` of
/// `Work::changes`, summing `parts` (by node; `None`: the node does not match).
struct Failed<'g> {
    shape: &'g PodRequest,
    want: usize,
    facts: Box<Shortfall>,
    parts: Vec<Option<Contribution>>,
    seen: usize,
    /// The verdicts written from `facts`, by how many members they were for, while the facts
    /// hold: long queues repeat them many times (gangs of one shape differ only in size).
    said: Vec<(u32, WaitReason, String)>,
}

impl Failed<'_> {
    /// Brings `facts` up to date with the nodes changed since they were computed.
    fn update(&mut self, work: &Work<'_>) {
        let want = u32::try_from(self.want).unwrap_or(u32::MAX);
        for &i in work.changes.get(self.seen..).unwrap_or_default() {
            let Some(Some(old)) = self.parts.get(i as usize).copied() else {
                continue;
            };
            let new = work.contribution(i, self.shape, want);
            if new == old {
                continue;
            }
            self.said.clear();
            let f = &mut self.facts;
            f.fit_now = f.fit_now.saturating_sub(old.fit).saturating_add(new.fit);
            f.reserved_nodes_skipped = (f.reserved_nodes_skipped)
                .saturating_sub(old.reserved as usize)
                .saturating_add(new.reserved as usize);
            f.free_gpus = (f.free_gpus)
                .saturating_sub(u64::from(old.free_gpus))
                .saturating_add(u64::from(new.free_gpus));
            f.nodes_with_room = (f.nodes_with_room)
                .saturating_sub(old.room as usize)
                .saturating_add(new.room as usize);
            self.parts[i as usize] = Some(new);
        }
        self.seen = work.changes.len();
    }
}

/// A preemption search for `want` members of `shape` at `priority` found no victims, after
/// `evictions` preemptions had been planned this round.
struct NoVictims<'g> {
    shape: &'g PodRequest,
    want: usize,
    priority: i32,
    evictions: usize,
    note: Option<String>,
}

/// One round's classes of gangs known not to fit.
#[derive(Default)]
pub(crate) struct Classes<'g> {
    failed: Vec<Failed<'g>>,
    no_victims: Vec<NoVictims<'g>>,
    /// Gangs given a verdict without a placement search (for tests and profiling).
    pub skipped: usize,
}

/// The shape of `core` when every member has it.
fn uniform<'g>(core: &[&'g PodRequest]) -> Option<&'g PodRequest> {
    let first = *core.first()?;
    core.iter().all(|m| same_shape(first, m)).then_some(first)
}

impl<'g> Classes<'g> {
    /// Why `core` cannot fit, when an earlier gang of its shape needing no more members could
    /// not: the verdict a search would give now, without the search.
    pub fn known_shortfall(
        &mut self,
        work: &Work<'_>,
        core: &[&'g PodRequest],
    ) -> Option<(WaitReason, String)> {
        let first = uniform(core)?;
        self.known_uniform(work, first, core.len())
    }

    /// [`Classes::known_shortfall`] for `count` (at least one) members all shaped like
    /// `first`, when the caller already knows they are.
    pub fn known_uniform(
        &mut self,
        work: &Work<'_>,
        first: &PodRequest,
        count: usize,
    ) -> Option<(WaitReason, String)> {
        let f = self
            .failed
            .iter_mut()
            .find(|f| f.want <= count && same_shape(f.shape, first))?;
        f.update(work);
        self.skipped = self.skipped.saturating_add(1);
        let pods = u32::try_from(count).unwrap_or(u32::MAX);
        if let Some((_, reason, message)) = f.said.iter().find(|(n, _, _)| *n == pods) {
            return Some((*reason, message.clone()));
        }
        // Every node took fewer than `f.want` members, so as many of `core`'s fit as of
        // theirs: only the number asked for differs.
        f.facts.pods = pods;
        let (reason, message) = explain::shortfall(&f.facts);
        f.said.push((pods, reason, message.clone()));
        Some((reason, message))
    }

    /// Remembers a placement search's failure when it proves later ones (one shape, short
    /// of room in total rather than unlucky in choice).
    pub fn failed(&mut self, work: &Work<'_>, core: &[&'g PodRequest], facts: &Shortfall) {
        let Some(first) = uniform(core) else { return };
        if facts.fit_now >= facts.pods
            || self
                .failed
                .iter()
                .any(|f| f.want <= core.len() && same_shape(f.shape, first))
        {
            return;
        }
        let want = u32::try_from(core.len()).unwrap_or(u32::MAX);
        let mut parts = vec![None; work.free.len()];
        for &i in &work.static_fit(first).nodes {
            if let Some(p) = parts.get_mut(i as usize) {
                *p = Some(work.contribution(i, first, want));
            }
        }
        let sum = |f: fn(&Contribution) -> u64| parts.iter().flatten().map(f).sum::<u64>();
        debug_assert_eq!(sum(|p| p.fit.into()), u64::from(facts.fit_now));
        debug_assert_eq!(sum(|p| p.free_gpus.into()), facts.free_gpus);
        debug_assert_eq!(
            sum(|p| p.reserved.into()),
            facts.reserved_nodes_skipped as u64
        );
        debug_assert_eq!(sum(|p| p.room.into()), facts.nodes_with_room as u64);
        self.failed.push(Failed {
            shape: first,
            want: core.len(),
            facts: Box::new(facts.clone()),
            parts,
            seen: work.changes.len(),
            said: Vec::new(),
        });
    }

    /// The note of an earlier fruitless preemption search that proves this one fruitless too:
    /// same shape, no more members, the same priority (the same candidate victims) and no
    /// eviction planned since.
    pub fn known_no_victims(
        &self,
        core: &[&PodRequest],
        priority: i32,
        evictions: usize,
    ) -> Option<Option<String>> {
        let first = uniform(core)?;
        self.no_victims
            .iter()
            .find(|n| {
                n.priority == priority
                    && n.evictions == evictions
                    && n.want <= core.len()
                    && same_shape(n.shape, first)
            })
            .map(|n| n.note.clone())
    }

    pub fn no_victims(
        &mut self,
        core: &[&'g PodRequest],
        priority: i32,
        evictions: usize,
        note: &Option<String>,
    ) {
        let Some(first) = uniform(core) else { return };
        if self.known_no_victims(core, priority, evictions).is_some() {
            return;
        }
        self.no_victims.push(NoVictims {
            shape: first,
            want: core.len(),
            priority,
            evictions,
            note: note.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cluster, Gang, GangKey, NodeInfo, PlacedPod, PlannerConfig, PodId, Resources};

    fn full_node() -> Cluster {
        let spec = muster_api::machines::builtin("dgx-a100").unwrap();
        let mut c = Cluster::new([NodeInfo::from_machine("n0", spec)]).unwrap();
        c.add_pod(PlacedPod {
            id: PodId::new("run-0"),
            gang: GangKey::new("run", "g0"),
            node: "n0".into(),
            resources: Resources::new(1000, 1 << 30, 6),
            gpus: (0..6).collect(),
            priority: 0,
            started_at: 0,
            preemptible: true,
            terminating: false,
            ends_by: None,
        })
        .unwrap();
        c
    }

    #[test]
    fn equivalent_gangs_are_not_searched_again() {
        let c = full_node();
        // 2 GPUs free: the first 4-pod gang fails, so must every bigger one of its shape.
        let mut gangs: Vec<Gang> = (0..50)
            .map(|i| Gang::uniform("p", &format!("g{i}"), 4 + i % 3, 1, 0, i.into()))
            .collect();
        // A smaller gang of the shape is searched (and fits), a different shape too.
        gangs.push(Gang::uniform("p", "small", 2, 1, 0, 100));
        gangs.push(Gang::uniform("p", "other", 1, 2, 0, 101));
        let skip = PlannerConfig::default();
        let search = PlannerConfig {
            skip_equivalent: false,
            ..PlannerConfig::default()
        };
        let (with, skipped) = c.plan_counted(&gangs, 0, &skip);
        let (without, none) = c.plan_counted(&gangs, 0, &search);
        assert_eq!(with, without);
        assert_eq!(none, 0);
        assert_eq!(skipped, 49);
        assert_eq!(with.placements.len(), 1, "{with:?}");
    }
}
