//! In-kernel memory pressure: the settings global, the per-cgroup counters and the near-limit
//! record.
#[cfg(feature = "user")]
use aya::Pod;

use crate::records::TASK_COMM_LEN;

/// Slots of the charge deltas aggregated per memory cgroup ([`MemcgStats::charged`]).
pub mod stat_slot {
    /// `NR_ANON_MAPPED` (pages).
    pub const ANON: usize = 0;
    /// `NR_FILE_PAGES` (pages).
    pub const FILE: usize = 1;
    /// `NR_SHMEM` (pages).
    pub const SHMEM: usize = 2;
    /// `MEMCG_KMEM` (pages).
    pub const KERNEL: usize = 3;
    /// `MEMCG_SOCK` (pages).
    pub const SOCK: usize = 4;
    /// `NR_SLAB_RECLAIMABLE_B` + `NR_SLAB_UNRECLAIMABLE_B` (bytes).
    pub const SLAB: usize = 5;
    pub const COUNT: usize = 6;
}

/// Stat items watched by the memcg stat tracepoints (`NR_ANON_MAPPED`, `NR_FILE_PAGES`,
/// `NR_SHMEM`, `MEMCG_KMEM`, `MEMCG_SOCK`, `NR_SLAB_RECLAIMABLE_B`, `NR_SLAB_UNRECLAIMABLE_B`),
/// and the slot each feeds.
pub const STAT_ITEMS: usize = 7;
pub const STAT_ITEM_SLOTS: [usize; STAT_ITEMS] = [
    stat_slot::ANON,
    stat_slot::FILE,
    stat_slot::SHMEM,
    stat_slot::KERNEL,
    stat_slot::SOCK,
    stat_slot::SLAB,
    stat_slot::SLAB,
];

/// Raw stat item numbers below this can be watched (the kernel's are below 64 in 6.13–6.18).
pub const STAT_ITEM_LIMIT: usize = 128;

/// Settings of the in-kernel pressure aggregation (the global `PRESSURE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PressureConfig {
    /// Near-limit threshold in 1/10000 of the limit; 0 turns in-kernel detection off.
    pub threshold_per_10k: u32,
    pub _pad: u32,
    /// At most one pressure record per cgroup per this many ns.
    pub interval_ns: u64,
    /// For each raw `node_stat_item` / `memcg_stat_item` value, its [`stat_slot`] plus one; 0
    /// for items not watched. One byte load decides an update on the hot path.
    pub slot_of: [u8; STAT_ITEM_LIMIT],
}

impl PressureConfig {
    pub const fn disabled() -> Self {
        Self {
            threshold_per_10k: 0,
            _pad: 0,
            interval_ns: 10_000_000_000,
            slot_of: [0; STAT_ITEM_LIMIT],
        }
    }
}

/// Per memory cgroup and CPU (key: cgroup id): cumulative counters since the entry was made.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgStats {
    /// Charge deltas by [`stat_slot`], in each item's unit.
    pub charged: [i64; stat_slot::COUNT],
    /// Matched stat updates folded in.
    pub updates: u64,
    /// Completed memcg reclaim passes (`mm_vmscan_memcg_reclaim_begin/end`) by tasks of this
    /// cgroup, and the time they stalled in them.
    pub reclaims: u64,
    pub reclaim_ns: u64,
}

/// Where a near-limit record came from.
pub mod pressure_source {
    /// A memcg stat tracepoint batch.
    pub const STAT: u32 = 1;
    /// The end of a memcg reclaim pass.
    pub const RECLAIM: u32 = 2;
}

/// A memory cgroup at or above the near-limit threshold, seen in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryPressureRecord {
    /// [`crate::RecordKind::MemoryPressure`].
    pub kind: u32,
    /// [`pressure_source`] value.
    pub source: u32,
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub usage_pages: u64,
    pub limit_pages: u64,
    pub threshold_per_10k: u32,
    /// The thread whose charge (or reclaim) saw it.
    pub pid: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// This record's number in the kernel's sequence of near-limit records
    /// ([`crate::records::seq`]).
    pub seq: u64,
}

const _: () = assert!(core::mem::size_of::<PressureConfig>() == 16 + STAT_ITEM_LIMIT);
const _: () = assert!(core::mem::size_of::<MemcgStats>() == 9 * 8);
const _: () = assert!(core::mem::size_of::<MemoryPressureRecord>() == 72);

// SAFETY: all #[repr(C)] with only integer fields and no padding (size asserts above), so every
// bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl Pod for PressureConfig {}
#[cfg(feature = "user")]
unsafe impl Pod for MemcgStats {}
#[cfg(feature = "user")]
unsafe impl Pod for MemoryPressureRecord {}
