//! A deliberately incomplete NVML: one GPU that can be counted and named, nothing else.
//!
//! Tests load it to check that a missing symbol is a clean, typed error for the caller (nvml-wrapper
//! resolves symbols one by one and fails only the call that needs a missing one). `nvmlShutdown`
//! and `nvmlEventSetFree` are present because nvml-wrapper's destructors require them.

use std::ffi::{c_char, c_uint, c_void};

const SUCCESS: c_uint = 0;
const INVALID_ARGUMENT: c_uint = 2;
const INSUFFICIENT_SIZE: c_uint = 7;

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> c_uint {
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> c_uint {
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlEventSetFree(_set: *mut c_void) -> c_uint {
    SUCCESS
}

/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> c_uint {
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: non-null, valid per the caller.
    unsafe { *count = 1 };
    SUCCESS
}

/// # Safety
/// `device` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut *mut c_void,
) -> c_uint {
    if index != 0 || device.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: non-null, valid per the caller.
    unsafe { *device = std::ptr::without_provenance_mut(0x1000) };
    SUCCESS
}

/// # Safety
/// `name` must be null or valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    _device: *mut c_void,
    name: *mut c_char,
    length: c_uint,
) -> c_uint {
    let text = b"Partial GPU\0";
    if name.is_null() {
        return INVALID_ARGUMENT;
    }
    if (length as usize) < text.len() {
        return INSUFFICIENT_SIZE;
    }
    // SAFETY: `length >= text.len()` bytes are valid per the caller.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), name, text.len()) };
    SUCCESS
}
