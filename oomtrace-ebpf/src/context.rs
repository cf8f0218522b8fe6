//! The kernel's own OOM verdict: `struct oom_control` at `oom_kill_process`, kept per thread for
//! the victims marked inside that call.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use oomtrace_common::{Failure, OomContext};

use crate::{failure, maps::OOM_CONTEXT};

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

pub fn enter(oc: *const u8, hook: u32) {
    if oc.is_null() {
        failure::count_and_note(Failure::NullArgument, current_tid(), u64::from(hook));
        return;
    }
    let ctx = OomContext {
        oc: oc as u64,
        // Entry time and thread id together name one invocation.
        // SAFETY: the helper has no preconditions.
        incident: unsafe { bpf_ktime_get_ns() },
        hook,
        _pad: 0,
    };
    let tid = current_tid();
    if OOM_CONTEXT.insert(tid, ctx, 0).is_err() {
        failure::count_and_note(Failure::MapUpdate, tid, 0);
    }
}

pub fn exit() {
    let _ = OOM_CONTEXT.remove(current_tid());
}

/// The context of the current thread's `oom_kill_process` call, if it is inside one.
#[inline(always)]
pub fn current() -> Option<OomContext> {
    // SAFETY: the value is copied out immediately.
    unsafe { OOM_CONTEXT.get(current_tid()).copied() }
}
