//! oomtrace's kernel side: one record per OOM victim, joined with the kernel's own OOM context.
//!
//! Programs are thin wrappers around fallible `try_*` functions (aya's style); those of the kill
//! path end by logging the failure they noted, if any (`failure::log_noted`, at `-v` only). Userspace picks
//! which of them to load and attach from its probe table; every kernel offset they use comes
//! from the `LAYOUT` global that userspace fills in from BTF.
#![no_std]
#![no_main]
// The fetch-and-add of record sequence numbers (`seq.rs`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod cgpath;
mod context;
mod exec;
mod failure;
mod kread;
mod maps;
mod memcg;
mod pressure;
mod reclaim;
mod seq;
mod signal;
mod stats;
mod task;
mod victim;

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
};
use oomtrace_common::hook;

/// `oom:mark_victim` as a BTF tracepoint whose first argument is the victim's `task_struct`
/// (kernels >= 6.9, and 6.6.y stable).
#[btf_tracepoint(function = "mark_victim")]
pub fn oomtrace_tp_btf_mark_victim(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    victim::emit_from_task(task, hook::TP_BTF_MARK_VICTIM);
    failure::log_noted();
    0
}

/// `mark_oom_victim(struct task_struct *tsk)` via fentry (kernels whose tracepoint carries only
/// the pid).
#[fentry(function = "mark_oom_victim")]
pub fn oomtrace_fentry_mark_oom_victim(ctx: FEntryContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    victim::emit_from_task(task, hook::FENTRY_MARK_OOM_VICTIM);
    failure::log_noted();
    0
}

/// `mark_oom_victim` via kprobe.
#[kprobe]
pub fn oomtrace_kprobe_mark_oom_victim(ctx: ProbeContext) -> u32 {
    let task = ctx.arg::<*const u8>(0).unwrap_or(core::ptr::null());
    victim::emit_from_task(task, hook::KPROBE_MARK_OOM_VICTIM);
    failure::log_noted();
    0
}

/// The classic `oom:mark_victim` tracepoint: fields at the offsets of its tracefs `format`.
#[tracepoint]
pub fn oomtrace_tracepoint_mark_victim(ctx: TracePointContext) -> u32 {
    victim::emit_from_tracepoint(&ctx);
    failure::log_noted();
    0
}

/// Entry of `oom_kill_process(struct oom_control *oc, const char *message)`.
#[fentry(function = "oom_kill_process")]
pub fn oomtrace_fentry_oom_kill_process(ctx: FEntryContext) -> i32 {
    let oc: *const u8 = ctx.arg(0);
    context::enter(oc, hook::FENTRY_OOM_KILL_PROCESS);
    failure::log_noted();
    0
}

#[fexit(function = "oom_kill_process")]
pub fn oomtrace_fexit_oom_kill_process(_ctx: FExitContext) -> i32 {
    context::exit();
    0
}

#[kprobe]
pub fn oomtrace_kprobe_oom_kill_process(ctx: ProbeContext) -> u32 {
    let oc = ctx.arg::<*const u8>(0).unwrap_or(core::ptr::null());
    context::enter(oc, hook::KPROBE_OOM_KILL_PROCESS);
    failure::log_noted();
    0
}

#[kretprobe]
pub fn oomtrace_kretprobe_oom_kill_process(_ctx: RetProbeContext) -> u32 {
    context::exit();
    0
}

/// `memcg:mod_memcg_state(memcg, item, val)` (6.13+): kernel memory and socket charges.
#[btf_tracepoint(function = "mod_memcg_state")]
pub fn oomtrace_tp_btf_mod_memcg_state(ctx: BtfTracePointContext) -> i32 {
    stats::on_update(ctx.arg(0), ctx.arg(1), i64::from(ctx.arg::<i32>(2)));
    0
}

/// `memcg:mod_memcg_lruvec_state(memcg, item, val)` (6.13+): anon, file, shmem, slab.
#[btf_tracepoint(function = "mod_memcg_lruvec_state")]
pub fn oomtrace_tp_btf_mod_memcg_lruvec_state(ctx: BtfTracePointContext) -> i32 {
    stats::on_update(ctx.arg(0), ctx.arg(1), i64::from(ctx.arg::<i32>(2)));
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn oomtrace_tp_btf_memcg_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim::begin();
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn oomtrace_tp_btf_memcg_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    reclaim::end();
    0
}

#[tracepoint]
pub fn oomtrace_tracepoint_memcg_reclaim_begin(_ctx: TracePointContext) -> u32 {
    reclaim::begin();
    0
}

#[tracepoint]
pub fn oomtrace_tracepoint_memcg_reclaim_end(_ctx: TracePointContext) -> u32 {
    reclaim::end();
    0
}

/// `sched:sched_process_exec` as a BTF tracepoint: `current` is the new image.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn oomtrace_tp_btf_sched_process_exec(_ctx: BtfTracePointContext) -> i32 {
    exec::emit();
    0
}

/// The classic `sched/sched_process_exec` tracepoint (its fields are not needed).
#[tracepoint]
pub fn oomtrace_tracepoint_sched_process_exec(_ctx: TracePointContext) -> u32 {
    exec::emit();
    0
}

/// `signal:signal_generate(sig, info, task, group, result)`: SIGKILLs only, checked first.
#[btf_tracepoint(function = "signal_generate")]
pub fn oomtrace_tp_btf_signal_generate(ctx: BtfTracePointContext) -> i32 {
    if ctx.arg::<u64>(0) as i32 != signal::SIGKILL {
        return 0;
    }
    signal::emit_from_btf(
        ctx.arg::<u64>(1),
        ctx.arg::<*const u8>(2),
        ctx.arg::<u64>(3) as i32,
        ctx.arg::<u64>(4) as i32,
    );
    0
}

/// The classic `signal:signal_generate` tracepoint: fields at the offsets of its `format`.
#[tracepoint]
pub fn oomtrace_tracepoint_signal_generate(ctx: TracePointContext) -> u32 {
    signal::emit_from_tracepoint(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
