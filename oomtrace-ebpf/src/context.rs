//! The kernel's own OOM verdict: `struct oom_control` at `oom_kill_process`, kept per thread for
//! the victims marked inside that call.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use oomtrace_common::{Failure, OomContext};

use crate::{
    failure::{self, log_warn},
    maps::OOM_CONTEXT,
};

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

pub fn enter(oc: *const u8, hook: u32) {
    if oc.is_null() {
        failure::count(Failure::NullArgument);
        log_warn!("oom_kill_process hook {:x}: null oom_control", hook);
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
        failure::count(Failure::MapUpdate);
        log_warn!(
            "thread {}: oom_kill_process context not stored, constraint will be inferred",
            tid
        );
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
