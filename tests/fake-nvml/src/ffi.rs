//! FFI plumbing shared by the exports: unwind guards, opaque handles, out-parameters.

use crate::machine::Machine;
use nvml_wrapper_sys::bindings::*;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs an export body; a panic becomes `NVML_ERROR_UNKNOWN` instead of unwinding into C.
pub fn guard(f: impl FnOnce() -> nvmlReturn_t) -> nvmlReturn_t {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(nvmlReturn_enum_NVML_ERROR_UNKNOWN)
}

/// Handles are never dereferenced by callers, so they are plain tagged addresses:
/// `BASE + gpu * 256` for a GPU, `+ 1 + k` for its MIG instance `k`.
const HANDLE_BASE: usize = 0x6d75_0000;
const HANDLE_STRIDE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Gpu(usize),
    Mig(usize, usize),
}

impl Target {
    pub fn gpu(self) -> usize {
        match self {
            Target::Gpu(g) | Target::Mig(g, _) => g,
        }
    }
}

pub fn gpu_handle(gpu: usize) -> nvmlDevice_t {
    std::ptr::without_provenance_mut(HANDLE_BASE + gpu * HANDLE_STRIDE)
}

pub fn mig_handle(gpu: usize, k: usize) -> nvmlDevice_t {
    std::ptr::without_provenance_mut(HANDLE_BASE + gpu * HANDLE_STRIDE + 1 + k)
}

/// Decodes a handle against the machine; anything else is `None` (-> `INVALID_ARGUMENT`).
pub fn decode(machine: &Machine, handle: nvmlDevice_t) -> Option<Target> {
    let off = (handle as usize).checked_sub(HANDLE_BASE)?;
    let (gpu, sub) = (off / HANDLE_STRIDE, off % HANDLE_STRIDE);
    let spec = machine.spec.gpus.get(gpu)?;
    match sub {
        0 => Some(Target::Gpu(gpu)),
        k => {
            let mig = spec.mig.as_ref()?;
            (k - 1 < mig.instances as usize).then_some(Target::Mig(gpu, k - 1))
        }
    }
}

/// Copies `s` NUL-terminated into a caller buffer of `len` bytes.
///
/// # Safety
/// `buf` must be null or valid for `len` bytes.
pub unsafe fn write_str(buf: *mut c_char, len: u32, s: &str) -> nvmlReturn_t {
    if buf.is_null() {
        return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
    }
    // SAFETY: the caller promised `len` bytes and we write `bytes.len() + 1 <= len`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len());
        *buf.add(bytes.len()) = 0;
    }
    nvmlReturn_enum_NVML_SUCCESS
}

/// Writes `value` through an out-pointer, `INVALID_ARGUMENT` if it is null.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
pub unsafe fn put<T>(out: *mut T, value: T) -> nvmlReturn_t {
    if out.is_null() {
        return nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null and, per the caller, valid for writes.
    unsafe { out.write(value) };
    nvmlReturn_enum_NVML_SUCCESS
}

/// Copies a string into a fixed C char array (truncating, always NUL-terminated).
pub fn fill_chars<const N: usize>(dst: &mut [c_char; N], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes().take(N.saturating_sub(1))) {
        *d = b as c_char;
    }
    if let Some(last) = dst.get_mut(s.len().min(N.saturating_sub(1))) {
        *last = 0;
    }
}
