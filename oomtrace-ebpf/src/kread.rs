//! Reads of kernel memory at offsets that came from BTF.
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use oomtrace_common::ABSENT;

/// Reads a `T` at `base + off`; `None` when the offset is absent, the base is null or the
/// read faults.
#[inline(always)]
pub fn at<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() || off == ABSENT {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

/// Reads a pointer at `base + off`, `None` when null.
#[inline(always)]
pub fn ptr(base: *const u8, off: u32) -> Option<*const u8> {
    at::<*const u8>(base, off).filter(|p| !p.is_null())
}

/// Copies bytes at `base + off` into `dst`.
#[inline(always)]
pub fn bytes(base: *const u8, off: u32, dst: &mut [u8]) -> bool {
    if base.is_null() || off == ABSENT {
        return false;
    }
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(off as usize), dst).is_ok() }
}
