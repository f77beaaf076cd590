//! Scheduling policies compared on the same workload: Muster's core and two baselines.

pub mod fifo;
pub mod greedy;
mod hopeless;
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
pub const ALL: [&str; 5] = [
    "muster-queues",
    "muster-hard-quota",
    "muster",
    "fifo",
    "greedy",
];

/// Policies that need queues (`--queues` or `--queue-file`).
pub const QUEUE_POLICIES: [&str; 2] = ["muster-queues", "muster-hard-quota"];

/// The policy called `name`; `None` for an unknown name, or a queue policy without queues.
pub fn by_name(name: &str, config: &muster::MusterConfig) -> Option<Box<dyn Policy>> {
    let trees = config.queues.as_ref();
    match name {
        "muster-queues" => Some(Box::new(muster::Muster::with_queues(
            "muster-queues",
            config.clone(),
            trees?.borrowing.clone(),
        ))),
        "muster-hard-quota" => Some(Box::new(muster::Muster::with_queues(
            "muster-hard-quota",
            config.clone(),
            trees?.hard.clone(),
        ))),
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
