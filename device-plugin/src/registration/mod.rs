//! The plugin's lifecycle towards the kubelet: serve on our socket, then `Register`; watch the
//! socket, and when it disappears (a restarting kubelet wipes the directory) or is replaced,
//! serve a fresh one and register again. On shutdown, stop serving and remove the socket.

use crate::config::PluginConfig;
use crate::metrics::Metrics;
use crate::proto;
use crate::proto::registration_client::RegistrationClient;
use crate::server::{self, Service, uds};
use anyhow::{Context as _, bail};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longest pause between registration attempts while the kubelet is not answering.
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How long a stopped server generation may take to drain before it is aborted.
const DRAIN: Duration = Duration::from_secs(2);

/// The request this plugin registers with.
pub fn register_request(config: &PluginConfig) -> proto::RegisterRequest {
    proto::RegisterRequest {
        version: proto::VERSION.to_string(),
        // A file name relative to the device-plugins directory, as the kubelet expects.
        endpoint: config.socket_name.clone(),
        resource_name: config.resource.clone(),
        options: Some(server::options()),
    }
}

/// Why one registration attempt failed.
enum Attempt {
    /// The kubelet is not reachable (restarting?): try again.
    Unreachable(anyhow::Error),
    /// The kubelet answered and refused: registering again will not help.
    Refused(tonic::Status),
}

async fn register_once(config: &PluginConfig) -> Result<(), Attempt> {
    let socket = config.kubelet_socket();
    let channel = uds::connect(&socket)
        .await
        .with_context(|| format!("connecting to the kubelet at {}", socket.display()))
        .map_err(Attempt::Unreachable)?;
    match RegistrationClient::new(channel)
        .register(register_request(config))
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::Unavailable => Err(Attempt::Unreachable(
            anyhow::anyhow!("kubelet unavailable: {}", status.message()),
        )),
        Err(status) => Err(Attempt::Refused(status)),
    }
}

/// Inode of our socket, to notice it being deleted or replaced.
fn socket_identity(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether shutdown was requested (a dropped sender counts as a request).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Serve-register-watch until `shutdown` flips to true. `make_service` builds the service of
/// each server generation, given the generation's stop signal.
pub async fn run(
    config: &PluginConfig,
    make_service: impl Fn(watch::Receiver<bool>) -> Service,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let path = config.socket_path();
    // Set when the socket vanished: re-registration latency is measured from there.
    let mut lost_at: Option<Instant> = None;
    loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let incoming = uds::bind(&path)
            .with_context(|| format!("binding device-plugin socket {}", path.display()))?;
        let identity = socket_identity(&path);
        tracing::info!(socket = %path.display(), "serving DevicePlugin");
        let server = tokio::spawn(server::serve(
            make_service(stop_rx.clone()),
            incoming,
            stop_rx,
        ));

        let mut delay = Duration::from_millis(50);
        let outcome = loop {
            if stopping(&shutdown) {
                break Ok(false);
            }
            if socket_identity(&path) != identity {
                break Ok(true);
            }
            match register_once(config).await {
                Ok(()) => {
                    metrics.set_registered(true);
                    match lost_at.take() {
                        Some(t) => tracing::info!(
                            resource = %config.resource,
                            latency_ms = t.elapsed().as_secs_f64() * 1e3,
                            "re-registered with the kubelet"
                        ),
                        None => {
                            tracing::info!(resource = %config.resource, endpoint = %config.socket_name, "registered with the kubelet")
                        }
                    }
                    break Ok(true);
                }
                Err(Attempt::Refused(status)) => break Err(status),
                Err(Attempt::Unreachable(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "kubelet not reachable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        };

        let keep_going = match outcome {
            Ok(false) => false,
            Ok(true) => {
                // Watch the socket until it goes away or we are told to stop.
                loop {
                    if stopping(&shutdown) {
                        break false;
                    }
                    if socket_identity(&path) != identity {
                        tracing::warn!(socket = %path.display(), "socket removed (kubelet restart?); serving again and re-registering");
                        lost_at = Some(Instant::now());
                        break true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(config.socket_poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            Err(status) => {
                stop_generation(stop_tx, server, &path, identity).await;
                bail!(
                    "the kubelet refused registration of {}: {}",
                    config.resource,
                    status.message()
                );
            }
        };
        metrics.set_registered(false);
        stop_generation(stop_tx, server, &path, identity).await;
        if !keep_going {
            tracing::info!("device plugin stopped");
            return Ok(());
        }
    }
}

/// Stops one server generation and removes its socket (only if it is still ours).
async fn stop_generation(
    stop: watch::Sender<bool>,
    mut server: tokio::task::JoinHandle<anyhow::Result<()>>,
    path: &Path,
    identity: Option<u64>,
) {
    let _ = stop.send(true);
    match tokio::time::timeout(DRAIN, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %format!("{e:#}"), "server generation ended with an error")
        }
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => {
            tracing::warn!("server generation did not drain in time; aborting it");
            server.abort();
        }
    }
    if identity.is_some()
        && socket_identity(path) == identity
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(socket = %path.display(), error = %e, "removing socket");
    }
}
