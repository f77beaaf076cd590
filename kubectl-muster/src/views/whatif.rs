//! What-if plans for `explain`: the scheduler's planner run on a changed copy of the cluster.

use crate::scene::{Scene, analyse_objects};
use muster_core::{GangKey, Victim};
use muster_scheduler::gang::gang_of;

/// Highest priority a what-if gives the gang: just under system-critical pods, which are
/// never victims.
const WHAT_IF_PRIORITY: i32 = 999_999_999;

/// Whom the gang would have to preempt if its priority allowed any preemption at all, and on
/// which nodes it would then run. `None`: not even preempting every evictable gang makes room.
pub fn victims_if_top_priority(
    scene: &Scene,
    gang: &GangKey,
) -> Option<(Vec<Victim>, Vec<String>)> {
    let mut objects = scene.objects();
    for p in &mut objects.pods {
        if gang_of(p).key == *gang
            && let Some(spec) = p.spec.as_mut()
        {
            spec.priority = Some(WHAT_IF_PRIORITY);
            spec.preemption_policy = None;
        }
    }
    let a = analyse_objects(scene, objects);
    if let Some(p) = a.plan.preemptions.iter().find(|p| p.gang == *gang) {
        return Some((p.victims.clone(), nodes_of(&p.assignments)));
    }
    // Placed outright: other pending gangs of higher priority were in the way, none running.
    a.plan
        .placement_for(gang)
        .map(|p| (Vec::new(), nodes_of(&p.assignments)))
}

/// Whether the gang would be placed (or could preempt its way in) if every GPU were healthy,
/// and the unhealthy GPUs as `node/index (reason)`.
pub fn fits_if_all_healthy(scene: &Scene, gang: &GangKey) -> Option<Vec<String>> {
    let mut unhealthy = Vec::new();
    let mut objects = scene.objects();
    for gn in &mut objects.gpu_nodes {
        let node = gn.metadata.name.clone().unwrap_or_default();
        for g in &mut gn.spec.gpus {
            if !g.healthy {
                unhealthy.push(format!(
                    "{node}/{} ({})",
                    g.index,
                    g.unhealthy_reason.as_deref().unwrap_or("unhealthy")
                ));
                g.healthy = true;
                g.unhealthy_reason = None;
            }
        }
        gn.spec.healthy_count = gn.spec.gpu_count;
    }
    if unhealthy.is_empty() {
        return None;
    }
    let a = analyse_objects(scene, objects);
    let fits =
        a.plan.placement_for(gang).is_some() || a.plan.preemptions.iter().any(|p| p.gang == *gang);
    fits.then_some(unhealthy)
}

fn nodes_of(assignments: &[muster_core::Assignment]) -> Vec<String> {
    let mut nodes: Vec<String> = assignments.iter().map(|a| a.node.to_string()).collect();
    nodes.sort();
    nodes.dedup();
    nodes
}
