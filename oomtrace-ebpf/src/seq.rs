//! Record sequence numbers: each kind of record userspace reports is numbered 1, 2, 3, … in
//! the kernel (`SEQ`), the number taken before the record is reserved, so that a record lost
//! for want of ring room leaves a gap userspace can see.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

pub use oomtrace_common::seq::{KILL, PRESSURE, SIGKILL};

use crate::maps::SEQ;

/// The next number of sequence `kind` (`oomtrace_common::seq`); 0 if the map slot is missing.
#[inline(always)]
pub fn next(kind: u32) -> u64 {
    match SEQ.get_ptr_mut(kind) {
        // `AtomicU64::fetch_add` is not offered on this target (no compare-and-swap); the
        // intrinsic is BPF's own fetch-and-add. SeqCst, not Relaxed: LLVM 22 lowers a relaxed
        // one to the add without fetch (`lock +=`) and hands back the addend as the "old"
        // value (every record numbered 2).
        // SAFETY: the slot is aligned map memory that outlives the program; the atomic add
        // keeps programs on other CPUs from taking the same number.
        Some(p) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1) }) + 1,
        None => 0,
    }
}
