//! Scheduling policies compared on the same workload: Muster's core and four baselines
//! (FIFO, per-pod greedy, EASY backfilling, Tiresias' least attained service).

pub mod easy;
pub mod fifo;
mod gang_cache;
pub mod greedy;
mod hopeless;
pub mod muster;
pub mod tiresias;

use crate::engine::{Sim, SimError};

/// One scheduler: looks at the queue and cluster after every batch of events and places work.
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// Whether the queue is ordered by priority before arrival.
    fn priority_aware(&self) -> bool;
    fn cycle(&mut self, sim: &mut Sim<'_>) -> Result<(), SimError>;
}

/// Names accepted by `--policies`.
pub const ALL: [&str; 7] = [
    "muster-queues",
    "muster-hard-quota",
    "muster",
    "easy",
    "tiresias",
    "fifo",
    "greedy",
];

/// The policies of a run without queues, when `--policies` does not say.
pub const DEFAULT: [&str; 5] = ["muster", "easy", "tiresias", "fifo", "greedy"];

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
        "easy" => Some(Box::new(easy::Easy)),
        "tiresias" => Some(Box::new(tiresias::Tiresias::default())),
        "fifo" => Some(Box::new(fifo::Fifo)),
        "greedy" => Some(Box::new(greedy::Greedy)),
        _ => None,
    }
}

/// First-fit nodes for pods of `sizes` on nodes with `free` GPUs (a node per pod, in pod
/// order), or `None` if they do not all fit.
pub(crate) fn first_fit(free: &[u32], sizes: &[u32]) -> Option<Vec<usize>> {
    let mut free = free.to_vec();
    let mut nodes = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let node = free.iter().position(|&f| f >= size)?;
        free[node] -= size;
        nodes.push(node);
    }
    Some(nodes)
}

/// Places every pod of a waiting `job` on `nodes` (one per pod, from [`first_fit`] over free
/// GPUs), taking each node's lowest-index free GPUs, and starts it. False, with nothing placed,
/// if a node lacks the GPUs.
pub(crate) fn start_on(sim: &mut Sim<'_>, job: usize, nodes: &[usize]) -> Result<bool, SimError> {
    let sizes = sim.rt[job].pod_sizes.clone();
    let mut plan: Vec<(usize, usize, Vec<u32>)> = Vec::with_capacity(nodes.len());
    for (pod, (&size, &node)) in sizes.iter().zip(nodes).enumerate() {
        let taken: Vec<u32> = plan
            .iter()
            .filter(|(_, n, _)| *n == node)
            .flat_map(|(_, _, g)| g.iter().copied())
            .collect();
        let Some(gpus) = first_gpus(sim, node, size, &taken) else {
            return Ok(false);
        };
        plan.push((pod, node, gpus));
    }
    for (pod, node, gpus) in plan {
        sim.place_pod(job, pod, node, gpus)?;
    }
    sim.start(job);
    Ok(true)
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
