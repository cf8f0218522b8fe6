//! One `SigkillRecord` per SIGKILL generated (`signal:signal_generate`), on `PROCESS_EVENTS`.
//! The signal number is checked first: every other signal returns at once.
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::TracePointContext,
    EbpfContext,
};
use oomtrace_common::{
    field, hook, sigkill_field, Failure, KernelLayout, RecordKind, SigkillRecord, TaskRecord,
    SI_KERNEL,
};

use crate::{failure, kread, maps::LAYOUT, maps::PROCESS_EVENTS, memcg, seq, task};

pub const SIGKILL: i32 = 9;
/// `si_code` of `kill(2)` without siginfo (`SEND_SIG_NOINFO`).
const SI_USER: i32 = 0;
/// Byte offset of `si_code` in `struct kernel_siginfo`: after `si_signo` and `si_errno`, as the
/// user ABI (`siginfo_t`) fixes it.
const SI_CODE_OFFSET: usize = 8;

/// `sigkill_field` bits for a task's `task::fill` bits, shifted for the sender.
#[inline(always)]
fn bits(filled: u32, sender: bool) -> u32 {
    let mut out = 0;
    if filled & field::VICTIM_PID != 0 {
        out |= sigkill_field::TARGET_PID;
    }
    if filled & field::VICTIM_TGID != 0 {
        out |= sigkill_field::TARGET_TGID;
    }
    if filled & field::VICTIM_COMM != 0 {
        out |= sigkill_field::TARGET_COMM;
    }
    if filled & field::VICTIM_MEMCG != 0 {
        out |= sigkill_field::TARGET_MEMCG;
    }
    if sender {
        out << 4
    } else {
        out
    }
}

#[inline(always)]
fn fill_sender(l: &KernelLayout, out: &mut TaskRecord) -> u32 {
    // SAFETY: the helper has no preconditions.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    bits(task::fill(current, l, out), true)
}

/// Reserves a record on `PROCESS_EVENTS`, lets `fill` set the target (returning its field
/// bits), adds the sender and submits it.
#[inline(always)]
fn send(l: &KernelLayout, hook_bit: u32, fill: impl FnOnce(&mut SigkillRecord) -> u32) {
    // Numbered first: a record that finds no room leaves a gap.
    let seq = seq::next(seq::SIGKILL);
    let Some(mut entry) = PROCESS_EVENTS.reserve::<SigkillRecord>(0) else {
        failure::count(Failure::SigkillRingbufReserve);
        return;
    };
    let rec = entry.write(SigkillRecord::default());
    rec.seq = seq;
    rec.kind = RecordKind::Sigkill as u32;
    rec.hook = hook_bit;
    // SAFETY: the helper has no preconditions.
    rec.ktime_ns = unsafe { bpf_ktime_get_ns() };
    let mut fields = fill(rec);
    fields |= fill_sender(l, &mut rec.sender);
    rec.fields = fields;
    entry.submit(0);
}

/// From the BTF tracepoint: `(int sig, struct kernel_siginfo *info, struct task_struct *task,
/// int group, int result)`. The tracepoint itself maps `info` 0 and 1 (`SEND_SIG_NOINFO`,
/// `SEND_SIG_PRIV`) to `SI_USER` and `SI_KERNEL`; so does this.
#[inline(always)]
pub fn emit_from_btf(info: u64, target: *const u8, group: i32, result: i32) {
    let l = LAYOUT.load();
    let si_code = match info {
        0 => SI_USER,
        1 => SI_KERNEL,
        p => {
            // SAFETY: bpf_probe_read_kernel checks the address.
            match unsafe { bpf_probe_read_kernel((p as usize + SI_CODE_OFFSET) as *const i32) } {
                Ok(c) => c,
                Err(_) => {
                    failure::count(Failure::ReadTask);
                    return;
                }
            }
        }
    };
    send(&l, hook::TP_BTF_SIGNAL_GENERATE, |rec| {
        rec.si_code = si_code;
        rec.group = group as u32;
        rec.result = result;
        let mut fields = bits(task::fill(target, &l, &mut rec.target), false);
        if let Some((usage, limit)) =
            memcg::of_task(target, &l).and_then(|m| memcg::usage_and_limit(m, &l))
        {
            rec.target_usage_pages = usage;
            rec.target_limit_pages = limit;
            fields |= sigkill_field::TARGET_MEMCG_COUNTER;
        }
        fields
    });
}

/// From the classic tracepoint: the target's pid and comm (no tgid or cgroup), the code.
#[inline(always)]
pub fn emit_from_tracepoint(ctx: &TracePointContext) {
    let l = LAYOUT.load();
    let base = ctx.as_ptr() as *const u8;
    if kread::at::<i32>(base, l.sig_tp_sig, Failure::ReadTracepoint) != Some(SIGKILL) {
        return;
    }
    let field = |off: u32| kread::at::<i32>(base, off, Failure::ReadTracepoint);
    send(&l, hook::TRACEPOINT_SIGNAL_GENERATE, |rec| {
        rec.si_code = field(l.sig_tp_code).unwrap_or(0);
        rec.group = field(l.sig_tp_group).unwrap_or(0) as u32;
        rec.result = field(l.sig_tp_result).unwrap_or(0);
        let mut fields = 0;
        if let Some(pid) = field(l.sig_tp_pid) {
            rec.target.pid = pid as u32;
            fields |= sigkill_field::TARGET_PID;
        }
        if kread::bytes(
            base,
            l.sig_tp_comm,
            &mut rec.target.comm,
            Failure::ReadTracepoint,
        ) {
            fields |= sigkill_field::TARGET_COMM;
        }
        fields
    });
}
