//! Library-level exports: init/shutdown, error strings, versions, device enumeration.

use crate::ffi::{gpu_handle, guard, put, write_str};
use crate::state::{self, with_loaded};
use nvml_wrapper_sys::bindings::*;
use std::ffi::{CStr, c_char, c_int, c_uint};

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    guard(state::init)
}

/// Flags (no GPUs / no attach) change nothing for a fixture-backed library.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    guard(state::init)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guard(state::shutdown)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    let s: &'static CStr = match result {
        nvmlReturn_enum_NVML_SUCCESS => c"Success",
        nvmlReturn_enum_NVML_ERROR_UNINITIALIZED => c"Uninitialized",
        nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED => c"Not Supported",
        nvmlReturn_enum_NVML_ERROR_NOT_FOUND => c"Not Found",
        nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED => c"Driver Not Loaded",
        nvmlReturn_enum_NVML_ERROR_TIMEOUT => c"Timeout",
        nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST => c"GPU is lost",
        nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH => c"Argument version mismatch",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

/// # Safety
/// `version` must be null or valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    guard(|| with_loaded(|l| unsafe { write_str(version, length, &l.machine.spec.driver_version) }))
}

/// `12.4` -> 12040, NVML's `major * 1000 + minor * 10`.
fn cuda_version(s: &str) -> Option<c_int> {
    let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
    Some(major.parse::<c_int>().ok()? * 1000 + minor.parse::<c_int>().ok()? * 10)
}

/// # Safety
/// `out` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(out: *mut c_int) -> nvmlReturn_t {
    guard(|| {
        with_loaded(|l| match cuda_version(&l.machine.spec.cuda_version) {
            // SAFETY: forwarded caller contract.
            Some(v) => unsafe { put(out, v) },
            None => nvmlReturn_enum_NVML_ERROR_UNKNOWN,
        })
    })
}

/// # Safety
/// `out` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(out: *mut c_int) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { nvmlSystemGetCudaDriverVersion(out) }
}

/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    guard(|| with_loaded(|l| unsafe { put(count, l.machine.gpu_count() as c_uint) }))
}

/// Handles of lost GPUs are still handed out; queries on them answer `GPU_IS_LOST`.
///
/// # Safety
/// `device` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard(|| {
        with_loaded(|l| {
            if index as usize >= l.machine.gpu_count() {
                return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
            }
            // SAFETY: forwarded caller contract.
            unsafe { put(device, gpu_handle(index as usize)) }
        })
    })
}

/// # Safety
/// `uuid` must be null or a NUL-terminated string; `device` null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard(|| {
        if uuid.is_null() {
            return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null and NUL-terminated per the caller.
        let wanted = unsafe { CStr::from_ptr(uuid) }.to_string_lossy();
        with_loaded(
            |l| match l.machine.spec.gpus.iter().position(|g| g.uuid == wanted) {
                // SAFETY: forwarded caller contract.
                Some(i) => unsafe { put(device, gpu_handle(i)) },
                None => nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cuda_versions_encode_like_nvml() {
        assert_eq!(super::cuda_version("12.4"), Some(12040));
        assert_eq!(super::cuda_version("11"), Some(11000));
        assert_eq!(super::cuda_version("x"), None);
    }
}
