//! A fake kubelet pod-resources server on a unix socket, on a runtime of its own so that
//! stopping it really closes every connection (what a kubelet restart looks like to clients).

use muster_node_agent::podresources::proto::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use muster_node_agent::podresources::proto::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Lister {
    pods: Arc<Mutex<Vec<PodResources>>>,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: self.pods.lock().unwrap().clone(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not used by the agent"))
    }

    async fn get(
        &self,
        _: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("not used by the agent"))
    }
}

/// A pod with one container holding `gpus` (`nvidia.com/gpu` device ids).
pub fn gpu_pod(namespace: &str, name: &str, container: &str, gpus: &[String]) -> PodResources {
    PodResources {
        name: name.into(),
        namespace: namespace.into(),
        containers: vec![ContainerResources {
            name: container.into(),
            devices: vec![ContainerDevices {
                resource_name: "nvidia.com/gpu".into(),
                device_ids: gpus.to_vec(),
                topology: None,
            }],
            ..Default::default()
        }],
    }
}

pub struct FakeKubelet {
    pub socket: PathBuf,
    pods: Arc<Mutex<Vec<PodResources>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeKubelet {
    /// Serves `pods` on `socket` (replacing a stale socket file, as the kubelet does).
    pub fn start(socket: &Path, pods: Vec<PodResources>) -> FakeKubelet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake kubelet runtime");
        let _ = std::fs::remove_file(socket);
        let lister = Lister {
            pods: Arc::new(Mutex::new(pods)),
        };
        let pods = Arc::clone(&lister.pods);
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(socket).expect("binding the fake kubelet socket")
        };
        runtime.spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .add_service(PodResourcesListerServer::new(lister))
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                eprintln!("fake kubelet stopped: {e}");
            }
        });
        FakeKubelet {
            socket: socket.to_path_buf(),
            pods,
            runtime: Some(runtime),
        }
    }

    pub fn set_pods(&self, pods: Vec<PodResources>) {
        *self.pods.lock().unwrap() = pods;
    }

    /// Kills the server and every connection, and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.shutdown();
    }
}
