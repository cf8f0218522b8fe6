//! Facts about one `task_struct`.
use oomtrace_common::{field, Failure, KernelLayout, TaskRecord};

use crate::{kread, memcg};

/// Fills pid, tgid, comm and the memory-cgroup id. Returns the `field::VICTIM_PID`,
/// `VICTIM_TGID`, `VICTIM_COMM` and `VICTIM_MEMCG` bits of the reads that succeeded.
#[inline(always)]
pub fn fill(task: *const u8, l: &KernelLayout, out: &mut TaskRecord) -> u32 {
    let mut fields = 0;
    if let Some(pid) = kread::at::<u32>(task, l.task_pid, Failure::ReadTask) {
        out.pid = pid;
        fields |= field::VICTIM_PID;
    }
    if let Some(tgid) = kread::at::<u32>(task, l.task_tgid, Failure::ReadTask) {
        out.tgid = tgid;
        fields |= field::VICTIM_TGID;
    }
    if kread::bytes(task, l.task_comm, &mut out.comm, Failure::ReadTask) {
        fields |= field::VICTIM_COMM;
    }
    if let Some(id) = memcg::of_task(task, l).and_then(|m| memcg::cgroup_id(m, l)) {
        out.memcg_id = id;
        fields |= field::VICTIM_MEMCG;
    }
    fields
}

/// Whether SIGKILL is pending for the task, privately or for its thread group.
#[inline(always)]
pub fn sigkill_pending(task: *const u8, l: &KernelLayout) -> bool {
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let private = kread::at::<u64>(task, l.task_pending_signal, Failure::ReadTask).unwrap_or(0);
    let shared = kread::ptr(task, l.task_signal, Failure::ReadTask)
        .and_then(|s| kread::at::<u64>(s, l.signal_shared_pending_signal, Failure::ReadTask))
        .unwrap_or(0);
    (private | shared) & SIGKILL_BIT != 0
}

/// Whether the task's process is already an OOM victim (`tsk_is_oom_victim()`). A second
/// `mark_oom_victim()` of it returns early without the tracepoint (the chosen task of a
/// `memory.oom.group` kill is marked twice), so function-entry hooks skip it too.
#[inline(always)]
pub fn is_oom_victim(task: *const u8, l: &KernelLayout) -> bool {
    kread::ptr(task, l.task_signal, Failure::ReadTask)
        .and_then(|s| kread::ptr(s, l.signal_oom_mm, Failure::ReadTask))
        .is_some()
}
