//! The verdict of `explain`: blockers and what would unblock, from the fresh plan and what-ifs.

use super::explain::{Blocker, Explanation, category};
use super::whatif;
use crate::render::list;
use crate::scene::{Analysis, Scene};
use muster_core::{Assignment, GangKey, WaitReason};

fn nodes(assignments: &[Assignment]) -> Vec<String> {
    let mut n: Vec<String> = assignments.iter().map(|a| a.node.to_string()).collect();
    n.sort();
    n.dedup();
    n
}

fn block(e: &mut Explanation, kind: &str, detail: impl Into<String>) {
    e.blockers.push(Blocker {
        kind: kind.into(),
        detail: detail.into(),
    });
}

fn missing_members(e: &mut Explanation) {
    let (have, min) = (e.gang.members, e.gang.min_member);
    let missing = min.saturating_sub(have);
    block(
        e,
        "members",
        format!("{have} of the {min} required members exist"),
    );
    e.unblock.push(format!(
        "needs {missing} more member{} (the gang starts only when {min} exist)",
        if missing == 1 { "" } else { "s" }
    ));
}

pub fn judge(scene: &Scene, analysis: &Analysis, key: &GangKey, e: &mut Explanation) {
    if let Some(p) = analysis
        .snapshot
        .gangs
        .get(key)
        .and_then(|i| i.problem.clone())
    {
        e.verdict = format!("cannot be planned: {p}");
        block(e, "invalid", p);
        e.unblock
            .push("fix the gang's definition; the scheduler retries on every change".into());
        return;
    }
    let phase = e.gang.phase.clone();
    if matches!(
        phase.as_str(),
        "Running" | "Scheduled" | "Succeeded" | "Failed"
    ) {
        e.verdict = format!(
            "{phase}: {} of {} members running (min {}); nothing blocks it",
            e.gang.ready, e.gang.members, e.gang.min_member
        );
        e.placement = e.gang.nodes.clone();
        e.placement_kind = "running".into();
        if let Some(note) = super::explain_queue::reclaimed(analysis, key) {
            e.verdict = format!("{}; {note}", e.verdict);
        }
        return;
    }
    if let Some(p) = analysis.plan.placement_for(key) {
        e.verdict = "fits now: the scheduler places it at its next attempt".into();
        e.placement = nodes(&p.assignments);
        e.placement_kind = "now".into();
        return;
    }
    if let Some(p) = analysis.plan.preemptions.iter().find(|p| p.gang == *key) {
        e.verdict = format!("preempting: {}", p.message);
        e.placement = nodes(&p.assignments);
        if super::explain_queue::reclaim(analysis, p, e) {
            return;
        }
        block(
            e,
            "capacity",
            "not enough free GPUs; lower-priority gangs are being evicted",
        );
        let victims: Vec<String> = p
            .victims
            .iter()
            .map(|v| format!("{} (priority {})", v.gang, v.priority))
            .collect();
        e.unblock.push(format!(
            "would fit after preempting {}: the scheduler is evicting them",
            victims.join(", ")
        ));
        return;
    }
    let Some(w) = analysis.plan.waiting_for(key) else {
        if e.gang.members < e.gang.min_member {
            e.verdict = format!(
                "waiting (members): {} of the {} required members exist",
                e.gang.members, e.gang.min_member
            );
            missing_members(e);
        } else {
            e.verdict = "no member is waiting to be scheduled".into();
        }
        return;
    };
    if let Some(q) = w.queue {
        super::explain_queue::judge(analysis, w, q, e);
        return;
    }
    let cat = category(w.reason);
    e.verdict = format!("waiting ({cat}): {}", w.message);
    match w.reason {
        WaitReason::MissingMembers => missing_members(e),
        WaitReason::WaitingForVictims => {
            block(e, cat, "preempted pods are still terminating");
            e.unblock
                .push("placed as soon as the evicted pods are gone".into());
        }
        WaitReason::NoMatchingNode => {
            block(e, cat, w.message.clone());
            e.unblock.push(
                "relax its node selector or tolerations, or make matching nodes ready".into(),
            );
        }
        WaitReason::TooLarge | WaitReason::Capacity | WaitReason::Fragmentation => {
            block(e, cat, w.message.clone());
            if let Some(bad) = whatif::fits_if_all_healthy(scene, key) {
                let n = bad.len();
                block(
                    e,
                    "unhealthy-gpus",
                    format!(
                        "{n} unhealthy GPU{}: {}; it would fit if they were healthy",
                        if n == 1 { "" } else { "s" },
                        list(&bad, 4)
                    ),
                );
                e.unblock.push(format!(
                    "would fit once {} {} healthy again or replaced",
                    list(&bad, 4),
                    if n == 1 { "is" } else { "are" }
                ));
            }
            if w.reason != WaitReason::TooLarge {
                priority(scene, key, e, &w.message);
            }
            if !w.reserved_nodes.is_empty() {
                e.unblock.push(format!(
                    "nodes {} are held for it so it cannot starve",
                    list(&w.reserved_nodes, 6)
                ));
            }
        }
    }
}

/// Who holds the GPUs it needs, and whether its priority lets it take them.
fn priority(scene: &Scene, key: &GangKey, e: &mut Explanation, message: &str) {
    let mine = e.gang.priority;
    match whatif::victims_if_top_priority(scene, key) {
        Some((victims, at)) if !victims.is_empty() => {
            e.placement = at;
            e.placement_kind = "if-preempting".into();
            let names: Vec<String> = victims
                .iter()
                .map(|v| format!("{} (priority {})", v.gang, v.priority))
                .collect();
            let higher: Vec<String> = victims
                .iter()
                .filter(|v| v.priority >= mine)
                .map(|v| format!("{} (priority {})", v.gang, v.priority))
                .collect();
            if higher.is_empty() {
                let never = message.contains("preemption policy is Never");
                e.unblock.push(format!(
                    "would fit after preempting {}{}",
                    names.join(", "),
                    if never {
                        ", but its preemption policy is Never"
                    } else {
                        ""
                    }
                ));
            } else {
                block(
                    e,
                    "priority",
                    format!(
                        "the GPUs it needs are held by gangs of equal or higher priority than its {mine}: {}",
                        higher.join(", ")
                    ),
                );
                e.unblock.push(format!(
                    "would fit after preempting {}, which its priority {mine} does not allow: \
                     once they finish, or with a higher priority class",
                    names.join(", ")
                ));
            }
        }
        Some((_, at)) => {
            e.placement = at;
            e.placement_kind = "if-first-in-line".into();
            e.unblock
                .push("would fit once the higher-priority gangs ahead of it are placed".into());
        }
        // With queues the what-if preempts only inside the gang's queue, as the planner does.
        None => e.unblock.push(match &e.queue {
            Some(q) => format!(
                "would not fit even after preempting every preemptible gang of queue {}: the \
                 GPUs it needs are held by other queues (priority preemption stays inside a \
                 queue; other queues give back only what they borrow, to a queue below its \
                 guarantee)",
                q.name
            ),
            None => "would not fit even after preempting every preemptible gang: it needs more \
                     GPUs than the cluster has"
                .into(),
        }),
    }
}
