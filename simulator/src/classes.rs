//! Waiting jobs by class (priority, GPUs), each class in queue order, kept beside the queue
//! as jobs enter and leave it: a policy can then read how many jobs of a class are waiting,
//! and the first of them, without walking the whole queue every cycle.

use crate::engine::QueueKey;
use std::collections::{BTreeMap, BTreeSet};

/// A job's class: its priority and its GPUs (which fix its pods' sizes).
pub type Class = (i32, u32);

#[derive(Default)]
pub struct ClassIndex {
    classes: BTreeMap<Class, BTreeSet<QueueKey>>,
}

impl ClassIndex {
    pub fn insert(&mut self, class: Class, key: QueueKey) {
        self.classes.entry(class).or_default().insert(key);
    }

    pub fn remove(&mut self, class: Class, key: &QueueKey) {
        if let Some(set) = self.classes.get_mut(&class) {
            set.remove(key);
            if set.is_empty() {
                self.classes.remove(&class);
            }
        }
    }

    /// The classes of `priority` with waiting jobs, fewest GPUs first, each in queue order.
    pub fn of_priority(&self, priority: i32) -> impl Iterator<Item = (u32, &BTreeSet<QueueKey>)> {
        self.classes
            .range((priority, 0)..=(priority, u32::MAX))
            .map(|(&(_, gpus), set)| (gpus, set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    #[test]
    fn classes_of_a_priority_in_queue_order_and_emptied_classes_vanish() {
        let mut index = ClassIndex::default();
        index.insert((0, 4), (Reverse(0), 5, 2));
        index.insert((0, 4), (Reverse(0), 1, 7));
        index.insert((0, 1), (Reverse(0), 3, 3));
        index.insert((9, 1), (Reverse(9), 3, 4));
        let seen: Vec<(u32, Vec<usize>)> = index
            .of_priority(0)
            .map(|(g, s)| (g, s.iter().map(|k| k.2).collect()))
            .collect();
        assert_eq!(seen, vec![(1, vec![3]), (4, vec![7, 2])]);
        index.remove((0, 1), &(Reverse(0), 3, 3));
        index.remove((0, 1), &(Reverse(0), 3, 3));
        assert_eq!(index.of_priority(0).count(), 1);
        assert_eq!(index.of_priority(9).count(), 1);
    }
}
