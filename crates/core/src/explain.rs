//! Human-readable reasons for every gang that waits.

use crate::placement::Shortfall;
use serde::{Deserialize, Serialize};

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
    // intermediate strings, no formatting machinery in the common case.
    let each = |out: &mut String| {
        push_num(out, sf.pods.into());
        out.push_str(" pod");
        out.push_str(plural(sf.pods));
        if g > 0 {
            out.push_str(" x ");
            push_num(out, g.into());
            out.push_str(" GPU");
            out.push_str(plural(g));
        } else {
            out.push_str(" (");
            push_num(out, sf.resources.cpu_millis);
            out.push_str(" mCPU)");
        }
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
    if g > 0 {
        msg.push_str(": ");
        push_num(&mut msg, sf.nodes_with_room as u64);
        msg.push_str(" node");
        msg.push_str(plural_usize(sf.nodes_with_room));
        msg.push_str(" with ");
        push_num(&mut msg, g.into());
        msg.push_str(" free GPU");
        msg.push_str(plural(g));
        msg.push_str(", room for ");
        push_num(&mut msg, sf.fit_now.into());
        msg.push_str(" of ");
        push_num(&mut msg, sf.pods.into());
        msg.push_str(" now");
    } else {
        msg.push_str(": room for ");
        push_num(&mut msg, sf.fit_now.into());
        msg.push_str(" now");
    }
    let reason = if g > 0 && sf.free_gpus >= needed {
        msg.push_str("; ");
        push_num(&mut msg, sf.free_gpus);
        msg.push_str(" GPUs are free but fragmented across nodes");
        WaitReason::Fragmentation
    } else {
        WaitReason::Capacity
    };
    if sf.reserved_nodes_skipped > 0 {
        msg.push_str("; ");
        push_num(&mut msg, sf.reserved_nodes_skipped as u64);
        msg.push_str(" node");
        msg.push_str(plural_usize(sf.reserved_nodes_skipped));
        msg.push_str(" held for an older gang");
    }
    (reason, msg)
}

/// Appends `n` in decimal. A long queue's messages are written thousands of times a round,
/// and `write!` cost several times as much as the rest of writing one.
fn push_num(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn plural_usize(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 4_096, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::from("x");
            super::push_num(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}
