//! The cluster as the plan lifecycle reads it: the cache, through the same conversions the
//! snapshot uses (so a plan is judged stale by exactly what placement would see).

use super::lifecycle::{PodFacts, World};
use crate::cache::Cache;
use crate::gang::GangSource;
use crate::snapshot;
use kube::runtime::reflector::ObjectRef;
use muster_core::{GangKey, NodeInfo};

pub(super) struct CacheWorld<'a> {
    pub cache: &'a Cache,
}

impl World for CacheWorld<'_> {
    fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts> {
        let pod = self
            .cache
            .pods
            .get(&ObjectRef::new(name).within(namespace))?;
        Some(PodFacts {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            tolerations: snapshot::tolerations(&pod),
        })
    }

    fn node(&self, name: &str) -> Option<NodeInfo> {
        let node = self.cache.nodes.get(&ObjectRef::new(name))?;
        let mut info = snapshot::cached_node_info(self.cache, &node)?;
        // A plan is judged as kube-scheduler would judge the binding: a cordon refuses the
        // node, a missed heartbeat does not by itself (the node controller taints a node that
        // stays NotReady, and the taint check sees that).
        info.schedulable = !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        Some(info)
    }

    fn gang_min(&self, gang: &GangKey, source: &GangSource) -> Result<u32, String> {
        let info = snapshot::gang_info(self.cache, gang, source, None);
        match info.problem {
            Some(p) => Err(p),
            None => Ok(info.min_member),
        }
    }
}
