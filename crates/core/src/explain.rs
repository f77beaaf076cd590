//! Human-readable reasons for every gang that waits.

use crate::placement::Shortfall;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// What blocks a gang, as a category users can filter on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WaitReason {
    /// Fewer members exist than the gang's minimum.
    MissingMembers,
    /// No node passes the members' selector, taints or schedulability.
    NoMatchingNode,
    /// Even an empty cluster could not hold it (a member or the gang is too big).
    TooLarge,
    /// Not enough free capacity right now.
    Capacity,
    /// Enough GPUs are free in total, but not in the shape the gang needs.
    Fragmentation,
    /// Waiting for preempted victims to finish terminating.
    WaitingForVictims,
}

impl WaitReason {
    /// Preemption cannot help (the extender reports such nodes as unresolvable).
    pub fn unresolvable(self) -> bool {
        matches!(
            self,
            WaitReason::MissingMembers | WaitReason::NoMatchingNode | WaitReason::TooLarge
        )
    }
}

/// "waiting for N more members: H of the M required exist" (also the extender's fast answer).
pub fn missing_members(have: u32, min: u32) -> String {
    let missing = min.saturating_sub(have);
    let s = if missing == 1 { "" } else { "s" };
    format!("waiting for {missing} more member{s}: {have} of the {min} required exist")
}

/// Classifies a shortfall and writes its message.
pub(crate) fn shortfall(sf: &Shortfall) -> (WaitReason, String) {
    let g = sf.resources.gpus;
    // Long queues write this once per gang skipped after capacity changed: one buffer, no
    // intermediate strings, in the common case (writing to a String cannot fail).
    let each = |out: &mut String| {
        let _ = if g > 0 {
            write!(
                out,
                "{} pod{} x {g} GPU{}",
                sf.pods,
                plural(sf.pods),
                plural(g)
            )
        } else {
            write!(
                out,
                "{} pod{} ({} mCPU)",
                sf.pods,
                plural(sf.pods),
                sf.resources.cpu_millis
            )
        };
    };
    if sf.matching_nodes == 0 {
        let mut needs = String::new();
        each(&mut needs);
        let mut why = Vec::new();
        if sf.rejected_selector > 0 {
            let sel: Vec<String> = sf.selector.iter().map(ToString::to_string).collect();
            why.push(format!(
                "{} fail its node selector ({})",
                sf.rejected_selector,
                sel.join(", ")
            ));
        }
        if sf.rejected_taints > 0 {
            why.push(format!(
                "{} have taints it does not tolerate",
                sf.rejected_taints
            ));
        }
        if sf.rejected_unschedulable > 0 {
            why.push(format!(
                "{} are not ready or cordoned",
                sf.rejected_unschedulable
            ));
        }
        let detail = if why.is_empty() {
            "the cluster has no nodes".to_string()
        } else {
            format!("of {} nodes, {}", sf.nodes_total, why.join("; "))
        };
        return (
            WaitReason::NoMatchingNode,
            format!("needs {needs}, but no node can run it: {detail}"),
        );
    }
    if g > sf.largest_node_gpus {
        return (
            WaitReason::TooLarge,
            format!(
                "a member needs {g} GPUs but the largest matching node has {}",
                sf.largest_node_gpus
            ),
        );
    }
    let needed = u64::from(sf.pods) * u64::from(g);
    if needed > sf.matching_gpus_total {
        let mut needs = String::new();
        each(&mut needs);
        return (
            WaitReason::TooLarge,
            format!(
                "needs {needed} GPUs ({needs}); the {} matching nodes have {} healthy GPUs in all",
                sf.matching_nodes, sf.matching_gpus_total
            ),
        );
    }
    let mut msg = String::with_capacity(128);
    msg.push_str("needs ");
    each(&mut msg);
    let _ = if g > 0 {
        write!(
            msg,
            ": {} node{} with {g} free GPU{}, room for {} of {} now",
            sf.nodes_with_room,
            plural_usize(sf.nodes_with_room),
            plural(g),
            sf.fit_now,
            sf.pods
        )
    } else {
        write!(msg, ": room for {} now", sf.fit_now)
    };
    let reason = if g > 0 && sf.free_gpus >= needed {
        let _ = write!(
            msg,
            "; {} GPUs are free but fragmented across nodes",
            sf.free_gpus
        );
        WaitReason::Fragmentation
    } else {
        WaitReason::Capacity
    };
    if sf.reserved_nodes_skipped > 0 {
        let _ = write!(
            msg,
            "; {} node{} held for an older gang",
            sf.reserved_nodes_skipped,
            plural_usize(sf.reserved_nodes_skipped)
        );
    }
    (reason, msg)
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn plural_usize(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
