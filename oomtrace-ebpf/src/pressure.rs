//! Near-limit detection: a memcg (or the nearest ancestor) whose page-counter usage is at or
//! above the threshold fraction of its limit gets a `MemoryPressureRecord`, at most one per
//! cgroup per `PressureConfig::interval_ns`.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use oomtrace_common::{Failure, KernelLayout, MemoryPressureRecord, PressureConfig, RecordKind};

use crate::{
    cgpath, failure,
    maps::{PRESSURE_EVENTS, PRESSURE_LAST},
    memcg, seq,
};

/// Ancestors checked above the memcg that was charged (container → pod → QoS → kubepods).
const CHECK_DEPTH: u32 = 6;

/// Limits at or above this many pages mean "no limit" (`PAGE_COUNTER_MAX` is about 2^51).
const UNLIMITED_PAGES: u64 = 1 << 50;

#[inline(always)]
pub fn check(
    memcg: *const u8,
    id: u64,
    now: u64,
    source: u32,
    l: &KernelLayout,
    cfg: &PressureConfig,
) {
    let threshold = u64::from(cfg.threshold_per_10k);
    if threshold == 0 {
        return;
    }
    // No overflow: max < 2^50 and threshold <= 10000; usage < max on the right of `||`.
    let Some(f) = memcg::first_ancestor(memcg, l, CHECK_DEPTH, |usage, max| {
        max > 0 && max < UNLIMITED_PAGES && (usage >= max || usage * 10_000 >= max * threshold)
    }) else {
        return;
    };
    let at_id = if f.level == 0 {
        Some(id)
    } else {
        memcg::cgroup_id(f.memcg, l)
    };
    if let Some(at_id) = at_id {
        emit(f.memcg, at_id, f.usage, f.max, now, source, l, cfg);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    memcg: *const u8,
    id: u64,
    usage: u64,
    max: u64,
    now: u64,
    source: u32,
    l: &KernelLayout,
    cfg: &PressureConfig,
) {
    // SAFETY: a plain map lookup; the value is a u64 copied out at once.
    if let Some(last) = unsafe { PRESSURE_LAST.get(&id) } {
        if now.saturating_sub(*last) < cfg.interval_ns {
            return;
        }
    }
    if PRESSURE_LAST.insert(&id, &now, 0).is_err() {
        failure::count(Failure::MapUpdate);
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // Failures are counted inside; this path (reached from the stat programs) does not log.
    const LOST: Failure = Failure::PressureRingbufReserve;
    let _ = cgpath::emit(memcg, tid, l, &PRESSURE_EVENTS, LOST);
    // Numbered first: a record that finds no room leaves a gap.
    let seq = seq::next(seq::PRESSURE);
    let Some(mut slot) = PRESSURE_EVENTS.reserve::<MemoryPressureRecord>(0) else {
        failure::count(LOST);
        return;
    };
    let rec = slot.write(MemoryPressureRecord::default());
    rec.seq = seq;
    rec.kind = RecordKind::MemoryPressure as u32;
    rec.source = source;
    rec.ktime_ns = now;
    rec.cgroup_id = id;
    rec.usage_pages = usage;
    rec.limit_pages = max;
    rec.threshold_per_10k = cfg.threshold_per_10k;
    rec.pid = tid;
    rec.comm = bpf_get_current_comm().unwrap_or_default();
    slot.submit(0);
}
