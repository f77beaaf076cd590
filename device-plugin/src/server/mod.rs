//! The `v1beta1.DevicePlugin` gRPC service. Thin: decisions live in [`crate::allocator`], the
//! device list in [`crate::devices`]; this maps them onto the protocol.

pub mod uds;

use crate::allocator::Allocator;
use crate::devices::Devices;
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::device_plugin_server::{DevicePlugin, DevicePluginServer};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

/// Options sent at registration and from `GetDevicePluginOptions`.
pub fn options() -> proto::DevicePluginOptions {
    proto::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

pub struct Service {
    devices: Devices,
    allocator: Arc<Allocator>,
    metrics: Metrics,
    /// Flips to true when this server generation stops: open `ListAndWatch` streams end, or the
    /// graceful shutdown would wait on them forever.
    stop: watch::Receiver<bool>,
}

impl Service {
    pub fn new(
        devices: Devices,
        allocator: Arc<Allocator>,
        metrics: Metrics,
        stop: watch::Receiver<bool>,
    ) -> Service {
        Service {
            devices,
            allocator,
            metrics,
            stop,
        }
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<proto::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<proto::DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: Request<proto::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        tracing::info!("kubelet opened ListAndWatch");
        let mut stop = self.stop.clone();
        // The watch stream yields the current list first, then every change.
        let stream = WatchStream::new(self.devices.subscribe())
            .map(|list| Ok(list.to_response()))
            .take_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<proto::PreferredAllocationRequest>,
    ) -> Result<Response<proto::PreferredAllocationResponse>, Status> {
        let mut responses = Vec::new();
        for container in &request.get_ref().container_requests {
            let chosen = self.allocator.preferred(container).await?;
            tracing::info!(
                size = container.allocation_size,
                available = container.available_device_i_ds.len(),
                source = chosen.source.label(),
                pod = chosen.pod.as_deref().unwrap_or("-"),
                gpus = ?chosen.ids,
                "preferred allocation"
            );
            responses.push(proto::ContainerPreferredAllocationResponse {
                device_i_ds: chosen.ids,
            });
        }
        Ok(Response::new(proto::PreferredAllocationResponse {
            container_responses: responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<proto::AllocateRequest>,
    ) -> Result<Response<proto::AllocateResponse>, Status> {
        let started = Instant::now();
        let result = self.allocator.allocate(request.get_ref());
        self.metrics
            .observe_allocate(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn pre_start_container(
        &self,
        _: Request<proto::PreStartContainerRequest>,
    ) -> Result<Response<proto::PreStartContainerResponse>, Status> {
        // Registered with pre_start_required = false: nothing to prepare.
        Ok(Response::new(proto::PreStartContainerResponse {}))
    }
}

/// Serves `service` on an already bound socket until `stop` flips to true. Binding is separate
/// so the caller knows the socket exists before it registers (serve first, then register).
pub async fn serve(
    service: Service,
    incoming: tokio_stream::wrappers::UnixListenerStream,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    tonic::transport::Server::builder()
        .add_service(DevicePluginServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .context("device-plugin gRPC server")
}
