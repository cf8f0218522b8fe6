//! Builds one `OomKillRecord` per victim and submits it to the ring buffer.
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
    EbpfContext,
};
use oomtrace_common::{
    field, hook, Failure, KernelLayout, OomKillRecord, RecordKind, ABSENT, INFERRED_MEMCG,
    INFERRED_NONE,
};

use crate::{
    cgpath, context, failure, kread,
    maps::{PathSent, EVENTS, LAYOUT, PATH_SENT},
    memcg, seq, stats, task,
};

/// Victim fields every kernel gives (their offsets are required): missing means a read failed.
const TASK_FIELDS: u32 = field::VICTIM_PID | field::VICTIM_TGID | field::VICTIM_COMM;

/// Emits a record for `victim`, a `task_struct` pointer handed to the hook.
#[inline(always)]
pub fn emit_from_task(victim: *const u8, hook: u32) {
    if victim.is_null() {
        failure::count_and_note(Failure::NullArgument, 0, u64::from(hook));
        return;
    }
    let l = LAYOUT.load();
    // At function entry the kernel has not marked it yet; marked already means this call will
    // return early, as the tracepoint (which fires after marking) shows.
    let at_entry = hook & (hook::FENTRY_MARK_OOM_VICTIM | hook::KPROBE_MARK_OOM_VICTIM) != 0;
    if at_entry && task::is_oom_victim(victim, &l) {
        return;
    }
    let pid = kread::at::<u32>(victim, l.task_pid, Failure::ReadTask).unwrap_or(0);
    // The path goes first, so it is in userspace before the kill record that wakes it. (Sent
    // after the kill is built, with the kill's own incident at hand, the walk multiplies the
    // verifier's states past its limit.)
    if let Some(m) = memcg::of_task(victim, &l) {
        send_path(m, pid, &l);
    }
    // The allocating task's latest charges, batched on this CPU, count before the kill.
    stats::flush();
    // Numbered first: a record that finds no room leaves a gap.
    let seq = seq::next(seq::KILL);
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        failure::count_and_note(Failure::KillRingbufReserve, pid, RecordKind::OomKill as u64);
        return;
    };
    let rec = entry.write(OomKillRecord::default());
    rec.seq = seq;
    rec.hooks = hook;
    let mut fields = task::fill(victim, &l, &mut rec.victim);
    let memcg_expected = l.task_cgroups != ABSENT && l.css_set_subsys != ABSENT;
    if fields & TASK_FIELDS != TASK_FIELDS || (memcg_expected && fields & field::VICTIM_MEMCG == 0)
    {
        failure::note(Failure::ReadTask, pid, u64::from(fields));
    }
    if let Some(uid) = kread::ptr(victim, l.task_real_cred, Failure::ReadTask)
        .and_then(|c| kread::at::<u32>(c, l.cred_uid, Failure::ReadTask))
    {
        rec.uid = uid;
        fields |= field::UID;
    }
    if let Some(adj) = kread::ptr(victim, l.task_signal, Failure::ReadTask)
        .and_then(|s| kread::at::<i16>(s, l.signal_oom_score_adj, Failure::ReadTask))
    {
        rec.oom_score_adj = adj as i32;
        fields |= field::OOM_SCORE_ADJ;
    }
    // A null mm (the victim already released it) is no failure: the record says VICTIM_MM absent.
    if let Some(mm) = kread::ptr(victim, l.task_mm, Failure::ReadMm) {
        let got = read_mm(mm, &l, rec);
        if got & field::VICTIM_MM == 0 {
            failure::note(Failure::ReadMm, pid, 0);
        }
        fields |= got;
    }
    if task::sigkill_pending(victim, &l) {
        fields |= field::SIGKILL_PENDING;
    }
    fields |= finish(rec, &l);
    rec.fields = fields;
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

/// Sends the path of the victim's memcg `m` unless it went out for this cgroup in the same
/// incident (the kernel's `oom_kill_process` context, where hooked) or less than
/// [`PATH_RESEND_NS`] ago: userspace keeps paths by cgroup id, and a group kill of 500 tasks in
/// one cgroup sends it once.
#[inline(always)]
fn send_path(m: *const u8, pid: u32, l: &KernelLayout) {
    let id = memcg::cgroup_id(m, l).unwrap_or(0);
    let incident = context::current().map_or(0, |c| c.incident);
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if id != 0 {
        // SAFETY: a plain map lookup; the value is copied out at once.
        if let Some(last) = unsafe { PATH_SENT.get(&id) }.copied() {
            let same_incident = incident != 0 && last.incident == incident;
            if same_incident || now.saturating_sub(last.ktime_ns) < PATH_RESEND_NS {
                return;
            }
        }
    }
    match cgpath::emit(m, pid, l, &EVENTS, Failure::PathRingbufReserve) {
        // Not sent: the next victim of this cgroup tries again.
        Err(Failure::PathRingbufReserve) => {
            failure::note(
                Failure::PathRingbufReserve,
                pid,
                RecordKind::CgroupPath as u64,
            );
            return;
        }
        Err(why) => failure::note(why, pid, RecordKind::CgroupPath as u64),
        Ok(()) => {}
    }
    if id != 0 {
        let sent = PathSent {
            incident,
            ktime_ns: now,
        };
        if PATH_SENT.insert(&id, &sent, 0).is_err() {
            failure::count(Failure::MapUpdate);
        }
    }
}

/// A cgroup's path is sent again after this long even within one incident.
const PATH_RESEND_NS: u64 = 1_000_000_000;

/// Emits a record from the classic `oom:mark_victim` tracepoint's fields.
#[inline(always)]
pub fn emit_from_tracepoint(ctx: &TracePointContext) {
    let l = LAYOUT.load();
    let base = ctx.as_ptr() as *const u8;
    let pid = kread::at::<i32>(base, l.tp_pid, Failure::ReadTracepoint);
    stats::flush();
    let seq = seq::next(seq::KILL);
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        let pid = pid.unwrap_or(0) as u32;
        failure::count_and_note(Failure::KillRingbufReserve, pid, RecordKind::OomKill as u64);
        return;
    };
    let rec = entry.write(OomKillRecord::default());
    rec.seq = seq;
    rec.hooks = hook::TRACEPOINT_MARK_VICTIM;
    let mut fields = 0;
    match pid {
        Some(pid) => {
            rec.victim.pid = pid as u32;
            fields |= field::VICTIM_PID;
        }
        None => failure::note(Failure::ReadTracepoint, 0, 0),
    }
    if let Some(loc) = kread::at::<u32>(base, l.tp_comm_loc, Failure::ReadTracepoint) {
        let src = base.wrapping_add((loc & 0xffff) as usize);
        // SAFETY: the helper checks the address and bounds the copy by `comm`'s length.
        if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.victim.comm) }.is_ok() {
            fields |= field::VICTIM_COMM;
        } else {
            failure::count(Failure::ReadTracepoint);
        }
    }
    let kb = |off: u32| kread::at::<u64>(base, off, Failure::ReadTracepoint).map(|v| v << 10);
    if let (Some(vm), Some(anon), Some(file), Some(shmem)) = (
        kb(l.tp_total_vm),
        kb(l.tp_anon_rss),
        kb(l.tp_file_rss),
        kb(l.tp_shmem_rss),
    ) {
        rec.total_vm_bytes = vm;
        rec.anon_rss_bytes = anon;
        rec.file_rss_bytes = file;
        rec.shmem_rss_bytes = shmem;
        fields |= field::VICTIM_MM;
    }
    if let Some(pgtables) = kb(l.tp_pgtables) {
        rec.pgtables_bytes = pgtables;
        fields |= field::PGTABLES;
    }
    if let Some(uid) = kread::at::<u32>(base, l.tp_uid, Failure::ReadTracepoint) {
        rec.uid = uid;
        fields |= field::UID;
    }
    if let Some(adj) = kread::at::<i16>(base, l.tp_oom_score_adj, Failure::ReadTracepoint) {
        rec.oom_score_adj = adj as i32;
        fields |= field::OOM_SCORE_ADJ;
    }
    fields |= finish(rec, &l);
    rec.fields = fields;
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

/// One `get_mm_counter()`: the counter's value, negatives clamped to 0 as the kernel does.
#[inline(always)]
fn mm_counter(mm: *const u8, l: &KernelLayout, index: u32) -> Option<u64> {
    if l.mm_rss_stat == ABSENT || l.mm_rss_stride == ABSENT || index >= 8 {
        return None;
    }
    let off = l.mm_rss_stat + index * l.mm_rss_stride + l.mm_rss_value;
    let v = kread::at::<i64>(mm, off, Failure::ReadMm)?;
    Some(if v < 0 { 0 } else { v as u64 })
}

#[inline(always)]
fn read_mm(mm: *const u8, l: &KernelLayout, rec: &mut OomKillRecord) -> u32 {
    let mut fields = 0;
    let shift = l.page_shift & 31;
    if let (Some(vm), Some(anon), Some(file), Some(shmem)) = (
        kread::at::<u64>(mm, l.mm_total_vm, Failure::ReadMm),
        mm_counter(mm, l, l.mm_anonpages),
        mm_counter(mm, l, l.mm_filepages),
        mm_counter(mm, l, l.mm_shmempages),
    ) {
        rec.total_vm_bytes = vm << shift;
        rec.anon_rss_bytes = anon << shift;
        rec.file_rss_bytes = file << shift;
        rec.shmem_rss_bytes = shmem << shift;
        fields |= field::VICTIM_MM;
    }
    if let Some(pgtables) = kread::at::<u64>(mm, l.mm_pgtables_bytes, Failure::ReadMm) {
        rec.pgtables_bytes = pgtables;
        fields |= field::PGTABLES;
    }
    fields
}

/// The parts every victim hook shares: time, the trigger (the allocating task, which is
/// `current` at every victim hook) and the OOM context, kernel-given or inferred.
#[inline(always)]
fn finish(rec: &mut OomKillRecord, l: &KernelLayout) -> u32 {
    rec.kind = RecordKind::OomKill as u32;
    // SAFETY: the helper has no preconditions.
    rec.ktime_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the helper has no preconditions; the result is only read through probe reads.
    let current = unsafe { bpf_get_current_task() } as *const u8;
    let mut fields = 0;
    if task::fill(current, l, &mut rec.trigger) & field::VICTIM_MEMCG != 0 {
        fields |= field::TRIGGER_MEMCG;
    }
    if let Some(ctx) = context::current() {
        rec.hooks |= ctx.hook;
        rec.incident = ctx.incident;
        fields |= field::INCIDENT | field::KERNEL_CONTEXT;
        let oc = ctx.oc as *const u8;
        const WHY: Failure = Failure::ReadOomControl;
        match kread::at::<u32>(oc, l.oc_constraint, WHY) {
            Some(c) => rec.constraint = c,
            None if l.oc_constraint != ABSENT => {
                failure::note(Failure::ReadOomControl, rec.victim.pid, ctx.oc)
            }
            None => {}
        }
        rec.gfp_mask = kread::at::<u32>(oc, l.oc_gfp_mask, WHY).unwrap_or(0);
        rec.order = kread::at::<i32>(oc, l.oc_order, WHY).unwrap_or(0);
        rec.totalpages = kread::at::<u64>(oc, l.oc_totalpages, WHY).unwrap_or(0);
        rec.points = kread::at::<i64>(oc, l.oc_chosen_points, WHY).unwrap_or(0);
        if let Some(m) = kread::ptr(oc, l.oc_memcg, WHY) {
            fields |= oom_memcg(rec, l, m);
        }
        return fields;
    }
    fields |= field::CONSTRAINT_INFERRED;
    rec.constraint = INFERRED_NONE;
    let at_limit = memcg::of_task(current, l).and_then(|m| memcg::first_at_limit(m, l));
    if let Some((m, _, _)) = at_limit {
        rec.constraint = INFERRED_MEMCG;
        fields |= oom_memcg(rec, l, m);
        if let Some(n) = memcg::oom_events(m, l) {
            rec.incident = n;
            fields |= field::INCIDENT;
        }
    }
    fields
}

#[inline(always)]
fn oom_memcg(rec: &mut OomKillRecord, l: &KernelLayout, m: *const u8) -> u32 {
    let (Some(id), Some((usage, limit))) = (memcg::cgroup_id(m, l), memcg::usage_and_limit(m, l))
    else {
        return 0;
    };
    rec.oom_memcg_id = id;
    rec.oom_memcg_usage_pages = usage;
    rec.oom_memcg_limit_pages = limit;
    field::OOM_MEMCG
}
