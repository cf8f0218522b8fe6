//! Facts about one `task_struct`.
use oomtrace_common::{KernelLayout, TaskRecord};

use crate::{kread, memcg};

/// Fills pid, tgid, comm and the memory-cgroup id; returns whether the memcg id was found.
#[inline(always)]
pub fn fill(task: *const u8, l: &KernelLayout, out: &mut TaskRecord) -> bool {
    out.pid = kread::at::<u32>(task, l.task_pid).unwrap_or(0);
    out.tgid = kread::at::<u32>(task, l.task_tgid).unwrap_or(0);
    kread::bytes(task, l.task_comm, &mut out.comm);
    match memcg::of_task(task, l).and_then(|m| memcg::cgroup_id(m, l)) {
        Some(id) => {
            out.memcg_id = id;
            true
        }
        None => false,
    }
}

/// Whether SIGKILL is pending for the task, privately or for its thread group.
#[inline(always)]
pub fn sigkill_pending(task: *const u8, l: &KernelLayout) -> bool {
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let private = kread::at::<u64>(task, l.task_pending_signal).unwrap_or(0);
    let shared = kread::ptr(task, l.task_signal)
        .and_then(|s| kread::at::<u64>(s, l.signal_shared_pending_signal))
        .unwrap_or(0);
    (private | shared) & SIGKILL_BIT != 0
}
