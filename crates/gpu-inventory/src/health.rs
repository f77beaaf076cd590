//! XID health watcher: a dedicated thread blocks in `nvmlEventSetWait` and turns critical XID
//! events into per-GPU health, like NVIDIA's device plugin does.
//!
//! - A critical XID makes its GPU unhealthy, except the application XIDs in
//!   [`APPLICATION_XIDS`] (REFERENCE.md §2), which are counted but leave it healthy.
//! - A failing wait (anything but a timeout) marks every GPU unhealthy: events can no longer be
//!   trusted to arrive.
//! - After each wait, the GPUs still healthy are probed; one answering `GPU_IS_LOST` is marked
//!   unhealthy (only that one).
//!
//! Unhealthy is sticky for the watcher's lifetime: recovering a GPU takes a reset, after which the
//! agent reopens the inventory.

use crate::error::{Context, InventoryError};
use crate::inventory::{Identity, Inventory};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// XIDs caused by applications, not the GPU (NVIDIA device plugin's skip list).
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Longest block in one NVML wait; also bounds how long `stop()` takes and the lost-GPU probe period.
    pub wait_timeout: Duration,
    /// XIDs that leave a GPU healthy.
    pub ignored_xids: Vec<u64>,
    /// Probe healthy GPUs for `GPU_IS_LOST` after each wait.
    pub probe_lost: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            wait_timeout: Duration::from_secs(1),
            ignored_xids: APPLICATION_XIDS.to_vec(),
            probe_lost: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum HealthCause {
    Xid,
    GpuLost,
    EventWaitFailed { error: String },
}

/// A health change or an XID on one GPU. `healthy` is the GPU's health after the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthEvent {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    /// The XID, for XID events (`None` if NVML could not tell which).
    pub xid: Option<u64>,
    pub healthy: bool,
    pub cause: HealthCause,
}

/// Per-GPU health as the watcher knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuHealthState {
    pub index: u32,
    pub uuid: String,
    pub healthy: bool,
    /// Why it is unhealthy, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// XID events seen (all kinds).
    pub xid_count: u64,
    /// Value of the last XID (what DCGM's `DCGM_FI_DEV_XID_ERRORS` reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_xid: Option<u64>,
}

impl GpuHealthState {
    /// A GPU with no health events yet.
    pub fn healthy(index: u32, uuid: impl Into<String>) -> GpuHealthState {
        GpuHealthState {
            index,
            uuid: uuid.into(),
            healthy: true,
            ..GpuHealthState::default()
        }
    }
}

/// A running watcher. Dropping it stops the thread (within one wait timeout).
pub struct HealthWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<Vec<GpuHealthState>>>,
}

impl std::fmt::Debug for HealthWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthWatcher")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

fn locked(state: &Mutex<Vec<GpuHealthState>>) -> MutexGuard<'_, Vec<GpuHealthState>> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl HealthWatcher {
    /// Current health and XID counters of every GPU, by index.
    pub fn health(&self) -> Vec<GpuHealthState> {
        locked(&self.state).clone()
    }

    /// Asks the thread to stop and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("health watcher thread panicked");
        }
    }
}

impl Drop for HealthWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inventory {
    /// Starts the XID watcher. Returns once every GPU is registered (or failed to register: a lost
    /// GPU is reported unhealthy); errors if NVML cannot create an event set at all.
    pub fn watch_health(
        &self,
        config: WatchConfig,
    ) -> Result<(HealthWatcher, Receiver<HealthEvent>), InventoryError> {
        let state = Arc::new(Mutex::new(
            self.gpus
                .iter()
                .map(|g| GpuHealthState::healthy(g.index, g.uuid.clone()))
                .collect(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (events_tx, events_rx) = channel();
        let (ready_tx, ready_rx) = sync_channel(1);
        let worker = Worker {
            nvml: Arc::clone(&self.nvml),
            gpus: self.gpus.clone(),
            config,
            state: Arc::clone(&state),
            events: events_tx,
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("nvml-health".into())
            .spawn(move || worker.run(ready_tx))?;
        let mut watcher = HealthWatcher {
            stop,
            thread: Some(thread),
            state,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((watcher, events_rx)),
            Ok(Err(e)) => {
                watcher.shutdown();
                Err(e)
            }
            Err(_) => {
                watcher.shutdown();
                Err(InventoryError::Unexpected {
                    call: "health watcher",
                    gpu: None,
                    detail: "thread exited during setup".into(),
                })
            }
        }
    }
}

struct Worker {
    nvml: Arc<Nvml>,
    gpus: Vec<Identity>,
    config: WatchConfig,
    state: Arc<Mutex<Vec<GpuHealthState>>>,
    events: Sender<HealthEvent>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self, ready: SyncSender<Result<(), InventoryError>>) {
        let nvml = Arc::clone(&self.nvml);
        let set = match self.register(&nvml) {
            Ok(set) => {
                let _ = ready.send(Ok(()));
                set
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        // Raw handles identify the GPU of an event even when it can no longer answer queries.
        let handles: Vec<_> = self
            .gpus
            .iter()
            .map(|g| {
                nvml.device_by_index(g.index)
                    .ok()
                    .map(|d| unsafe { d.handle() })
            })
            .collect();
        let timeout_ms = u32::try_from(self.config.wait_timeout.as_millis()).unwrap_or(u32::MAX);
        while !self.stop.load(Ordering::Relaxed) {
            match set.wait(timeout_ms) {
                Ok(event) => {
                    // SAFETY: only compared, never dereferenced.
                    let handle = unsafe { event.device.handle() };
                    let Some(gpu) = handles.iter().position(|h| *h == Some(handle)) else {
                        tracing::warn!("NVML event for an unknown device handle");
                        continue;
                    };
                    if event.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        let xid = match event.event_data {
                            Some(XidError::Value(v)) => Some(v),
                            _ => None,
                        };
                        self.on_xid(gpu, xid);
                    }
                }
                Err(NvmlError::Timeout) => {}
                Err(e) => {
                    tracing::error!(error = %e, "NVML event wait failed; marking all GPUs unhealthy");
                    for gpu in 0..self.gpus.len() {
                        self.mark(
                            gpu,
                            None,
                            HealthCause::EventWaitFailed {
                                error: e.to_string(),
                            },
                            false,
                        );
                    }
                    // Avoid spinning on an error that persists.
                    std::thread::sleep(self.config.wait_timeout);
                }
            }
            if self.config.probe_lost {
                self.probe_lost(&nvml);
            }
        }
        tracing::debug!("health watcher stopped");
    }

    /// An event set with every reachable GPU registered for critical XIDs.
    fn register<'n>(&self, nvml: &'n Nvml) -> Result<EventSet<'n>, InventoryError> {
        let mut skip = vec![false; self.gpus.len()];
        // nvml-wrapper frees the set when a registration fails, so start over without that GPU.
        'attempt: loop {
            let mut set = nvml.create_event_set().ctx("nvmlEventSetCreate", None)?;
            for (pos, g) in self.gpus.iter().enumerate().filter(|(p, _)| !skip[*p]) {
                let device = nvml
                    .device_by_index(g.index)
                    .ctx("nvmlDeviceGetHandleByIndex_v2", Some(g.index))?;
                match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                    Ok(s) => set = s,
                    Err(e) => {
                        skip[pos] = true;
                        match e.error {
                            NvmlError::GpuLost => self.mark(pos, None, HealthCause::GpuLost, false),
                            NvmlError::FailedToLoadSymbol(_) => {
                                return Err(InventoryError::nvml(
                                    "nvmlDeviceRegisterEvents",
                                    Some(g.index),
                                    e.error,
                                ));
                            }
                            other => {
                                tracing::warn!(gpu = g.index, error = %other, "no XID events for this GPU")
                            }
                        }
                        continue 'attempt;
                    }
                }
            }
            return Ok(set);
        }
    }

    fn on_xid(&self, gpu: usize, xid: Option<u64>) {
        let critical = !xid.is_some_and(|x| self.config.ignored_xids.contains(&x));
        tracing::warn!(gpu, ?xid, critical, "XID error");
        self.mark(gpu, xid, HealthCause::Xid, !critical);
    }

    /// Records an event: XIDs are always counted and reported; other causes only on a change.
    fn mark(&self, gpu: usize, xid: Option<u64>, cause: HealthCause, stays_healthy: bool) {
        let event = {
            let mut state = locked(&self.state);
            let Some(s) = state.get_mut(gpu) else { return };
            let was_healthy = s.healthy;
            if cause == HealthCause::Xid {
                s.xid_count += 1;
                s.last_xid = xid.or(s.last_xid);
            }
            if !stays_healthy && s.healthy {
                s.healthy = false;
                s.reason = Some(match (&cause, xid) {
                    (HealthCause::Xid, Some(x)) => format!("XID {x}"),
                    (HealthCause::Xid, None) => "unknown XID".to_string(),
                    (HealthCause::GpuLost, _) => "GPU is lost".to_string(),
                    (HealthCause::EventWaitFailed { error }, _) => {
                        format!("NVML event wait failed: {error}")
                    }
                });
            }
            if cause != HealthCause::Xid && was_healthy == s.healthy {
                return;
            }
            HealthEvent {
                gpu_index: s.index,
                gpu_uuid: s.uuid.clone(),
                xid,
                healthy: s.healthy,
                cause,
            }
        };
        // A dropped receiver only means nobody listens; the state above is still kept.
        let _ = self.events.send(event);
    }

    fn probe_lost(&self, nvml: &Nvml) {
        let healthy: Vec<usize> = locked(&self.state)
            .iter()
            .enumerate()
            .filter(|(_, s)| s.healthy)
            .map(|(i, _)| i)
            .collect();
        for gpu in healthy {
            let index = self.gpus[gpu].index;
            let lost = match nvml.device_by_index(index) {
                Ok(d) => matches!(d.pci_info(), Err(NvmlError::GpuLost)),
                Err(e) => matches!(e, NvmlError::GpuLost),
            };
            if lost {
                tracing::error!(gpu = index, "GPU is lost");
                self.mark(gpu, None, HealthCause::GpuLost, false);
            }
        }
    }
}
