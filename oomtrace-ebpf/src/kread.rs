//! Reads of kernel memory at offsets that came from BTF. A read that faults counts its
//! [`Failure`]; an absent offset or a null base is not a failure (the kernel lacks the field, or
//! the pointer is legitimately empty).
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use oomtrace_common::{Failure, ABSENT};

use crate::failure;

/// Reads a `T` at `base + off`; `None` when the offset is absent, the base is null or the
/// read faults (counted as `why`).
#[inline(always)]
pub fn at<T: Copy>(base: *const u8, off: u32, why: Failure) -> Option<T> {
    if base.is_null() || off == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    match unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            failure::count(why);
            None
        }
    }
}

/// Reads a pointer at `base + off`, `None` when null.
#[inline(always)]
pub fn ptr(base: *const u8, off: u32, why: Failure) -> Option<*const u8> {
    at::<*const u8>(base, off, why).filter(|p| !p.is_null())
}

/// Copies bytes at `base + off` into `dst`.
#[inline(always)]
pub fn bytes(base: *const u8, off: u32, dst: &mut [u8], why: Failure) -> bool {
    if base.is_null() || off == ABSENT {
        return false;
    }
    // SAFETY: as above.
    let ok = unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(off as usize), dst).is_ok() };
    if !ok {
        failure::count(why);
    }
    ok
}
