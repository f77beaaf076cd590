//! Keeps the GPU allocations current by polling `List`. The kubelet may be absent (no socket
//! yet), restart (socket replaced), or answer errors: each is logged once per outage, the state
//! says "down" with no allocations (metrics lose their pod labels rather than keep stale ones),
//! and the loop reconnects with exponential backoff. It never ends on its own.

use super::proto::ListPodResourcesRequest;
use super::{PodResourcesState, allocations, client};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

pub struct WatchConfig {
    pub socket: PathBuf,
    /// Poll period while connected.
    pub interval: Duration,
    /// First and longest wait between reconnection attempts.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound of one connect or `List`.
    pub call_timeout: Duration,
}

impl WatchConfig {
    pub fn new(socket: PathBuf, interval: Duration) -> WatchConfig {
        WatchConfig {
            socket,
            interval,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// Runs until the receiver side of `state` is gone.
pub async fn run(config: WatchConfig, state: watch::Sender<PodResourcesState>) {
    let mut backoff = config.min_backoff;
    let mut client: Option<client::Client> = None;
    let mut was_up = None::<bool>;
    while !state.is_closed() {
        if client.is_none() {
            match client::connect(&config.socket, config.call_timeout).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    if was_up != Some(false) {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "pod-resources unavailable; GPU metrics carry no pod labels until it is back"
                        );
                    }
                    was_up = Some(false);
                    set(&state, PodResourcesState::default());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        match c.list(ListPodResourcesRequest {}).await {
            Ok(response) => {
                if was_up != Some(true) {
                    tracing::info!(socket = %config.socket.display(), "pod-resources connected");
                }
                was_up = Some(true);
                backoff = config.min_backoff;
                set(
                    &state,
                    PodResourcesState {
                        up: true,
                        allocations: allocations(response.get_ref()),
                    },
                );
                tokio::time::sleep(config.interval).await;
            }
            Err(status) => {
                if was_up != Some(false) {
                    tracing::warn!(error = %status, "pod-resources List failed; reconnecting");
                }
                was_up = Some(false);
                // A restarted kubelet serves a new socket: dial it afresh.
                client = None;
                set(&state, PodResourcesState::default());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

/// Publishes only changes, so watchers wake up only when allocations move.
fn set(state: &watch::Sender<PodResourcesState>, new: PodResourcesState) {
    state.send_if_modified(|old| {
        if *old == new {
            false
        } else {
            *old = new;
            true
        }
    });
}
