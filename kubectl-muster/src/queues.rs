//! Queues as the scheduler sees them: the queue objects read into the core's tree by the
//! scheduler's own code (each gang's queue is resolved by the scheduler's snapshot).

use crate::scene::Scene;
use muster_scheduler::queues::QueueBuild;

/// The tree the scheduler would plan with, read by the scheduler's own code.
pub fn build(scene: &Scene) -> QueueBuild {
    muster_scheduler::queues::from_objects(&scene.queues, &scene.volcano_queues)
}
