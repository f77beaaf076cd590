//! What each queue holds: allocated amounts from the cluster's running gangs and their queue,
//! and what is borrowed and lent.

use super::{Amounts, QueueTree, RESOURCES};
use crate::cluster::{Cluster, RunningGang};
use crate::model::{GangKey, PodRequest};
use std::collections::BTreeMap;

/// A running gang's holdings.
pub(crate) fn of_gang(g: &RunningGang) -> Amounts {
    [u64::from(g.gpus), g.cpu_millis, g.memory_bytes]
}

/// What members ask for, summed.
pub(crate) fn of_members(members: &[&PodRequest]) -> Amounts {
    members.iter().fold([0; 3], |acc, m| {
        let r = m.resources;
        add(acc, [u64::from(r.gpus), r.cpu_millis, r.memory_bytes])
    })
}

pub(crate) fn add(a: Amounts, b: Amounts) -> Amounts {
    [
        a[0].saturating_add(b[0]),
        a[1].saturating_add(b[1]),
        a[2].saturating_add(b[2]),
    ]
}

pub(crate) fn sub(a: Amounts, b: Amounts) -> Amounts {
    [
        a[0].saturating_sub(b[0]),
        a[1].saturating_sub(b[1]),
        a[2].saturating_sub(b[2]),
    ]
}

/// Per queue (tree index): what it holds, and its running gangs' queue.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    /// Allocated per queue, a parent's including its descendants'.
    pub alloc: Vec<Amounts>,
    /// Running gangs per queue (a parent's including its descendants').
    pub running: Vec<u32>,
    /// The queue of every running gang whose queue is in the tree.
    pub queue_of: BTreeMap<GangKey, usize>,
}

impl Usage {
    pub fn of(tree: &QueueTree, cluster: &Cluster) -> Usage {
        let n = tree.nodes.len();
        let mut u = Usage {
            alloc: vec![[0; 3]; n],
            running: vec![0; n],
            queue_of: BTreeMap::new(),
        };
        let mut queue_of = Vec::with_capacity(cluster.gangs.len());
        for (key, g) in &cluster.gangs {
            let Some(q) = tree.index(cluster.gang_queue(key)) else {
                continue;
            };
            queue_of.push((key.clone(), q));
            u.charge(tree, q, of_gang(g));
            for c in tree.chain(q) {
                u.running[c] = u.running[c].saturating_add(1);
            }
        }
        // In key order already: the map is built in one pass, not by an insert per gang.
        u.queue_of = queue_of.into_iter().collect();
        u
    }

    /// Adds `amounts` to the queue and its ancestors.
    pub fn charge(&mut self, tree: &QueueTree, q: usize, amounts: Amounts) {
        for c in tree.chain(q) {
            self.alloc[c] = add(self.alloc[c], amounts);
        }
    }

    /// The first queue on `q`'s chain that `amounts` more would take above its limit:
    /// (queue, resource index).
    pub fn over_limit(
        &self,
        tree: &QueueTree,
        q: usize,
        amounts: Amounts,
    ) -> Option<(usize, usize)> {
        tree.chain(q).find_map(|c| {
            let after = add(self.alloc[c], amounts);
            RESOURCES
                .iter()
                .map(|r| r.index())
                .find(|&k| after[k] > tree.nodes[c].limit[k])
                .map(|k| (c, k))
        })
    }

    /// Borrowed per queue: held above its guarantee, on the resources it names.
    pub fn borrowed(&self, tree: &QueueTree, q: usize) -> Amounts {
        let node = &tree.nodes[q];
        let mut b = sub(self.alloc[q], node.guaranteed);
        for (v, named) in b.iter_mut().zip(node.named) {
            if !named {
                *v = 0;
            }
        }
        b
    }

    /// Lent per queue: its idle guarantee, in the proportion that leaves' idle guarantees are
    /// borrowed by other leaves (capacity is pooled: who lends to whom is not tracked). A
    /// parent lends what its children lend.
    pub fn lent(&self, tree: &QueueTree) -> Vec<Amounts> {
        let n = tree.nodes.len();
        let leaves: Vec<usize> = (0..n)
            .filter(|&i| tree.nodes[i].children.is_empty())
            .collect();
        let idle = |q: usize| sub(tree.nodes[q].guaranteed, self.alloc[q]);
        let total_idle = leaves.iter().fold([0; 3], |a, &q| add(a, idle(q)));
        let total_borrowed = leaves
            .iter()
            .fold([0; 3], |a, &q| add(a, self.borrowed(tree, q)));
        let mut lent = vec![[0u64; 3]; n];
        for &q in &leaves {
            let i = idle(q);
            for k in 0..3 {
                let lendable = total_borrowed[k].min(total_idle[k]);
                let part = u128::from(i[k]) * u128::from(lendable);
                lent[q][k] = part
                    .checked_div(u128::from(total_idle[k]))
                    .map_or(0, |v| u64::try_from(v).unwrap_or(u64::MAX));
            }
        }
        for q in tree.postorder() {
            if let Some(p) = tree.nodes[q].parent {
                lent[p] = add(lent[p], lent[q]);
            }
        }
        lent
    }
}

/// Which gangs run, for a quick "no" on pending gangs: most run no member, and a lookup in
/// the cluster's map compares key strings down the tree. A hash match still looks up the map.
pub(crate) struct RunningKeys(Vec<u64>);

impl RunningKeys {
    pub fn of(cluster: &Cluster) -> RunningKeys {
        let mut hashes: Vec<u64> = cluster.gangs.keys().map(key_hash).collect();
        hashes.sort_unstable();
        RunningKeys(hashes)
    }

    /// The live members of `key`'s gang in the cluster.
    pub fn live(&self, cluster: &Cluster, key: &GangKey) -> u32 {
        if self.0.binary_search(&key_hash(key)).is_err() {
            return 0;
        }
        cluster.gangs.get(key).map_or(0, |g| g.live)
    }
}

/// FNV-1a over the key's namespace and name (a byte no UTF-8 text has between them).
fn key_hash(key: &GangKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = key.namespace.bytes().chain([0xff]).chain(key.name.bytes());
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
