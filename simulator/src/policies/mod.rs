//! Scheduling policies compared on the same workload: Muster's core and two baselines.

pub mod fifo;
pub mod greedy;
pub mod muster;

use crate::engine::{Sim, SimError};

/// One scheduler: looks at the queue and cluster after every batch of events and places work.
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// Whether the queue is ordered by priority before arrival.
    fn priority_aware(&self) -> bool;
    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError>;
}

/// Names accepted by `--policies`.
pub const ALL: [&str; 3] = ["muster", "fifo", "greedy"];

pub fn by_name(name: &str, config: &muster::MusterConfig) -> Option<Box<dyn Policy>> {
    match name {
        "muster" => Some(Box::new(muster::Muster::new(config.clone()))),
        "fifo" => Some(Box::new(fifo::Fifo)),
        "greedy" => Some(Box::new(greedy::Greedy)),
        _ => None,
    }
}

/// Lowest-index free GPUs of `node` not in `taken`: the topology-blind baselines' choice.
pub(crate) fn first_gpus(sim: &Sim<'_>, node: usize, k: u32, taken: &[u32]) -> Option<Vec<u32>> {
    let free = sim.cluster.free_gpus(&sim.topo.names[node])?;
    let gpus: Vec<u32> = free
        .into_iter()
        .map(|g| g as u32)
        .filter(|g| !taken.contains(g))
        .take(k as usize)
        .collect();
    (gpus.len() == k as usize).then_some(gpus)
}
