//! Which queues went ahead of a waiting gang in a round, and the note that says so. Every
//! blocked gang of a long queue asks for the note; it changes only when a gang is placed, so
//! it is written once per leaf and ratio until then.

use super::QueueTree;
use super::share::format_ratio;

#[derive(Default)]
pub(super) struct Ahead {
    /// (leaf, its share when picked) of every gang placed this round.
    went: Vec<(usize, u64)>,
    /// Per leaf, the last note: (`went`'s length then, the ratio asked for, the note).
    notes: Vec<Option<(usize, u64, Option<String>)>>,
}

impl Ahead {
    pub fn new(n: usize) -> Ahead {
        Ahead {
            went: Vec::new(),
            notes: vec![None; n],
        }
    }

    /// A gang of `leaf`, which had `ratio` when picked, was placed.
    pub fn went(&mut self, leaf: usize, ratio: u64) {
        self.went.push((leaf, ratio));
    }

    /// "waiting for fair share: research 0.9 of its share, vision 0.4" when queues further
    /// below their share placed gangs ahead of this one this round.
    pub fn note(&mut self, tree: &QueueTree, leaf: usize, ratio: u64) -> Option<&str> {
        let now = self.went.len();
        let fresh =
            matches!(self.notes.get(leaf), Some(Some((n, r, _))) if *n == now && *r == ratio);
        if !fresh {
            let note = self.write(tree, leaf, ratio);
            if let Some(slot) = self.notes.get_mut(leaf) {
                *slot = Some((now, ratio, note));
            } else {
                return None;
            }
        }
        #[cfg(debug_assertions)]
        if let Some(Some((_, _, kept))) = self.notes.get(leaf) {
            assert_eq!(*kept, self.write(tree, leaf, ratio), "kept note went stale");
        }
        match self.notes.get(leaf) {
            Some(Some((_, _, note))) => note.as_deref(),
            _ => None,
        }
    }

    fn write(&self, tree: &QueueTree, leaf: usize, ratio: u64) -> Option<String> {
        let mut ahead: Vec<(u64, usize)> = Vec::new();
        for &(q, r) in &self.went {
            if q != leaf && r < ratio {
                match ahead.iter_mut().find(|(_, x)| *x == q) {
                    Some(a) => a.0 = a.0.min(r),
                    None => ahead.push((r, q)),
                }
            }
        }
        if ahead.is_empty() {
            return None;
        }
        ahead.sort_unstable();
        let others: Vec<String> = ahead
            .iter()
            .take(3)
            .map(|&(r, q)| format!("{} {}", tree.nodes[q].name, format_ratio(r)))
            .collect();
        Some(format!(
            "waiting for fair share: {} {} of its share, {}",
            tree.nodes[leaf].name,
            format_ratio(ratio),
            others.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueSpec;

    /// The kept note is written again once another queue places a gang, even at the same
    /// ratio (a note kept by ratio alone would miss the queue that just went ahead).
    #[test]
    fn a_note_is_written_again_after_a_placement() -> Result<(), crate::QueueError> {
        let tree = QueueTree::new(&[
            QueueSpec::new("a"),
            QueueSpec::new("b"),
            QueueSpec::new("c"),
        ])?;
        let (a, b, c) = (0, 1, 2);
        let mut ahead = Ahead::new(tree.nodes.len());
        let half = 500_000;
        assert_eq!(ahead.note(&tree, a, half), None);
        ahead.went(b, 100_000);
        let after_b = ahead.note(&tree, a, half).map(str::to_string);
        assert_eq!(after_b, ahead.write(&tree, a, half));
        assert!(after_b.is_some_and(|n| n.contains("b 0.1")));
        ahead.went(c, 200_000);
        let after_c = ahead.note(&tree, a, half).map(str::to_string);
        assert_eq!(after_c, ahead.write(&tree, a, half));
        assert!(after_c.is_some_and(|n| n.contains("c 0.2")));
        Ok(())
    }
}
