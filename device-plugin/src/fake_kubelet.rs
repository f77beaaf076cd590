//! A fake kubelet device manager for tests, speaking the real v1beta1 proto over unix sockets:
//! serves `Registration` on `<dir>/kubelet.sock`, records every `RegisterRequest`, connects back
//! to `<dir>/<endpoint>` and consumes `ListAndWatch`, and admits containers the way the device
//! manager does (`GetPreferredAllocation`, then `Allocate` with the preferred IDs). `restart`
//! wipes the directory like a restarting kubelet.
//!
//! Test-only, but in the library so the end-to-end suite can use it too.

use crate::proto;
use crate::proto::device_plugin_client::DevicePluginClient;
use crate::proto::registration_server::{Registration, RegistrationServer};
use crate::server::uds;
use anyhow::{Context as _, anyhow};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// One `Register` call as received.
#[derive(Clone, Debug)]
pub struct Registered {
    pub at: Instant,
    pub request: proto::RegisterRequest,
}

/// What one admission (preferred allocation, then allocation) returned.
#[derive(Clone, Debug)]
pub struct Admission {
    pub preferred: Vec<String>,
    pub response: proto::ContainerAllocateResponse,
    /// Time of the `Allocate` call alone.
    pub allocate_time: Duration,
}

struct Shared {
    dir: PathBuf,
    registrations: Mutex<Vec<Registered>>,
    count: watch::Sender<usize>,
    /// The device list last received on the current plugin's `ListAndWatch`.
    devices: watch::Sender<Vec<proto::Device>>,
    streams: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct RegistrationService(Arc<Shared>);

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        let request = request.into_inner();
        let shared = &self.0;
        Shared::lock(&shared.registrations).push(Registered {
            at: Instant::now(),
            request: request.clone(),
        });
        shared.count.send_modify(|c| *c += 1);
        // Like the device manager: refuse what it would refuse, after recording it.
        if request.version != proto::VERSION {
            return Err(Status::invalid_argument(format!(
                "unsupported version {}",
                request.version
            )));
        }
        if request.endpoint.contains('/') {
            return Err(Status::invalid_argument(format!(
                "endpoint {} must be a file name in the device-plugins directory",
                request.endpoint
            )));
        }
        // The device manager connects back asynchronously, after answering.
        let socket = shared.dir.join(&request.endpoint);
        let devices = shared.devices.clone();
        let stream = tokio::spawn(async move {
            if let Err(e) = consume(&socket, devices).await {
                tracing::debug!(error = %format!("{e:#}"), "fake kubelet: ListAndWatch ended");
            }
        });
        Shared::lock(&shared.streams).push(stream);
        Ok(Response::new(proto::Empty {}))
    }
}

/// Reads `ListAndWatch` into `devices` until the stream ends.
async fn consume(socket: &Path, devices: watch::Sender<Vec<proto::Device>>) -> anyhow::Result<()> {
    let mut client = DevicePluginClient::new(uds::connect(socket).await?);
    let options = client.get_device_plugin_options(proto::Empty {}).await?;
    tracing::debug!(options = ?options.get_ref(), "fake kubelet: plugin options");
    let mut stream = client.list_and_watch(proto::Empty {}).await?.into_inner();
    while let Some(list) = stream.next().await {
        devices.send_replace(list?.devices);
    }
    Ok(())
}

pub struct FakeKubelet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

fn serve_registration(
    shared: Arc<Shared>,
) -> anyhow::Result<(watch::Sender<bool>, JoinHandle<()>)> {
    let path = shared.dir.join(proto::KUBELET_SOCKET);
    let incoming = uds::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let (stop, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(RegistrationService(shared)))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "fake kubelet registration server");
        }
    });
    Ok((stop, server))
}

impl FakeKubelet {
    /// Serves `Registration` in `dir` (created if needed).
    pub async fn start(dir: &Path) -> anyhow::Result<FakeKubelet> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            registrations: Mutex::default(),
            count: watch::channel(0).0,
            devices: watch::channel(Vec::new()).0,
            streams: Mutex::default(),
        });
        let (stop, server) = serve_registration(shared.clone())?;
        Ok(FakeKubelet {
            shared,
            stop,
            server,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn registrations(&self) -> Vec<Registered> {
        Shared::lock(&self.shared.registrations).clone()
    }

    /// Waits until at least `n` registrations arrived (failing after `deadline`).
    pub async fn wait_for_registrations(
        &self,
        n: usize,
        deadline: Duration,
    ) -> anyhow::Result<Vec<Registered>> {
        let mut rx = self.shared.count.subscribe();
        tokio::time::timeout(deadline, rx.wait_for(|c| *c >= n))
            .await
            .map_err(|_| {
                anyhow!(
                    "fewer than {n} registrations after {deadline:?}: {:?}",
                    self.registrations()
                )
            })?
            .context("fake kubelet stopped")?;
        Ok(self.registrations())
    }

    /// Waits until the device list from `ListAndWatch` satisfies `pred`.
    pub async fn wait_for_devices(
        &self,
        deadline: Duration,
        pred: impl Fn(&[proto::Device]) -> bool,
    ) -> anyhow::Result<Vec<proto::Device>> {
        let mut rx = self.shared.devices.subscribe();
        let found = tokio::time::timeout(deadline, rx.wait_for(|d| pred(d)))
            .await
            .map_err(|_| {
                anyhow!(
                    "device list never matched; last: {:?}",
                    self.shared.devices.borrow()
                )
            })?
            .context("fake kubelet stopped")?
            .clone();
        Ok(found)
    }

    /// Every device list received from now on (the current one first).
    pub fn device_updates(&self) -> watch::Receiver<Vec<proto::Device>> {
        self.shared.devices.subscribe()
    }

    /// A client to the plugin of the latest registration.
    pub async fn plugin(&self) -> anyhow::Result<DevicePluginClient<Channel>> {
        let endpoint = self
            .registrations()
            .last()
            .map(|r| r.request.endpoint.clone())
            .context("no plugin registered")?;
        let socket = self.shared.dir.join(endpoint);
        Ok(DevicePluginClient::new(
            uds::connect(&socket)
                .await
                .with_context(|| format!("connecting to {}", socket.display()))?,
        ))
    }

    /// Admits one container asking for `size` devices out of `available`, like the device
    /// manager: `GetPreferredAllocation`, then `Allocate` with exactly the preferred IDs.
    pub async fn admit(
        &self,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Result<Admission, Status> {
        let mut client = self
            .plugin()
            .await
            .map_err(|e| Status::unavailable(format!("{e:#}")))?;
        let preferred = client
            .get_preferred_allocation(proto::PreferredAllocationRequest {
                container_requests: vec![proto::ContainerPreferredAllocationRequest {
                    available_device_i_ds: available.to_vec(),
                    must_include_device_i_ds: must_include.to_vec(),
                    allocation_size: i32::try_from(size)
                        .map_err(|_| Status::invalid_argument("size out of range"))?,
                }],
            })
            .await?
            .into_inner()
            .container_responses
            .into_iter()
            .next()
            .map(|c| c.device_i_ds)
            .ok_or_else(|| Status::internal("no container response"))?;
        let started = Instant::now();
        let response = self.allocate(&mut client, &preferred).await?;
        Ok(Admission {
            preferred,
            response,
            allocate_time: started.elapsed(),
        })
    }

    /// `Allocate` for one container with `ids`.
    pub async fn allocate(
        &self,
        client: &mut DevicePluginClient<Channel>,
        ids: &[String],
    ) -> Result<proto::ContainerAllocateResponse, Status> {
        client
            .allocate(proto::AllocateRequest {
                container_requests: vec![proto::ContainerAllocateRequest {
                    devices_ids: ids.to_vec(),
                }],
            })
            .await?
            .into_inner()
            .container_responses
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("no container response"))
    }

    /// Simulates a kubelet restart: stops serving, deletes every socket in the directory (the
    /// plugin's included), serves `Registration` again. Returns when the plugin socket was
    /// deleted.
    pub async fn restart(&mut self) -> anyhow::Result<Instant> {
        let _ = self.stop.send(true);
        for stream in Shared::lock(&self.shared.streams).drain(..) {
            stream.abort();
        }
        let _ = (&mut self.server).await;
        let mut deleted_at = Instant::now();
        for entry in std::fs::read_dir(&self.shared.dir)? {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            deleted_at = Instant::now();
        }
        let (stop, server) = serve_registration(self.shared.clone())?;
        self.stop = stop;
        self.server = server;
        Ok(deleted_at)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for stream in Shared::lock(&self.shared.streams).drain(..) {
            stream.abort();
        }
        let _ = (&mut self.server).await;
    }
}
