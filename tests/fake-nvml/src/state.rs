//! Process-global state of one loaded copy of the fake library (NVML itself is process-global:
//! init is reference-counted and the last shutdown tears it down).
//!
//! Tests that need different fixtures at the same time load separate copies of the `.so` (each
//! copy has its own statics); see `crates/gpu-inventory/tests/common`.

use crate::machine::Machine;
use muster_api::machines;
use nvml_wrapper_sys::bindings::*;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Fixture name or JSON path.
pub const ENV_FIXTURE: &str = "MUSTER_FAKE_NVML_FIXTURE";
/// Node name: UUIDs become `MachineSpec::for_node(node)`'s.
pub const ENV_NODE: &str = "MUSTER_FAKE_NVML_NODE";
/// Fixture seconds per real second (default 1).
pub const ENV_TIME_SCALE: &str = "MUSTER_FAKE_NVML_TIME_SCALE";
/// From this fixture time on, `nvmlEventSetWait_v2` fails with `NVML_ERROR_UNKNOWN`.
pub const ENV_WAIT_ERROR_AFTER: &str = "MUSTER_FAKE_NVML_WAIT_ERROR_AFTER";

/// One event set: registered event mask per GPU, since when, and the next scripted XID to deliver.
#[derive(Debug)]
pub struct EventSet {
    pub masks: Vec<u64>,
    pub registered_at: Vec<f64>,
    pub cursor: usize,
}

#[derive(Debug)]
pub struct Loaded {
    pub machine: Machine,
    started: Instant,
    time_scale: f64,
    pub wait_error_after: Option<f64>,
    pub event_sets: HashMap<usize, EventSet>,
    next_set_id: usize,
}

impl Loaded {
    /// Fixture seconds since init.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.time_scale
    }

    /// Real duration until fixture time `t`.
    pub fn real_until(&self, t: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64(((t - self.now()) / self.time_scale).max(0.0))
    }

    pub fn new_event_set(&mut self) -> usize {
        // Ids start high and step by 16 so they look like (and are never confused with) pointers.
        self.next_set_id += 16;
        let id = self.next_set_id;
        let n = self.machine.gpu_count();
        self.event_sets.insert(
            id,
            EventSet {
                masks: vec![0; n],
                registered_at: vec![f64::INFINITY; n],
                cursor: 0,
            },
        );
        id
    }
}

#[derive(Debug, Default)]
pub struct State {
    refcount: u32,
    pub loaded: Option<Loaded>,
}

static STATE: Mutex<State> = Mutex::new(State {
    refcount: 0,
    loaded: None,
});

/// The state, even if a previous holder panicked (every export is unwind-guarded).
pub fn lock() -> MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn load() -> Result<Loaded, (nvmlReturn_t, String)> {
    let fixture = env(ENV_FIXTURE).ok_or_else(|| {
        (
            nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED,
            format!("{ENV_FIXTURE} is not set: no machine fixture, so no driver"),
        )
    })?;
    let unknown = |msg: String| (nvmlReturn_enum_NVML_ERROR_UNKNOWN, msg);
    let mut spec = machines::resolve(&fixture).map_err(|e| unknown(e.to_string()))?;
    if let Some(node) = env(ENV_NODE) {
        spec = spec.for_node(&node);
    }
    let time_scale = match env(ENV_TIME_SCALE) {
        None => 1.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| unknown(format!("{ENV_TIME_SCALE}={v:?} is not a positive number")))?,
    };
    let wait_error_after = match env(ENV_WAIT_ERROR_AFTER) {
        None => None,
        Some(v) => Some(
            v.parse::<f64>()
                .map_err(|_| unknown(format!("{ENV_WAIT_ERROR_AFTER}={v:?} is not a number")))?,
        ),
    };
    let machine = Machine::new(spec).map_err(|e| unknown(format!("fixture {fixture}: {e}")))?;
    Ok(Loaded {
        machine,
        started: Instant::now(),
        time_scale,
        wait_error_after,
        event_sets: HashMap::new(),
        next_set_id: 0x4d00_0000,
    })
}

/// `nvmlInit`: loads the fixture on the first call, counts later ones.
pub fn init() -> nvmlReturn_t {
    let mut state = lock();
    if state.refcount > 0 {
        state.refcount += 1;
        return nvmlReturn_enum_NVML_SUCCESS;
    }
    match load() {
        Ok(loaded) => {
            state.loaded = Some(loaded);
            state.refcount = 1;
            nvmlReturn_enum_NVML_SUCCESS
        }
        Err((code, msg)) => {
            // The only channel to a human: NVML's own errors are bare codes.
            eprintln!("muster-fake-nvml: nvmlInit failed: {msg}");
            code
        }
    }
}

/// `nvmlShutdown`: the last one drops the machine and every event set.
pub fn shutdown() -> nvmlReturn_t {
    let mut state = lock();
    match state.refcount {
        0 => nvmlReturn_enum_NVML_ERROR_UNINITIALIZED,
        1 => {
            state.refcount = 0;
            state.loaded = None;
            nvmlReturn_enum_NVML_SUCCESS
        }
        _ => {
            state.refcount -= 1;
            nvmlReturn_enum_NVML_SUCCESS
        }
    }
}

/// Runs `f` on the loaded machine, or answers `UNINITIALIZED`.
pub fn with_loaded(f: impl FnOnce(&mut Loaded) -> nvmlReturn_t) -> nvmlReturn_t {
    match lock().loaded.as_mut() {
        Some(loaded) => f(loaded),
        None => nvmlReturn_enum_NVML_ERROR_UNINITIALIZED,
    }
}
