//! `explain` as text: the gang, what the scheduler recorded, and the fresh analysis.

use super::explain::Explanation;
use super::jobs::phase_color;
use crate::render::{Color, Style, list, to_value};

const LABEL: usize = 16;

fn line(out: &mut String, style: &Style, label: &str, value: &str) {
    let pad = " ".repeat(LABEL.saturating_sub(label.chars().count() + 2) + 1);
    out.push_str(&format!(
        "  {}{pad}{value}\n",
        style.paint(label, Some(Color::Bold))
    ));
}

fn lines(out: &mut String, style: &Style, label: &str, values: &[String], color: Option<Color>) {
    for (i, v) in values.iter().enumerate() {
        let l = if i == 0 { label } else { "" };
        line(out, style, l, &style.paint(v, color));
    }
}

fn heading(out: &mut String, style: &Style, text: &str) {
    out.push_str(&style.paint(text, Some(Color::Bold)));
    out.push('\n');
}

pub fn text(e: &Explanation, style: &Style) -> String {
    let g = &e.gang;
    let mut out = String::new();
    heading(&mut out, style, &format!("Gang {}/{}", g.namespace, g.name));
    line(&mut out, style, "Kind:", &g.kind);
    if let Some(owner) = &g.owner {
        line(&mut out, style, "Owner:", owner);
    }
    match &e.queue {
        Some(q) => {
            line(
                &mut out,
                style,
                "Queue:",
                &super::explain_queue::describe(q),
            );
            line(&mut out, style, "Priority:", &g.priority.to_string());
        }
        // No queues configured: the name alone, as before queues existed.
        None => line(
            &mut out,
            style,
            "Queue:",
            &format!("{}   Priority: {}", g.queue, g.priority),
        ),
    }
    line(
        &mut out,
        style,
        "Members:",
        &format!(
            "{} ready / {} min / {} total   GPUs allocated/requested: {}/{}",
            g.ready, g.min_member, g.members, g.gpus_allocated, g.gpus_requested
        ),
    );
    let waited = g
        .waiting_seconds
        .map(|s| format!(", waiting {}", style.age(s)))
        .unwrap_or_default();
    line(
        &mut out,
        style,
        "Phase:",
        &format!("{}{waited}", style.paint(&g.phase, phase_color(&g.phase))),
    );
    line(&mut out, style, "Nodes:", &list(&g.nodes, 8));
    if let Some(p) = &e.preempted {
        let when = if style.mask_times {
            p.split(" at ").next().unwrap_or(p).to_string() + " at <t>"
        } else {
            p.clone()
        };
        line(
            &mut out,
            style,
            "Preempted:",
            &style.paint(&when, Some(Color::Red)),
        );
    }
    out.push('\n');

    heading(&mut out, style, "Scheduler (recorded)");
    let r = &e.recorded;
    if r.pod_group_phase.is_some() || r.pod_group_message.is_some() {
        let attempt = r
            .last_attempt_seconds_ago
            .map(|s| format!("   (last attempt {} ago)", style.age(s)))
            .unwrap_or_default();
        line(
            &mut out,
            style,
            "PodGroup:",
            &format!(
                "{}: {}{attempt}",
                r.pod_group_phase.as_deref().unwrap_or("-"),
                r.pod_group_message.as_deref().unwrap_or("-")
            ),
        );
    }
    if let Some(p) = &r.pod {
        line(&mut out, style, "Pod:", p);
        line(
            &mut out,
            style,
            "PodScheduled:",
            r.pod_scheduled.as_deref().unwrap_or("- (not tried yet)"),
        );
    }
    if r.events.is_empty() {
        line(&mut out, style, "Events:", "none");
    } else {
        lines(&mut out, style, "Events:", &r.events, None);
    }
    out.push('\n');

    heading(&mut out, style, "Analysis (the scheduler's planner, now)");
    line(&mut out, style, "Needs:", &e.needs);
    line(&mut out, style, "Verdict:", &e.verdict);
    if !e.placement.is_empty() {
        let label = match e.placement_kind.as_str() {
            "running" => "Runs on:",
            "now" => "Placed on:",
            _ => "Would need:",
        };
        line(&mut out, style, label, &list(&e.placement, 8));
    }
    let blockers: Vec<String> = e
        .blockers
        .iter()
        .map(|b| format!("{}: {}", b.kind, b.detail))
        .collect();
    if blockers.is_empty() {
        line(&mut out, style, "Blocked by:", "nothing");
    } else {
        lines(&mut out, style, "Blocked by:", &blockers, Some(Color::Red));
    }
    if !e.unblock.is_empty() {
        lines(
            &mut out,
            style,
            "Would unblock:",
            &e.unblock,
            Some(Color::Green),
        );
    }
    out
}

pub fn data(e: &Explanation) -> serde_json::Value {
    let mut v = to_value(e);
    if let Some(m) = v.as_object_mut() {
        m.insert("kind".into(), "GangExplanation".into());
    }
    v
}
