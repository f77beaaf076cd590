//! Queues in `explain`: the gang's queue as the plan saw it, and the verdict when the queue is
//! why the gang waits (limit, refused reclaim, fair share, closed, not a leaf queue).

use super::explain::{Blocker, Explanation};
use crate::scene::Analysis;
use muster_core::queues::format_ratio;
use muster_core::{Preemption, QueueWait, Waiting};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    pub name: String,
    /// Whether the queue is in the tree the scheduler plans with.
    pub exists: bool,
    pub allocated_gpus: u64,
    pub guaranteed_gpus: u64,
    /// `None`: no limit.
    pub limit_gpus: Option<u64>,
    pub share: String,
}

/// The gang's queue; `None` when no queues are configured (there is nothing to say).
pub fn info(analysis: &Analysis, queue: &str) -> Option<QueueInfo> {
    if analysis.queues.tree.is_empty() {
        return None;
    }
    let status = analysis.plan.queues.iter().find(|q| q.name == queue);
    Some(match status {
        Some(q) => QueueInfo {
            name: queue.to_string(),
            exists: true,
            allocated_gpus: q.allocated.gpus,
            guaranteed_gpus: q.guaranteed.gpus,
            limit_gpus: (q.limit.gpus != u64::MAX).then_some(q.limit.gpus),
            share: format_ratio(q.share_ppm),
        },
        None => QueueInfo {
            name: queue.to_string(),
            exists: false,
            allocated_gpus: 0,
            guaranteed_gpus: 0,
            limit_gpus: None,
            share: format_ratio(0),
        },
    })
}

/// `nlp   0/8 GPUs allocated, guaranteed 4, limit 8, share 0.0`.
pub fn describe(q: &QueueInfo) -> String {
    if !q.exists {
        return format!("{}   (no such queue)", q.name);
    }
    let (held, limit) = match q.limit_gpus {
        Some(l) => (format!("{}/{l}", q.allocated_gpus), format!("limit {l}")),
        None => (q.allocated_gpus.to_string(), "no limit".to_string()),
    };
    format!(
        "{}   {held} GPUs allocated, guaranteed {}, {limit}, share {}",
        q.name, q.guaranteed_gpus, q.share
    )
}

pub fn category(q: QueueWait) -> &'static str {
    match q {
        QueueWait::InvalidQueue => "invalid-queue",
        QueueWait::AtLimit => "queue-limit",
        QueueWait::ReclaimRefused => "queue-reclaim",
        QueueWait::FairShare => "fair-share",
        QueueWait::Closed => "queue-closed",
    }
}

/// The verdict of a gang its queue holds back.
pub fn judge(analysis: &Analysis, w: &Waiting, q: QueueWait, e: &mut Explanation) {
    let cat = category(q);
    let queue = e.gang.queue.clone();
    e.verdict = format!("waiting ({cat}): {}", w.message);
    e.blockers.push(Blocker {
        kind: cat.into(),
        detail: w.message.clone(),
    });
    let unblock = match q {
        QueueWait::AtLimit => {
            // The core names the queue at its limit: the gang's own or an ancestor.
            let full = w
                .message
                .strip_prefix("queue ")
                .and_then(|m| m.split_once(" is at its limit"))
                .map_or(queue.as_str(), |(name, _)| name);
            format!(
                "raise the limit of queue {full}, or wait for gangs in it to finish and free \
                 their share"
            )
        }
        QueueWait::ReclaimRefused => format!(
            "queue {queue} is below its guarantee, but what the others borrow may not be taken \
             back (reclaimable: false): it is placed as the borrowers finish"
        ),
        QueueWait::FairShare => format!(
            "placed once queues further below their fair share are served; a larger weight on \
             queue {queue} raises its share"
        ),
        QueueWait::Closed => {
            format!("reopen queue {queue} (Volcano: state Open), or move the gang to an open queue")
        }
        QueueWait::InvalidQueue => {
            let leaves: Vec<&str> = analysis
                .plan
                .queues
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| analysis.queues.tree.is_leaf(n))
                .collect();
            format!(
                "name a leaf queue (PodGroup spec.queue, pod label or namespace annotation \
                 muster.dev/queue): {}",
                leaves.join(", ")
            )
        }
    };
    e.unblock.push(unblock);
}

/// A reclaim (the gang's queue takes back what others borrowed, whatever their priority) is
/// not a priority preemption. True when `p` is one (and explained).
pub fn reclaim(analysis: &Analysis, p: &Preemption, e: &mut Explanation) -> bool {
    if !p.reclaim {
        return false;
    }
    let queue_of = |g: &muster_core::GangKey| {
        analysis
            .snapshot
            .gangs
            .get(g)
            .map_or(muster_core::DEFAULT_QUEUE, |i| i.queue.as_str())
    };
    let mine = e.gang.queue.clone();
    e.blockers.push(Blocker {
        kind: "queue-reclaim".into(),
        detail: format!(
            "not enough free GPUs; queue {mine} is below its guarantee and takes back what \
             other queues borrowed"
        ),
    });
    let victims: Vec<String> = p
        .victims
        .iter()
        .map(|v| format!("{} (queue {}, {} GPUs)", v.gang, queue_of(&v.gang), v.gpus))
        .collect();
    e.unblock.push(format!(
        "would fit after reclaiming {}: the scheduler is evicting them",
        victims.join(", ")
    ));
    true
}

/// "being evicted: ml/big-c reclaims what queue team-b borrows" for a running victim of a
/// reclaim in this plan.
pub fn reclaimed(analysis: &Analysis, key: &muster_core::GangKey) -> Option<String> {
    let p = analysis
        .plan
        .preemptions
        .iter()
        .find(|p| p.reclaim && p.victims.iter().any(|v| v.gang == *key))?;
    let queue = analysis
        .snapshot
        .gangs
        .get(key)
        .map_or(muster_core::DEFAULT_QUEUE, |i| i.queue.as_str());
    Some(format!(
        "being evicted: {} reclaims what queue {queue} borrows",
        p.gang
    ))
}
