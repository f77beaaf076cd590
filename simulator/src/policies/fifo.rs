//! Baseline: FIFO all-or-nothing. Strict arrival order (priorities ignored, no preemption):
//! the head job starts when all its pods fit, and nothing behind it may pass (head-of-line
//! blocking, no backfill). No topology awareness: each pod takes the first node by index with
//! enough free GPUs, and that node's lowest-index free GPUs.

use super::{Policy, first_fit, start_on};
use crate::engine::{Sim, SimError};

pub struct Fifo;

impl Policy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn priority_aware(&self) -> bool {
        false
    }

    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError> {
        while let Some(&(_, _, job)) = sim.queue.first() {
            let Some(nodes) = first_fit(&sim.free, &sim.rt[job].pod_sizes) else {
                break;
            };
            if !start_on(sim, job, &nodes)? {
                break;
            }
        }
        Ok(())
    }
}
