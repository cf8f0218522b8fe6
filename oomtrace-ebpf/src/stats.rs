//! The memcg stat tracepoints (6.13+): charges of the items that matter (anon, file, shmem,
//! kernel, sock, slab), batched per CPU. Only increases count: a counter is what was charged,
//! never net of what was freed, so a kill point read after the OOM reaper has freed the
//! victim's memory still says what was charged before it (the usage samples give the net).
//! Batches are folded into `MEMCG_STATS` every [`BATCH`] matched updates, or when the CPU's
//! memcg changes. Each fold checks the memcg's page counter
//! against the near-limit threshold. Never one record per update. The kill and reclaim paths
//! fold the batch of their CPU too ([`flush`]); a CPU that goes idle keeps at most
//! `BATCH - 1` updates pending until its next update, kill or reclaim.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use oomtrace_common::{
    pressure_source, stat_slot, Failure, KernelLayout, MemcgStats, PressureConfig, STAT_ITEM_LIMIT,
};

use crate::{
    failure,
    maps::{StatBatch, LAYOUT, MEMCG_STATS, PRESSURE, STAT_BATCH},
    memcg, pressure,
};

/// The counters of cgroup `id` on this CPU, created empty when missing.
#[inline(always)]
pub fn entry(id: u64) -> Option<&'static mut MemcgStats> {
    if MEMCG_STATS.get_ptr_mut(&id).is_none()
        && MEMCG_STATS.insert(&id, &MemcgStats::default(), 0).is_err()
    {
        failure::count(Failure::MapUpdate);
        return None;
    }
    // SAFETY: a per-CPU value; only programs on this CPU write it, one at a time.
    MEMCG_STATS.get_ptr_mut(&id).map(|p| unsafe { &mut *p })
}

/// The item's `slot_of` byte (its slot plus one, 0 when not watched), read alone from the
/// `PRESSURE` global: no copy of the whole settings on the hot path, where most updates are
/// items not watched.
#[inline(always)]
fn slot_byte(item: i32) -> u8 {
    let Some(item) = usize::try_from(item).ok().filter(|i| *i < STAT_ITEM_LIMIT) else {
        return 0;
    };
    let cfg = core::ptr::addr_of!(PRESSURE).cast::<PressureConfig>();
    // SAFETY: `Global` is `repr(transparent)` over the settings, `item` is in bounds, and the
    // volatile read keeps the compiler from folding the loader-set value.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*cfg).slot_of[item])) }
}

/// One stat update: `item` is a raw `node_stat_item` / `memcg_stat_item`, `val` a delta.
#[inline(always)]
pub fn on_update(memcg: *const u8, item: i32, val: i64) {
    // `pending` is indexed by the byte itself (1..=COUNT), checked on that same value, so the
    // verifier sees the bound.
    let slot = usize::from(slot_byte(item));
    if slot == 0 || slot > stat_slot::COUNT || memcg.is_null() || val <= 0 {
        return;
    }
    let Some(b) = STAT_BATCH.get_ptr_mut(0) else {
        // The one failure branch of the per-update path: a counter, never a log.
        failure::count(Failure::ScratchLookup);
        return;
    };
    // SAFETY: a per-CPU slot; a program that finds it busy leaves it alone (below).
    let b = unsafe { &mut *b };
    // An update nested in one being batched on this CPU (an interrupt's charge) would mix
    // its memcg and deltas into the other's half-made changes.
    if b.busy != 0 {
        failure::count(Failure::StatNested);
        return;
    }
    b.busy = 1;
    let m = memcg as u64;
    if b.memcg != m {
        if b.memcg != 0 && b.updates > 0 {
            fold(b);
        }
        b.memcg = m;
        b.cgroup_id = 0;
    }
    b.pending[slot] += val;
    b.updates += 1;
    if b.updates >= BATCH {
        fold(b);
    }
    b.busy = 0;
}

/// Folds this CPU's pending batch into `MEMCG_STATS` without the threshold check: from the
/// kill and reclaim paths, so that the charges of the task at hand are counted even if this
/// CPU makes no further update (a batch is otherwise folded only by the next one).
#[inline(always)]
pub fn flush() {
    let Some(b) = STAT_BATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `on_update`.
    let b = unsafe { &mut *b };
    if b.busy != 0 || b.memcg == 0 || b.updates == 0 {
        return;
    }
    b.busy = 1;
    let l = LAYOUT.load();
    move_to_stats(b, &l);
    b.busy = 0;
}

/// Matched updates a CPU batches before folding them (64 anon pages = 256 KiB of charge).
const BATCH: u32 = 64;

/// Moves the batch into `MEMCG_STATS`, samples the page counter, checks the threshold.
#[inline(never)]
fn fold(b: &mut StatBatch) {
    let cfg = PRESSURE.load();
    let l = LAYOUT.load();
    let memcg = b.memcg as *const u8;
    let id = move_to_stats(b, &l);
    if id == 0 {
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    pressure::check(memcg, id, now, pressure_source::STAT, &l, &cfg);
}

/// Adds the batch to its cgroup's counters and empties it; returns the cgroup id (0 when it
/// could not be read: the batch is dropped).
#[inline(always)]
fn move_to_stats(b: &mut StatBatch, l: &KernelLayout) -> u64 {
    if b.cgroup_id == 0 {
        b.cgroup_id = memcg::cgroup_id(b.memcg as *const u8, l).unwrap_or(0);
    }
    let id = b.cgroup_id;
    let pending = b.pending;
    let updates = b.updates;
    b.pending = [0; 8];
    b.updates = 0;
    if id == 0 {
        return 0;
    }
    if let Some(e) = entry(id) {
        let mut s = 0;
        while s < stat_slot::COUNT {
            e.charged[s] += pending[s + 1];
            s += 1;
        }
        e.updates += u64::from(updates);
    }
    id
}
