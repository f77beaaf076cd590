//! Whose turn it is in a round with queues: guaranteed work first, then the child furthest
//! below its fair share at every level (see [`super`]). The pick runs once per gang, so
//! what it reads is kept between picks: each queue's ratio to its fair share changes only
//! when usage does (a gang placed or evicted), and whether a leaf's head gang stays within
//! its guarantee only then or when that head changes.

use super::Round;
use crate::queues::QueueTree;
use crate::queues::{reclaim, share};

#[derive(Default)]
pub(super) struct Turns {
    /// Per queue, allocated over fair share (see [`share::ratio`]).
    pub ratio: Vec<u64>,
    /// Per queue, gangs are waiting in its line.
    waiting: Vec<bool>,
    /// Per queue, its first waiting gang stays within its guarantee.
    guaranteed: Vec<bool>,
    /// Scratch: queues on the chain of a leaf that may be served.
    open: Vec<bool>,
}

impl Turns {
    pub fn new(n: usize) -> Turns {
        Turns {
            ratio: vec![0; n],
            waiting: vec![false; n],
            guaranteed: vec![false; n],
            open: vec![false; n],
        }
    }

    /// Sets queue `q`'s view of its line: whether it has gangs, and whether the first stays
    /// within its guarantee.
    pub fn set_head(&mut self, q: usize, waiting: bool, guaranteed: bool) {
        self.waiting[q] = waiting;
        self.guaranteed[q] = waiting && guaranteed;
    }

    /// The next leaf to serve: among leaves whose head gang stays within its guarantee if
    /// any, else among all with gangs waiting, the child with the lowest (ratio, index) at
    /// every level from the roots down.
    pub fn pick(&mut self, tree: &QueueTree) -> Option<usize> {
        let guaranteed_only = self.guaranteed.iter().any(|&g| g);
        let pool = if guaranteed_only {
            &self.guaranteed
        } else {
            &self.waiting
        };
        self.open.fill(false);
        for q in (0..pool.len()).filter(|&q| pool[q]) {
            for c in tree.chain(q) {
                self.open[c] = true;
            }
        }
        let ratio = &self.ratio;
        let open = &self.open;
        let best = |level: &mut dyn Iterator<Item = usize>| {
            level.filter(|&q| open[q]).min_by_key(|&q| (ratio[q], q))
        };
        let mut at = best(&mut tree.roots())?;
        loop {
            let children = &tree.nodes[at].children;
            if children.is_empty() {
                return Some(at);
            }
            at = best(&mut children.iter().copied())?;
        }
    }
}

impl Round<'_, '_> {
    /// Brings the turn order up to date: every queue after usage changed, else only `leaf`,
    /// whose head gang left its line.
    pub(super) fn refresh(&mut self, leaf: Option<usize>) {
        let changed = std::mem::take(&mut self.usage_changed);
        if changed || leaf.is_none() {
            self.borrows.fill(None);
            for q in 0..self.tree.nodes.len() {
                self.turns.ratio[q] = share::ratio(&self.usage.alloc[q], &self.shares[q]);
                self.refresh_head(q);
            }
        } else if let Some(q) = leaf {
            self.refresh_head(q);
        }
    }

    fn refresh_head(&mut self, q: usize) {
        let (waiting, guaranteed) = self.head_view(q);
        self.turns.set_head(q, waiting, guaranteed);
    }

    /// Whether `q` has gangs waiting, and whether the first stays within its guarantee.
    fn head_view(&self, q: usize) -> (bool, bool) {
        let front = self.lines[q].front();
        let guaranteed =
            front.is_some_and(|e| reclaim::within_guarantee(self.tree, &self.usage, q, e.need));
        (front.is_some(), guaranteed)
    }

    /// [`reclaim::anyone_borrows`], kept per leaf until usage changes: blocked gangs of one
    /// queue ask it again and again.
    pub(super) fn anyone_borrows(&mut self, leaf: usize) -> bool {
        let fresh = || reclaim::anyone_borrows(self.tree, &self.usage, leaf);
        match self.borrows.get(leaf).copied().flatten() {
            Some(kept) => {
                debug_assert_eq!(kept, fresh(), "kept borrowing went stale");
                kept
            }
            None => {
                let b = fresh();
                if let Some(slot) = self.borrows.get_mut(leaf) {
                    *slot = Some(b);
                }
                b
            }
        }
    }

    /// The pick from scratch, to check the kept turn order against (tests).
    #[cfg(debug_assertions)]
    pub(super) fn pick_afresh(&self) -> Option<usize> {
        let mut t = Turns::new(self.tree.nodes.len());
        for q in 0..self.tree.nodes.len() {
            t.ratio[q] = share::ratio(&self.usage.alloc[q], &self.shares[q]);
            let (waiting, guaranteed) = self.head_view(q);
            t.set_head(q, waiting, guaranteed);
        }
        t.pick(self.tree)
    }
}
