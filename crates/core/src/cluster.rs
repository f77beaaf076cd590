//! The cluster state the planner works on: static node facts plus what is free right now.
//!
//! Kept incrementally (pods added and removed as they come and go) so a planning cycle only
//! copies the compact free-capacity vector, never rebuilds the cluster.

use crate::gpu_choice::{GpuMask, GpuTable, mask_of};
use crate::model::{GangKey, GpuInfo, NodeInfo, PlacedPod, PodId, Resources};
use crate::placement::{StaticFit, StaticKey};
use muster_api::LinkMatrix;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("node {0} is not in the cluster")]
    UnknownNode(String),
    #[error("pod {0} is already placed")]
    DuplicatePod(PodId),
    #[error("pod {pod} does not fit on node {node}: {what}")]
    DoesNotFit {
        pod: PodId,
        node: String,
        what: String,
    },
    #[error("node {node} has {count} GPUs, at most 64 are supported")]
    TooManyGpus { node: String, count: usize },
}

/// Free capacity of one node; copied per planning cycle, so keep it small and `Copy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeFree {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u32,
    /// Whole-GPU budget left (allocatable minus used); may be below `gpus.count_ones()`.
    pub gpu_budget: u32,
    /// Healthy GPUs not held by any pod.
    pub gpus: GpuMask,
}

impl NodeFree {
    /// How many pods of `req` fit.
    pub fn capacity_for(&self, req: &Resources) -> u32 {
        // Cheap comparisons first: most nodes in a busy cluster fit nothing.
        let gpus = self.gpu_budget.min(self.gpus.count_ones());
        if gpus < req.gpus
            || self.cpu_millis < req.cpu_millis
            || self.memory_bytes < req.memory_bytes
            || self.pods < req.pods
        {
            return 0;
        }
        let div = |have: u64, want: u64| {
            have.checked_div(want)
                .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        div(self.cpu_millis, req.cpu_millis)
            .min(div(self.memory_bytes, req.memory_bytes))
            .min(div(u64::from(self.pods), u64::from(req.pods)))
            .min(div(u64::from(gpus), u64::from(req.gpus)))
    }

    pub fn take(&mut self, req: &Resources, gpus: GpuMask) {
        self.cpu_millis = self.cpu_millis.saturating_sub(req.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(req.memory_bytes);
        self.pods = self.pods.saturating_sub(req.pods);
        self.gpu_budget = self.gpu_budget.saturating_sub(req.gpus);
        self.gpus &= !gpus;
    }

    pub fn give_back(&mut self, req: &Resources, gpus: GpuMask, healthy: GpuMask) {
        self.cpu_millis = self.cpu_millis.saturating_add(req.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(req.memory_bytes);
        self.pods = self.pods.saturating_add(req.pods);
        self.gpu_budget = self.gpu_budget.saturating_add(req.gpus);
        self.gpus |= gpus & healthy;
    }
}

#[derive(Debug)]
pub(crate) struct NodeSlot {
    pub info: NodeInfo,
    /// `info.name`, shared by the assignments that name the node.
    pub name: Arc<str>,
    pub table: Arc<GpuTable>,
    pub domain: Option<u32>,
    pub healthy: GpuMask,
    pub pods: Vec<PodId>,
    pub present: bool,
}

/// What the placement scan reads per node, kept apart from [`NodeSlot`] so that scanning
/// thousands of nodes stays in cache.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeHot {
    pub domain: Option<u32>,
    pub table: u32,
    pub has_gpus: bool,
}

/// Pods of one gang that hold resources.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunningGang {
    pub pods: Vec<PodId>,
    /// Pods not being deleted: only these count toward the gang's minimum (a gang restarted
    /// whole must gather its new minimum while the old pods still terminate).
    pub live: u32,
    pub priority: i32,
    pub gpus: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub newest_start: u64,
    pub preemptible: bool,
    pub terminating: bool,
}

/// The queue of a running gang whose queue was never set.
pub const DEFAULT_QUEUE: &str = "default";

/// Nodes, the pods placed on them and their free capacity.
#[derive(Debug, Default)]
pub struct Cluster {
    pub(crate) nodes: Vec<NodeSlot>,
    pub(crate) free: Vec<NodeFree>,
    pub(crate) hot: Vec<NodeHot>,
    by_name: HashMap<String, usize>,
    pub(crate) tables: Vec<Arc<GpuTable>>,
    pub(crate) domains: Vec<String>,
    pods: HashMap<PodId, PlacedPod>,
    pub(crate) gangs: BTreeMap<GangKey, RunningGang>,
    /// Queue of each running gang that has one set (others are in [`DEFAULT_QUEUE`]).
    gang_queues: HashMap<GangKey, String>,
    /// Nodes passing each (selector, tolerations) pair's static filters; cleared when nodes
    /// change. Shared by planning cycles, which only read the cluster.
    pub(crate) static_fits: Mutex<HashMap<StaticKey, Arc<StaticFit>>>,
}

impl Cluster {
    pub fn new(nodes: impl IntoIterator<Item = NodeInfo>) -> Result<Cluster, ClusterError> {
        let mut c = Cluster::default();
        for n in nodes {
            c.upsert_node(n)?;
        }
        Ok(c)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.present).count()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.nodes[i])
            .filter(|n| n.present)
            .map(|n| &n.info)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.present).map(|n| &n.info)
    }

    pub fn pod(&self, id: &PodId) -> Option<&PlacedPod> {
        self.pods.get(id)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PlacedPod> {
        self.pods.values()
    }

    /// Placed pods of a gang.
    pub fn gang_pods(&self, gang: &GangKey) -> impl Iterator<Item = &PlacedPod> {
        self.gangs
            .get(gang)
            .into_iter()
            .flat_map(|g| g.pods.iter())
            .filter_map(|id| self.pods.get(id))
    }

    /// Free GPU indices on a node (healthy and not held), ascending.
    pub fn free_gpus(&self, node: &str) -> Option<Vec<usize>> {
        let &i = self.by_name.get(node)?;
        Some(crate::gpu_choice::indices(self.free[i].gpus))
    }

    /// Free whole GPUs across the cluster (healthy, unheld, within allocatable).
    pub fn free_gpu_total(&self) -> u64 {
        self.nodes
            .iter()
            .zip(&self.free)
            .filter(|(n, _)| n.present)
            .map(|(_, f)| u64::from(f.gpu_budget.min(f.gpus.count_ones())))
            .sum()
    }

    pub fn gpu_total(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.present)
            .map(|n| u64::from(n.info.allocatable.gpus.min(n.healthy.count_ones())))
            .sum()
    }

    /// Adds a node or replaces its facts (labels, health, capacity), keeping its pods.
    pub fn upsert_node(&mut self, mut info: NodeInfo) -> Result<(), ClusterError> {
        if info.gpus.len() > 64 {
            return Err(ClusterError::TooManyGpus {
                node: info.name.clone(),
                count: info.gpus.len(),
            });
        }
        if info.gpus.is_empty() && info.allocatable.gpus > 0 {
            // Capacity without inventory (no agent yet): anonymous, healthy, unknown links.
            info.gpus = (0..info.allocatable.gpus.min(64))
                .map(|i| GpuInfo {
                    id: format!("{}-gpu{i}", info.name),
                    model: String::new(),
                    memory_mib: 0,
                    healthy: true,
                })
                .collect();
        }
        self.invalidate_static_fits();
        let table = self.table_for(&info);
        let domain = info.domain.clone().map(|d| self.intern_domain(d));
        let healthy = mask_of(
            info.gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| g.healthy)
                .map(|(i, _)| i),
        );
        let idx = match self.by_name.get(&info.name) {
            Some(&i) => i,
            None => {
                self.nodes.push(NodeSlot {
                    name: Arc::from(info.name.as_str()),
                    info: info.clone(),
                    table: table.clone(),
                    domain,
                    healthy,
                    pods: Vec::new(),
                    present: true,
                });
                self.free.push(NodeFree::default());
                self.hot.push(NodeHot::default());
                self.by_name.insert(info.name.clone(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        self.hot[idx] = NodeHot {
            domain,
            table: self
                .tables
                .iter()
                .position(|t| Arc::ptr_eq(t, &table))
                .unwrap_or(0) as u32,
            has_gpus: info.allocatable.gpus > 0,
        };
        let slot = &mut self.nodes[idx];
        slot.info = info;
        slot.table = table;
        slot.domain = domain;
        slot.healthy = healthy;
        slot.present = true;
        self.recompute_free(idx);
        Ok(())
    }

    /// Removes a node; its pods stay recorded until removed (they are gone with it in reality).
    pub fn remove_node(&mut self, name: &str) {
        self.invalidate_static_fits();
        if let Some(&i) = self.by_name.get(name) {
            self.nodes[i].present = false;
            self.free[i] = NodeFree::default();
        }
    }

    fn invalidate_static_fits(&mut self) {
        if let Ok(cache) = self.static_fits.get_mut() {
            cache.clear();
        } else {
            self.static_fits = Mutex::default();
        }
    }

    fn recompute_free(&mut self, idx: usize) {
        let slot = &self.nodes[idx];
        let a = slot.info.allocatable;
        let mut free = NodeFree {
            cpu_millis: a.cpu_millis,
            memory_bytes: a.memory_bytes,
            pods: a.pods,
            gpu_budget: a.gpus,
            gpus: slot.healthy,
        };
        for id in &slot.pods {
            if let Some(p) = self.pods.get(id) {
                free.take(&p.resources, mask_of(p.gpus.iter().map(|&g| g as usize)));
            }
        }
        self.free[idx] = free;
    }

    fn table_for(&mut self, info: &NodeInfo) -> Arc<GpuTable> {
        let matrix = match &info.topology {
            Some(m) if m.size() == info.gpus.len() => m.clone(),
            _ => LinkMatrix::uniform(
                info.gpus.len(),
                muster_api::Link::Pcie(muster_api::PcieLevel::Sys),
            ),
        };
        if let Some(t) = self.tables.iter().find(|t| *t.matrix() == matrix) {
            return t.clone();
        }
        let t = Arc::new(GpuTable::new(matrix));
        self.tables.push(t.clone());
        t
    }

    fn intern_domain(&mut self, d: String) -> u32 {
        let pos = self
            .domains
            .iter()
            .position(|x| *x == d)
            .unwrap_or_else(|| {
                self.domains.push(d);
                self.domains.len() - 1
            });
        u32::try_from(pos).unwrap_or(u32::MAX)
    }

    /// Records a placed pod, refusing any over-commitment or a GPU already held.
    pub fn add_pod(&mut self, pod: PlacedPod) -> Result<(), ClusterError> {
        let idx = self.check_fits(&pod)?;
        self.insert_pod(idx, pod);
        Ok(())
    }

    /// Records a pod the API server says exists, even if it over-commits the node (the
    /// cluster is the truth; the planner just sees less free capacity).
    pub fn record_pod(&mut self, pod: PlacedPod) -> Result<(), ClusterError> {
        if self.pods.contains_key(&pod.id) {
            self.remove_pod(&pod.id.clone());
        }
        let idx = *self
            .by_name
            .get(&pod.node)
            .ok_or_else(|| ClusterError::UnknownNode(pod.node.clone()))?;
        self.insert_pod(idx, pod);
        Ok(())
    }

    fn check_fits(&self, pod: &PlacedPod) -> Result<usize, ClusterError> {
        if self.pods.contains_key(&pod.id) {
            return Err(ClusterError::DuplicatePod(pod.id.clone()));
        }
        let idx = *self
            .by_name
            .get(&pod.node)
            .filter(|&&i| self.nodes[i].present)
            .ok_or_else(|| ClusterError::UnknownNode(pod.node.clone()))?;
        let free = &self.free[idx];
        let misfit = |what: String| ClusterError::DoesNotFit {
            pod: pod.id.clone(),
            node: pod.node.clone(),
            what,
        };
        if free.capacity_for(&Resources {
            gpus: 0,
            ..pod.resources
        }) < 1
        {
            return Err(misfit("not enough cpu, memory or pod slots".into()));
        }
        if pod.gpus.len() != pod.resources.gpus as usize {
            return Err(misfit(format!(
                "requests {} GPUs but names {}",
                pod.resources.gpus,
                pod.gpus.len()
            )));
        }
        let wanted = mask_of(pod.gpus.iter().map(|&g| g as usize));
        if wanted.count_ones() as usize != pod.gpus.len() || wanted & !free.gpus != 0 {
            return Err(misfit(format!(
                "GPUs {:?} are not all free and healthy",
                pod.gpus
            )));
        }
        if free.gpu_budget < pod.resources.gpus {
            return Err(misfit("no GPU budget left".into()));
        }
        Ok(idx)
    }

    fn insert_pod(&mut self, idx: usize, pod: PlacedPod) {
        self.free[idx].take(
            &pod.resources,
            mask_of(pod.gpus.iter().map(|&g| g as usize)),
        );
        self.nodes[idx].pods.push(pod.id.clone());
        let g = self
            .gangs
            .entry(pod.gang.clone())
            .or_insert_with(|| RunningGang {
                preemptible: true,
                ..RunningGang::default()
            });
        if g.pods.is_empty() {
            g.priority = pod.priority;
        }
        g.pods.push(pod.id.clone());
        if !pod.terminating {
            g.live += 1;
        }
        g.priority = g.priority.max(pod.priority);
        g.gpus = g.gpus.saturating_add(pod.resources.gpus);
        g.cpu_millis = g.cpu_millis.saturating_add(pod.resources.cpu_millis);
        g.memory_bytes = g.memory_bytes.saturating_add(pod.resources.memory_bytes);
        g.newest_start = g.newest_start.max(pod.started_at);
        g.preemptible &= pod.preemptible;
        g.terminating = g.terminating || pod.terminating;
        self.pods.insert(pod.id.clone(), pod);
    }

    /// Forgets a pod and frees what it held.
    pub fn remove_pod(&mut self, id: &PodId) -> Option<PlacedPod> {
        let pod = self.pods.remove(id)?;
        if let Some(&idx) = self.by_name.get(&pod.node) {
            let slot = &mut self.nodes[idx];
            slot.pods.retain(|p| p != id);
            if slot.present {
                let healthy = slot.healthy;
                self.free[idx].give_back(
                    &pod.resources,
                    mask_of(pod.gpus.iter().map(|&g| g as usize)),
                    healthy,
                );
            }
        }
        if let Some(g) = self.gangs.get_mut(&pod.gang) {
            g.pods.retain(|p| p != id);
            if !pod.terminating {
                g.live = g.live.saturating_sub(1);
            }
            g.gpus = g.gpus.saturating_sub(pod.resources.gpus);
            g.cpu_millis = g.cpu_millis.saturating_sub(pod.resources.cpu_millis);
            g.memory_bytes = g.memory_bytes.saturating_sub(pod.resources.memory_bytes);
            if g.pods.is_empty() {
                self.gangs.remove(&pod.gang);
                self.gang_queues.remove(&pod.gang);
            }
        }
        Some(pod)
    }

    /// Marks a pod as being deleted (its resources will come back).
    pub fn mark_terminating(&mut self, id: &PodId) {
        if let Some(p) = self.pods.get_mut(id) {
            let was_live = !p.terminating;
            p.terminating = true;
            if let Some(g) = self.gangs.get_mut(&p.gang) {
                g.terminating = true;
                if was_live {
                    g.live = g.live.saturating_sub(1);
                }
            }
        }
    }

    /// Sets the queue a gang's placed pods count against (before or after its pods are
    /// recorded). Forgotten when the gang's last pod is removed; [`Cluster::commit`] sets it
    /// from the gang it commits.
    pub fn set_gang_queue(&mut self, gang: &GangKey, queue: impl Into<String>) {
        self.gang_queues.insert(gang.clone(), queue.into());
    }

    /// The queue a gang's placed pods count against ([`DEFAULT_QUEUE`] unless set).
    pub fn gang_queue(&self, gang: &GangKey) -> &str {
        self.gang_queues
            .get(gang)
            .map_or(DEFAULT_QUEUE, String::as_str)
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GangKey;

    fn node(name: &str, gpus: u32) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            allocatable: Resources {
                cpu_millis: 64_000,
                memory_bytes: 512 << 30,
                pods: 110,
                gpus,
            },
            labels: vec![],
            taints: vec![],
            schedulable: true,
            gpus: vec![],
            topology: None,
            domain: None,
        }
    }

    fn pod(id: &str, node: &str, gpus: &[u32]) -> PlacedPod {
        PlacedPod {
            id: PodId(id.into()),
            gang: GangKey::new("ns", id),
            node: node.into(),
            resources: Resources::new(1000, 1 << 30, gpus.len() as u32),
            gpus: gpus.to_vec(),
            priority: 0,
            started_at: 0,
            preemptible: true,
            terminating: false,
            ends_by: None,
        }
    }

    #[test]
    fn add_and_remove_pods_track_free_gpus() {
        let mut c = Cluster::new([node("a", 8)]).unwrap();
        c.add_pod(pod("p1", "a", &[0, 1])).unwrap();
        assert_eq!(c.free_gpus("a").unwrap(), vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(c.free_gpu_total(), 6);
        let err = c.add_pod(pod("p2", "a", &[1, 2])).unwrap_err();
        assert!(matches!(err, ClusterError::DoesNotFit { .. }), "{err}");
        assert!(c.add_pod(pod("p1", "a", &[3])).is_err(), "duplicate id");
        c.remove_pod(&PodId::new("p1"));
        assert_eq!(c.free_gpu_total(), 8);
    }

    #[test]
    fn unhealthy_gpus_are_never_free() {
        let mut n = node("a", 2);
        n.gpus = (0..2)
            .map(|i| GpuInfo {
                id: format!("g{i}"),
                model: "x".into(),
                memory_mib: 1,
                healthy: i == 0,
            })
            .collect();
        let mut c = Cluster::new([n]).unwrap();
        assert_eq!(c.free_gpus("a").unwrap(), vec![0]);
        assert!(c.add_pod(pod("p", "a", &[1])).is_err());
        c.record_pod(pod("q", "a", &[1])).unwrap();
        c.remove_pod(&PodId::new("q"));
        assert_eq!(
            c.free_gpus("a").unwrap(),
            vec![0],
            "a released unhealthy GPU stays out"
        );
    }

    #[test]
    fn unknown_node_is_an_error() {
        let mut c = Cluster::new([node("a", 8)]).unwrap();
        assert_eq!(
            c.add_pod(pod("p", "zz", &[0])),
            Err(ClusterError::UnknownNode("zz".into()))
        );
    }
}
