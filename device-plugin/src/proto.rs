//! Generated kubelet device-plugin API (`proto/deviceplugin/v1beta1/api.proto`), client and
//! server for both services.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("v1beta1");

/// API version sent in `RegisterRequest.version`.
pub const VERSION: &str = "v1beta1";
/// `Device.health` of a usable device.
pub const HEALTHY: &str = "Healthy";
/// `Device.health` of a device the kubelet must not hand out.
pub const UNHEALTHY: &str = "Unhealthy";
/// The kubelet's registration socket, inside the device-plugins directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
