//! Event-set exports: scripted XID errors delivered as `nvmlEventTypeXidCriticalError`.
//!
//! An event set receives the scripted XIDs of the GPUs registered on it for critical-XID events,
//! whose time is at or after the registration, once each, in time order.

use crate::device::with_device;
use crate::ffi::{gpu_handle, guard, put};
use crate::state::{self, with_loaded};
use nvml_wrapper_sys::bindings::*;
use std::ffi::{c_uint, c_ulonglong};
use std::time::{Duration, Instant};

const XID: u64 = nvmlEventTypeXidCriticalError as u64;
/// What every fake GPU can report (single/double-bit ECC, P-state, critical XID, clock).
const SUPPORTED: u64 = (nvmlEventTypeSingleBitEccError
    | nvmlEventTypeDoubleBitEccError
    | nvmlEventTypePState
    | nvmlEventTypeXidCriticalError
    | nvmlEventTypeClock) as u64;
/// Longest sleep between checks, so a freed set or a shutdown is noticed promptly.
const POLL: Duration = Duration::from_millis(50);

fn set_id(set: nvmlEventSet_t) -> usize {
    set as usize
}

/// # Safety
/// `set` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    guard(|| {
        if set.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        with_loaded(|l| {
            let id = l.new_event_set();
            // SAFETY: non-null, valid per the caller.
            unsafe { put(set, std::ptr::without_provenance_mut(id)) }
        })
    })
}

/// # Safety
/// `event_types` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    event_types: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    with_device(device, |_, _, _| unsafe { put(event_types, SUPPORTED) })
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    event_types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    with_device(device, |l, target, now| {
        if event_types & !SUPPORTED != 0 {
            return nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
        }
        let Some(es) = l.event_sets.get_mut(&set_id(set)) else {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        };
        let g = target.gpu();
        es.masks[g] |= event_types;
        es.registered_at[g] = es.registered_at[g].min(now);
        nvmlReturn_enum_NVML_SUCCESS
    })
}

enum Step {
    Done(nvmlReturn_t),
    /// Nothing deliverable yet: sleep up to this long before looking again.
    Wait(Duration),
}

/// One look at the set under the lock: deliver an event, fail, or say how long to sleep.
fn step(set: usize, data: *mut nvmlEventData_t) -> Step {
    let mut state = state::lock();
    let Some(l) = state.loaded.as_mut() else {
        return Step::Done(nvmlReturn_enum_NVML_ERROR_UNINITIALIZED);
    };
    let now = l.now();
    if l.wait_error_after.is_some_and(|t| t <= now) {
        return Step::Done(nvmlReturn_enum_NVML_ERROR_UNKNOWN);
    }
    let error_in = l.wait_error_after.map(|t| l.real_until(t));
    let Some(es) = l.event_sets.get_mut(&set) else {
        return Step::Done(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
    };
    let xids = &l.machine.xids;
    while let Some(e) = xids.get(es.cursor) {
        if e.at > now {
            let until = l.real_until(e.at);
            return Step::Wait(error_in.map_or(until, |d| d.min(until)));
        }
        es.cursor += 1;
        if es.masks[e.gpu] & XID != 0 && e.at >= es.registered_at[e.gpu] {
            let event = nvmlEventData_t {
                device: gpu_handle(e.gpu),
                eventType: XID,
                eventData: e.xid,
                // Not attributable to a MIG instance (NVML's "invalid" id).
                gpuInstanceId: u32::MAX,
                computeInstanceId: u32::MAX,
            };
            // SAFETY: `data` was null-checked by the caller of `step`.
            return Step::Done(unsafe { put(data, event) });
        }
    }
    Step::Wait(error_in.unwrap_or(Duration::MAX))
}

/// Blocks up to `timeout_ms` for the next event; `TIMEOUT` when none arrives.
///
/// # Safety
/// `data` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    guard(|| {
        if data.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        loop {
            let sleep = match step(set_id(set), data) {
                Step::Done(code) => return code,
                Step::Wait(until) => until,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return nvmlReturn_enum_NVML_ERROR_TIMEOUT;
            }
            // The lock is released while sleeping so other calls (and other waits) proceed.
            std::thread::sleep(sleep.min(left).min(POLL).max(Duration::from_millis(1)));
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    guard(|| {
        with_loaded(|l| match l.event_sets.remove(&set_id(set)) {
            Some(_) => nvmlReturn_enum_NVML_SUCCESS,
            None => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        })
    })
}
