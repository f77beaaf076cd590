//! The GPUs this plugin advertises, and their health, in one `watch` channel: every
//! `ListAndWatch` stream subscribes and resends the whole list on each change (the protocol sends
//! full lists, not deltas).

use crate::proto;
use muster_api::LinkMatrix;
use muster_gpu_inventory::{Inventory, InventoryError};
use std::sync::Arc;
use tokio::sync::watch;

/// One advertised GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    pub index: u32,
    /// Device ID towards the kubelet.
    pub uuid: String,
    pub numa_node: Option<u32>,
    pub healthy: bool,
    /// Why it is unhealthy.
    pub reason: Option<String>,
}

/// The node's GPUs (by index) and their links.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceList {
    pub gpus: Vec<Gpu>,
    pub links: LinkMatrix,
}

impl DeviceList {
    /// From an open inventory: identity, NUMA node and health at this moment. GPUs without a
    /// UUID (lost before ever seen) are left out: the kubelet could not name them anyway.
    pub fn from_inventory(inventory: &Inventory) -> Result<DeviceList, InventoryError> {
        let snapshot = inventory.snapshot()?;
        let gpus = snapshot
            .gpus
            .iter()
            .filter(|g| !g.uuid.is_empty())
            .map(|g| Gpu {
                index: g.index,
                uuid: g.uuid.clone(),
                numa_node: g.numa_node,
                healthy: g.health.is_healthy(),
                reason: match &g.health {
                    muster_gpu_inventory::GpuHealth::Healthy => None,
                    muster_gpu_inventory::GpuHealth::Unhealthy { reason } => Some(reason.clone()),
                },
            })
            .collect();
        Ok(DeviceList {
            gpus,
            links: snapshot.links,
        })
    }

    /// From a machine fixture (all healthy), for tools and tests that run without NVML.
    pub fn from_machine(machine: &muster_api::machines::MachineSpec) -> DeviceList {
        DeviceList {
            gpus: machine
                .gpus
                .iter()
                .map(|g| Gpu {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    numa_node: Some(g.numa_node),
                    healthy: true,
                    reason: None,
                })
                .collect(),
            links: machine.topology.clone(),
        }
    }

    pub fn by_uuid(&self, uuid: &str) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.uuid == uuid)
    }

    /// Marks one GPU; returns whether anything changed (so unchanged lists are not resent).
    pub fn set_health(&mut self, uuid: &str, healthy: bool, reason: Option<String>) -> bool {
        match self.gpus.iter_mut().find(|g| g.uuid == uuid) {
            Some(g) if g.healthy != healthy => {
                g.healthy = healthy;
                g.reason = if healthy { None } else { reason };
                true
            }
            _ => false,
        }
    }

    pub fn counts(&self) -> (usize, usize) {
        let healthy = self.gpus.iter().filter(|g| g.healthy).count();
        (healthy, self.gpus.len() - healthy)
    }

    /// The list as `ListAndWatch` sends it.
    pub fn to_response(&self) -> proto::ListAndWatchResponse {
        proto::ListAndWatchResponse {
            devices: self
                .gpus
                .iter()
                .map(|g| proto::Device {
                    id: g.uuid.clone(),
                    health: if g.healthy {
                        proto::HEALTHY
                    } else {
                        proto::UNHEALTHY
                    }
                    .to_string(),
                    topology: g.numa_node.map(|n| proto::TopologyInfo {
                        nodes: vec![proto::NumaNode { id: i64::from(n) }],
                    }),
                })
                .collect(),
        }
    }
}

/// Shared, observable device list.
#[derive(Clone, Debug)]
pub struct Devices {
    tx: Arc<watch::Sender<Arc<DeviceList>>>,
}

impl Devices {
    pub fn new(list: DeviceList) -> Devices {
        let (tx, _) = watch::channel(Arc::new(list));
        Devices { tx: Arc::new(tx) }
    }

    pub fn current(&self) -> Arc<DeviceList> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<DeviceList>> {
        self.tx.subscribe()
    }

    /// Applies a health change; subscribers are woken only if it changed something.
    pub fn set_health(&self, uuid: &str, healthy: bool, reason: Option<String>) -> bool {
        self.tx.send_if_modified(|list| {
            let mut next = (**list).clone();
            let changed = next.set_health(uuid, healthy, reason);
            if changed {
                *list = Arc::new(next);
            }
            changed
        })
    }
}
