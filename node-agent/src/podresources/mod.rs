//! The kubelet pod-resources API (v1): which pod/container holds which GPU.
//!
//! - [`proto`]: the generated client and server (the server is for the tests' fake kubelet).
//! - [`client`]: connecting over the unix socket.
//! - [`watch`]: the polling loop that keeps a [`PodResourcesState`] current and survives an
//!   absent or restarting kubelet.

pub mod client;
pub mod watch;

/// Generated from `proto/podresources/v1/api.proto`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("v1");
}

use std::collections::BTreeMap;

/// A container holding a GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allocation {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Device id (GPU or MIG UUID, time-slicing `::N` suffix removed) -> its holder.
pub type Allocations = BTreeMap<String, Allocation>;

/// What the agent knows from the kubelet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodResourcesState {
    /// The last `List` succeeded.
    pub up: bool,
    pub allocations: Allocations,
}

/// Resources whose device ids are GPU or MIG UUIDs.
fn is_gpu_resource(name: &str) -> bool {
    name == muster_api::names::GPU_RESOURCE || name.starts_with("nvidia.com/mig-")
}

/// GPU allocations in a `List` answer. A device shared by several containers (time-slicing)
/// is attributed to the first in (namespace, pod, container) order, so labels are stable.
pub fn allocations(response: &proto::ListPodResourcesResponse) -> Allocations {
    let mut out = Allocations::new();
    for pod in &response.pod_resources {
        for container in &pod.containers {
            for devices in container
                .devices
                .iter()
                .filter(|d| is_gpu_resource(&d.resource_name))
            {
                for id in &devices.device_ids {
                    let uuid = id.split("::").next().unwrap_or(id).to_string();
                    let holder = Allocation {
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                        container: container.name.clone(),
                    };
                    out.entry(uuid)
                        .and_modify(|a| {
                            if holder < *a {
                                *a = holder.clone();
                            }
                        })
                        .or_insert(holder);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    fn pod(ns: &str, name: &str, container: &str, resource: &str, ids: &[&str]) -> PodResources {
        PodResources {
            name: name.into(),
            namespace: ns.into(),
            containers: vec![ContainerResources {
                name: container.into(),
                devices: vec![ContainerDevices {
                    resource_name: resource.into(),
                    device_ids: ids.iter().map(|s| s.to_string()).collect(),
                    topology: None,
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn gpu_devices_map_to_their_containers() {
        let response = ListPodResourcesResponse {
            pod_resources: vec![
                pod(
                    "ml",
                    "train-0",
                    "main",
                    "nvidia.com/gpu",
                    &["GPU-a", "GPU-b"],
                ),
                pod("ml", "other", "c", "example.com/fpga", &["GPU-c"]),
                pod("b", "shared", "x", "nvidia.com/gpu", &["GPU-d::1"]),
                pod("a", "shared", "y", "nvidia.com/gpu", &["GPU-d::0"]),
                pod("ml", "mig", "m", "nvidia.com/mig-1g.10gb", &["MIG-e"]),
            ],
        };
        let a = allocations(&response);
        assert_eq!(a.len(), 4, "{a:?}");
        assert_eq!(a["GPU-a"].pod, "train-0");
        assert_eq!(a["GPU-b"].container, "main");
        assert!(!a.contains_key("GPU-c"));
        assert_eq!(a["GPU-d"].namespace, "a");
        assert_eq!(a["MIG-e"].pod, "mig");
    }
}
