//! Memcg reclaim passes (`vmscan:mm_vmscan_memcg_reclaim_begin/end`, every kernel): count and
//! stall time per cgroup of the reclaiming task, and the near-limit check.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns};
use oomtrace_common::{pressure_source, Failure};

use crate::{
    failure,
    maps::{LAYOUT, PRESSURE, RECLAIM_START},
    memcg, pressure, stats,
};

#[inline(always)]
pub fn begin() {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if RECLAIM_START.insert(&tid, &now, 0).is_err() {
        failure::count(Failure::MapUpdate);
    }
}

#[inline(always)]
pub fn end() {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a plain map lookup, copied out at once.
    let Some(start) = (unsafe { RECLAIM_START.get(&tid) }).copied() else {
        return;
    };
    let _ = RECLAIM_START.remove(&tid);
    // SAFETY: as above.
    let now = unsafe { bpf_ktime_get_ns() };
    let l = LAYOUT.load();
    // SAFETY: the current task is valid while its program runs.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let Some(m) = memcg::of_task(task, &l) else {
        return;
    };
    let Some(id) = memcg::cgroup_id(m, &l) else {
        return;
    };
    stats::flush();
    if let Some(e) = stats::entry(id) {
        e.reclaims += 1;
        e.reclaim_ns += now.saturating_sub(start);
    }
    let cfg = PRESSURE.load();
    pressure::check(m, id, now, pressure_source::RECLAIM, &l, &cfg);
}
