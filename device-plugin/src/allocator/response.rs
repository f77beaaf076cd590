//! The `ContainerAllocateResponse` for a set of GPUs, following NVIDIA's plugin conventions:
//! `NVIDIA_VISIBLE_DEVICES` with UUIDs, the driver's control devices plus `/dev/nvidiaN` per GPU,
//! and optionally CDI names.

use crate::devices::Gpu;
use crate::proto;
use std::collections::HashMap;
use std::path::Path;

pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// Control devices every GPU container needs, in the order they are listed.
pub const CONTROL_DEVICES: [&str; 4] = [
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];
/// cgroup permissions for every device: read and write, no mknod.
pub const PERMISSIONS: &str = "rw";
/// CDI kind of whole GPUs.
pub const CDI_KIND: &str = "nvidia.com/gpu";

/// Host path of a container device path under the driver root.
fn host_path(driver_root: &Path, container_path: &str) -> String {
    driver_root
        .join(container_path.trim_start_matches('/'))
        .to_string_lossy()
        .into_owned()
}

/// Response for `gpus`, in the order the kubelet listed them.
pub fn container_response(
    gpus: &[&Gpu],
    driver_root: &Path,
    cdi: bool,
) -> proto::ContainerAllocateResponse {
    let uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    let device = |path: String| proto::DeviceSpec {
        host_path: host_path(driver_root, &path),
        container_path: path,
        permissions: PERMISSIONS.to_string(),
    };
    let devices = CONTROL_DEVICES
        .iter()
        .map(|p| device(p.to_string()))
        .chain(
            gpus.iter()
                .map(|g| device(format!("/dev/nvidia{}", g.index))),
        )
        .collect();
    proto::ContainerAllocateResponse {
        envs: HashMap::from([(VISIBLE_DEVICES_ENV.to_string(), uuids.join(","))]),
        mounts: Vec::new(),
        devices,
        annotations: HashMap::new(),
        cdi_devices: if cdi {
            uuids
                .iter()
                .map(|u| proto::CdiDevice {
                    name: format!("{CDI_KIND}={u}"),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}
