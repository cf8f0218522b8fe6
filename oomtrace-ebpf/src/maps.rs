//! Maps shared by the programs, and the layout global.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    Global,
};
use oomtrace_common::{CgroupPathRecord, KernelLayout, OomContext};

/// Kernel offsets, filled in by userspace at load time.
#[unsafe(no_mangle)]
pub static LAYOUT: Global<KernelLayout> = Global::new(KernelLayout::absent());

/// Victim records to userspace. Kills are rare; 256 KiB holds well over a thousand records.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Records that could not be reserved in `EVENTS`, per CPU (index 0).
#[map]
pub static EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where a [`CgroupPathRecord`] is built (too big for the BPF stack), one per CPU.
#[map]
pub static PATH_SCRATCH: PerCpuArray<CgroupPathRecord> = PerCpuArray::with_max_entries(1, 0);

/// The `oom_kill_process` context of each thread currently inside it, by thread id.
#[map]
pub static OOM_CONTEXT: HashMap<u32, OomContext> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
pub fn count_lost() {
    if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *lost += 1 };
    }
}
