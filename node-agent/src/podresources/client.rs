//! A pod-resources client over the kubelet's unix socket.

use super::proto::pod_resources_lister_client::PodResourcesListerClient;
use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

pub type Client = PodResourcesListerClient<Channel>;

/// Connects to the socket at `path` (fails fast when it is absent or refuses).
pub async fn connect(path: &Path, timeout: Duration) -> anyhow::Result<Client> {
    let socket: PathBuf = path.to_path_buf();
    // The URI is required by tonic but unused: the connector below dials the socket.
    let channel = Endpoint::from_static("http://kubelet.pod-resources")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connecting to pod-resources socket {}", path.display()))?;
    Ok(PodResourcesListerClient::new(channel))
}
