//! The simulated cluster: `nodes` copies of one machine fixture, optionally split into racks.

use muster_api::LinkMatrix;
use muster_core::{Cluster, NodeInfo};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum TopoError {
    #[error("unknown topology: {0}")]
    Machine(#[from] muster_api::machines::MachineError),
    #[error("the cluster needs at least one node")]
    NoNodes,
    #[error("topology {0} has no GPUs")]
    NoGpus(String),
    #[error("{racks} racks for {nodes} nodes: need 1 <= racks <= nodes")]
    Racks { racks: usize, nodes: usize },
    #[error("building the cluster: {0}")]
    Cluster(#[from] muster_core::ClusterError),
}

/// Static facts of the simulated cluster, by node index.
#[derive(Debug)]
pub struct Topo {
    pub machine: String,
    pub names: Vec<String>,
    pub index: HashMap<String, usize>,
    pub gpus_per_node: u32,
    pub matrix: LinkMatrix,
    /// Rack of each node (0 for all when there are no racks).
    pub rack: Vec<usize>,
    pub racks: usize,
}

impl Topo {
    pub fn new(machine: &str, nodes: usize, racks: Option<usize>) -> Result<Topo, TopoError> {
        let spec = muster_api::machines::resolve(machine)?;
        if nodes == 0 {
            return Err(TopoError::NoNodes);
        }
        let gpn = spec.gpus.len() as u32;
        if gpn == 0 {
            return Err(TopoError::NoGpus(machine.to_string()));
        }
        let racks = racks.unwrap_or(1);
        if racks == 0 || racks > nodes {
            return Err(TopoError::Racks { racks, nodes });
        }
        let names: Vec<String> = (0..nodes).map(|i| format!("n{i:04}")).collect();
        Ok(Topo {
            machine: spec.name.clone(),
            index: names
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, n)| (n, i))
                .collect(),
            rack: (0..nodes).map(|i| i * racks / nodes).collect(),
            names,
            gpus_per_node: gpn,
            matrix: spec.topology.clone(),
            racks,
        })
    }

    pub fn gpu_total(&self) -> u64 {
        self.names.len() as u64 * u64::from(self.gpus_per_node)
    }

    /// The core's view: one node per name; racks become NVLink domains / rack labels.
    pub fn cluster(&self) -> Result<Cluster, TopoError> {
        let spec = muster_api::machines::resolve(&self.machine)?;
        let nodes = self.names.iter().enumerate().map(|(i, name)| {
            let mut n = NodeInfo::from_machine(name, &spec);
            if self.racks > 1 {
                n.domain = Some(format!("rack-{}", self.rack[i]));
            }
            n
        });
        Ok(Cluster::new(nodes)?)
    }
}
