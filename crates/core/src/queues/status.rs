//! What a plan tells about queues: per-queue status and why a gang's queue makes it wait.

use super::plan::Entry;
use super::share;
use super::usage::{Usage, add};
use super::{Amounts, QueueTree};
use crate::cluster::Cluster;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What a waiting gang's queue has to do with its wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueWait {
    /// Its queue does not exist or is not a leaf.
    InvalidQueue,
    /// Its queue or an ancestor would go above its limit.
    AtLimit,
    /// Reclaiming borrowed capacity would make room, but may not be done.
    ReclaimRefused,
    /// Queues further below their fair share went first and took the room.
    FairShare,
    /// Its queue is closed to new gangs.
    Closed,
}

/// GPUs, CPU and memory, as in a Queue's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAmounts {
    pub gpus: u64,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl From<Amounts> for QueueAmounts {
    fn from(a: Amounts) -> QueueAmounts {
        QueueAmounts {
            gpus: a[0],
            cpu_millis: a[1],
            memory_bytes: a[2],
        }
    }
}

/// One queue's state as of the snapshot a plan was made over (before the plan).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub name: String,
    pub parent: Option<String>,
    pub guaranteed: QueueAmounts,
    /// The most it may hold; `u64::MAX` where it has no limit.
    pub limit: QueueAmounts,
    pub allocated: QueueAmounts,
    /// Held above its guarantee (resources it names).
    pub borrowed: QueueAmounts,
    /// Its idle guarantee that other queues are using.
    pub lent: QueueAmounts,
    pub fair_share: QueueAmounts,
    /// Allocated over fair share on the dominant resource, parts per million.
    pub share_ppm: u64,
    pub pending_gangs: u32,
    pub running_gangs: u32,
}

/// What the roots split: schedulable nodes' allocatable GPUs (healthy), CPU and memory.
pub(super) fn capacity(cluster: &Cluster) -> Amounts {
    cluster
        .nodes
        .iter()
        .filter(|n| n.present && n.info.schedulable)
        .fold([0; 3], |acc, n| {
            let a = n.info.allocatable;
            let gpus = a.gpus.min(n.healthy.count_ones());
            add(acc, [u64::from(gpus), a.cpu_millis, a.memory_bytes])
        })
}

pub(super) fn status(
    tree: &QueueTree,
    usage: &Usage,
    shares: &[Amounts],
    lines: &[VecDeque<Entry<'_>>],
    held_back: &[u32],
) -> Vec<QueueStatus> {
    let lent = usage.lent(tree);
    let mut pending = vec![0u32; tree.nodes.len()];
    for (q, line) in lines.iter().enumerate() {
        let n = u32::try_from(line.len())
            .unwrap_or(u32::MAX)
            .saturating_add(held_back.get(q).copied().unwrap_or(0));
        for c in tree.chain(q) {
            pending[c] = pending[c].saturating_add(n);
        }
    }
    tree.nodes
        .iter()
        .enumerate()
        .map(|(q, node)| QueueStatus {
            name: node.name.clone(),
            parent: node.parent.map(|p| tree.nodes[p].name.clone()),
            guaranteed: node.guaranteed.into(),
            limit: node.limit.into(),
            allocated: usage.alloc[q].into(),
            borrowed: usage.borrowed(tree, q).into(),
            lent: lent[q].into(),
            fair_share: shares[q].into(),
            share_ppm: share::ratio(&usage.alloc[q], &shares[q]),
            pending_gangs: pending[q],
            running_gangs: usage.running[q],
        })
        .collect()
}
