//! Plugin settings (the binary fills them from flags; tests build them directly).

use std::path::PathBuf;
use std::time::Duration;

/// Default kubelet device-plugins directory.
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Default socket file name of this plugin.
pub const DEFAULT_SOCKET: &str = "muster-gpu.sock";

#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// The kubelet's device-plugins directory: holds `kubelet.sock` and our socket.
    pub dir: PathBuf,
    /// Our socket's file name in `dir` (what `RegisterRequest.endpoint` carries).
    pub socket_name: String,
    /// Extended resource advertised, `nvidia.com/gpu` by default.
    pub resource: String,
    /// This node's name: only GPU choices the scheduler made for this node are honoured.
    pub node_name: String,
    /// Root under which the driver's device nodes live on the host (`/` normally; the driver
    /// container's root when the driver runs containerised).
    pub driver_root: PathBuf,
    /// Also answer CDI device names (`nvidia.com/gpu=<uuid>`) in `Allocate`.
    pub cdi: bool,
    /// How often our socket is checked for deletion (a restarting kubelet wipes the directory).
    pub socket_poll: Duration,
    /// How long `GetPreferredAllocation` waits for the pod watch to deliver an annotated pod
    /// before falling back (the kubelet may see a binding before our watch does). Zero without
    /// a pod source.
    pub annotation_wait: Duration,
}

impl PluginConfig {
    pub fn new(dir: impl Into<PathBuf>, node_name: impl Into<String>) -> PluginConfig {
        PluginConfig {
            dir: dir.into(),
            socket_name: DEFAULT_SOCKET.to_string(),
            resource: muster_api::names::GPU_RESOURCE.to_string(),
            node_name: node_name.into(),
            driver_root: PathBuf::from("/"),
            cdi: false,
            socket_poll: Duration::from_millis(100),
            annotation_wait: Duration::ZERO,
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(&self.socket_name)
    }

    pub fn kubelet_socket(&self) -> PathBuf {
        self.dir.join(crate::proto::KUBELET_SOCKET)
    }
}
