//! Builds one `OomKillRecord` per victim and submits it to the ring buffer.
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
    EbpfContext,
};
use oomtrace_common::{
    field, hook, KernelLayout, OomKillRecord, RecordKind, ABSENT, INFERRED_MEMCG, INFERRED_NONE,
};

use crate::{
    cgpath, context, kread,
    maps::{count_lost, EVENTS, LAYOUT},
    memcg, task,
};

/// Emits a record for `victim`, a `task_struct` pointer handed to the hook.
#[inline(always)]
pub fn emit_from_task(victim: *const u8, hook: u32) {
    if victim.is_null() {
        return;
    }
    let l = LAYOUT.load();
    // At function entry the kernel has not marked it yet; marked already means this call will
    // return early, as the tracepoint (which fires after marking) shows.
    let at_entry = hook & (hook::FENTRY_MARK_OOM_VICTIM | hook::KPROBE_MARK_OOM_VICTIM) != 0;
    if at_entry && task::is_oom_victim(victim, &l) {
        return;
    }
    // The path goes first, so it is in userspace before the kill record that wakes it.
    if let Some(m) = memcg::of_task(victim, &l) {
        cgpath::emit(m, kread::at::<u32>(victim, l.task_pid).unwrap_or(0), &l);
    }
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        count_lost();
        return;
    };
    let rec = entry.write(OomKillRecord::default());
    rec.hooks = hook;
    let mut fields = task::fill(victim, &l, &mut rec.victim);
    if let Some(uid) =
        kread::ptr(victim, l.task_real_cred).and_then(|c| kread::at::<u32>(c, l.cred_uid))
    {
        rec.uid = uid;
        fields |= field::UID;
    }
    if let Some(adj) =
        kread::ptr(victim, l.task_signal).and_then(|s| kread::at::<i16>(s, l.signal_oom_score_adj))
    {
        rec.oom_score_adj = adj as i32;
        fields |= field::OOM_SCORE_ADJ;
    }
    if let Some(mm) = kread::ptr(victim, l.task_mm) {
        fields |= read_mm(mm, &l, rec);
    }
    if task::sigkill_pending(victim, &l) {
        fields |= field::SIGKILL_PENDING;
    }
    fields |= finish(rec, &l);
    rec.fields = fields;
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

/// Emits a record from the classic `oom:mark_victim` tracepoint's fields.
#[inline(always)]
pub fn emit_from_tracepoint(ctx: &TracePointContext) {
    let l = LAYOUT.load();
    let Some(mut entry) = EVENTS.reserve::<OomKillRecord>(0) else {
        count_lost();
        return;
    };
    let rec = entry.write(OomKillRecord::default());
    rec.hooks = hook::TRACEPOINT_MARK_VICTIM;
    let base = ctx.as_ptr() as *const u8;
    let mut fields = 0;
    if let Some(pid) = kread::at::<i32>(base, l.tp_pid) {
        rec.victim.pid = pid as u32;
        fields |= field::VICTIM_PID;
    }
    if let Some(loc) = kread::at::<u32>(base, l.tp_comm_loc) {
        let src = base.wrapping_add((loc & 0xffff) as usize);
        // SAFETY: the helper checks the address and bounds the copy by `comm`'s length.
        if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.victim.comm) }.is_ok() {
            fields |= field::VICTIM_COMM;
        }
    }
    let kb = |off: u32| kread::at::<u64>(base, off).map(|v| v << 10);
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
    if let Some(uid) = kread::at::<u32>(base, l.tp_uid) {
        rec.uid = uid;
        fields |= field::UID;
    }
    if let Some(adj) = kread::at::<i16>(base, l.tp_oom_score_adj) {
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
    let v = kread::at::<i64>(mm, off)?;
    Some(if v < 0 { 0 } else { v as u64 })
}

#[inline(always)]
fn read_mm(mm: *const u8, l: &KernelLayout, rec: &mut OomKillRecord) -> u32 {
    let mut fields = 0;
    let shift = l.page_shift & 31;
    if let (Some(vm), Some(anon), Some(file), Some(shmem)) = (
        kread::at::<u64>(mm, l.mm_total_vm),
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
    if let Some(pgtables) = kread::at::<u64>(mm, l.mm_pgtables_bytes) {
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
        rec.constraint = kread::at::<u32>(oc, l.oc_constraint).unwrap_or(0);
        rec.gfp_mask = kread::at::<u32>(oc, l.oc_gfp_mask).unwrap_or(0);
        rec.order = kread::at::<i32>(oc, l.oc_order).unwrap_or(0);
        rec.totalpages = kread::at::<u64>(oc, l.oc_totalpages).unwrap_or(0);
        rec.points = kread::at::<i64>(oc, l.oc_chosen_points).unwrap_or(0);
        if let Some(m) = kread::ptr(oc, l.oc_memcg) {
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
