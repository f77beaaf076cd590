//! Bridges the inventory's XID watcher (a std thread and a std `mpsc` channel) into [`Devices`]:
//! a dedicated thread blocks on the channel, so no tokio worker ever blocks on NVML.

use crate::devices::Devices;
use crate::metrics::Metrics;
use muster_gpu_inventory::HealthEvent;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

/// Applies every event to `devices` until the watcher's sender goes away (the watcher stopped).
pub fn bridge(
    events: Receiver<HealthEvent>,
    devices: Devices,
    metrics: Metrics,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("health-bridge".into())
        .spawn(move || {
            for event in events {
                let reason = (!event.healthy).then(|| match event.xid {
                    Some(xid) => format!("XID {xid}"),
                    None => format!("{:?}", event.cause),
                });
                if devices.set_health(&event.gpu_uuid, event.healthy, reason) {
                    tracing::warn!(
                        gpu = event.gpu_index,
                        uuid = %event.gpu_uuid,
                        healthy = event.healthy,
                        xid = ?event.xid,
                        "GPU health changed; resending the device list"
                    );
                    metrics.set_devices(&devices.current());
                } else {
                    tracing::debug!(gpu = event.gpu_index, xid = ?event.xid, "health event without change");
                }
            }
            tracing::debug!("health watcher channel closed");
        })
}
