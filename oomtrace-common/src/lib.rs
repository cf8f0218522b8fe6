//! Types shared by oomtrace's eBPF programs and its userspace.
//!
//! Everything here is `#[repr(C)]` and plain old data: the eBPF side writes these records into
//! the ring buffer and reads [`KernelLayout`] from a global that userspace fills in at load time.
//! No kernel struct offset is compiled in anywhere: every offset comes from the running kernel's
//! BTF (or tracefs `format` files) through [`KernelLayout`].
#![no_std]

pub const TASK_COMM_LEN: usize = 16;

/// Marks an offset or index that the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// How many memcg ancestors the in-kernel constraint inference walks at most.
pub const MAX_MEMCG_DEPTH: u32 = 16;

/// Record kinds (first field of every ring-buffer record).
pub const RECORD_OOM_KILL: u32 = 1;
/// A [`CgroupPathRecord`]: sent just before the kill record of the same victim.
pub const RECORD_CGROUP_PATH: u32 = 2;

/// A [`MemoryPressureRecord`]: a memory cgroup's usage crossed the near-limit threshold.
pub const RECORD_MEMORY_PRESSURE: u32 = 3;

/// Levels of a cgroup path read in the kernel (leaf first); deeper paths are marked incomplete.
pub const CGROUP_PATH_DEPTH: usize = 8;
/// Bytes kept of each path component (kernfs names are at most 255; container scopes ~85).
pub const CGROUP_NAME_LEN: usize = 128;

/// The victim's memory cgroup path as the kernel names it (kernfs node names and ids, leaf
/// first), read at the kill: so the path is known even when the cgroup is removed before
/// userspace could look it up (a container torn down at once).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupPathRecord {
    pub kind: u32,
    /// Components filled in `ids` and `names`.
    pub depth: u32,
    /// 1 when the walk reached the hierarchy root (the path is whole).
    pub complete: u32,
    /// The victim this path belongs to (thread id), to pair it with its kill record.
    pub victim_pid: u32,
    pub ids: [u64; CGROUP_PATH_DEPTH],
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_PATH_DEPTH],
}

impl Default for CgroupPathRecord {
    fn default() -> Self {
        Self {
            kind: RECORD_CGROUP_PATH,
            depth: 0,
            complete: 0,
            victim_pid: 0,
            ids: [0; CGROUP_PATH_DEPTH],
            names: [[0; CGROUP_NAME_LEN]; CGROUP_PATH_DEPTH],
        }
    }
}

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
}

/// The hooks that can contribute to a record (`OomKillRecord::hooks`).
pub mod hook {
    pub const TP_BTF_MARK_VICTIM: u32 = 1 << 0;
    pub const FENTRY_MARK_OOM_VICTIM: u32 = 1 << 1;
    pub const KPROBE_MARK_OOM_VICTIM: u32 = 1 << 2;
    pub const TRACEPOINT_MARK_VICTIM: u32 = 1 << 3;
    pub const FENTRY_OOM_KILL_PROCESS: u32 = 1 << 4;
    pub const KPROBE_OOM_KILL_PROCESS: u32 = 1 << 5;
    pub const TP_BTF_MOD_MEMCG_STATE: u32 = 1 << 6;
    pub const TP_BTF_MOD_MEMCG_LRUVEC_STATE: u32 = 1 << 7;
    pub const TP_BTF_MEMCG_RECLAIM_BEGIN: u32 = 1 << 8;
    pub const TP_BTF_MEMCG_RECLAIM_END: u32 = 1 << 9;
    pub const TRACEPOINT_MEMCG_RECLAIM_BEGIN: u32 = 1 << 10;
    pub const TRACEPOINT_MEMCG_RECLAIM_END: u32 = 1 << 11;
}

/// Which fields of an [`OomKillRecord`] carry a value (`OomKillRecord::fields`).
/// A field whose bit is clear could not be known and must not be reported.
pub mod field {
    pub const VICTIM_PID: u32 = 1 << 0;
    pub const VICTIM_TGID: u32 = 1 << 1;
    pub const VICTIM_MEMCG: u32 = 1 << 2;
    pub const UID: u32 = 1 << 3;
    pub const OOM_SCORE_ADJ: u32 = 1 << 4;
    /// `total_vm_bytes`, `anon_rss_bytes`, `file_rss_bytes`, `shmem_rss_bytes`.
    pub const VICTIM_MM: u32 = 1 << 5;
    pub const PGTABLES: u32 = 1 << 6;
    pub const TRIGGER_MEMCG: u32 = 1 << 7;
    /// `constraint`, `gfp_mask`, `order`, `totalpages`, `points` from the kernel's
    /// `struct oom_control`.
    pub const KERNEL_CONTEXT: u32 = 1 << 8;
    /// The constraint was inferred from page counters, not read from `oom_control`.
    pub const CONSTRAINT_INFERRED: u32 = 1 << 9;
    /// `oom_memcg_*` hold the cgroup whose limit was hit.
    pub const OOM_MEMCG: u32 = 1 << 10;
    /// The victim had SIGKILL pending when it was marked (a real kill, not an exiting task).
    pub const SIGKILL_PENDING: u32 = 1 << 11;
    /// `incident` holds an exact per-invocation key.
    pub const INCIDENT: u32 = 1 << 12;
    pub const VICTIM_COMM: u32 = 1 << 13;
}

/// One task as seen by the eBPF side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    pub pid: u32,
    pub tgid: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// Kernfs id (= inode number) of the task's cgroup in the memory hierarchy.
    pub memcg_id: u64,
}

/// One OOM victim, emitted from `mark_victim` (or its fallbacks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomKillRecord {
    pub kind: u32,
    /// `hook::*` bits of the hooks that produced this record.
    pub hooks: u32,
    /// `field::*` bits of the fields that carry a value.
    pub fields: u32,
    /// Raw `enum oom_constraint` value (kernel context), or, when inferred,
    /// [`INFERRED_MEMCG`] / [`INFERRED_NONE`].
    pub constraint: u32,
    pub ktime_ns: u64,
    /// Key of the OOM invocation: all victims of one invocation share it (see `field::INCIDENT`).
    pub incident: u64,
    pub victim: TaskRecord,
    pub trigger: TaskRecord,
    pub uid: u32,
    pub oom_score_adj: i32,
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub pgtables_bytes: u64,
    pub points: i64,
    pub totalpages: u64,
    pub gfp_mask: u32,
    pub order: i32,
    pub oom_memcg_id: u64,
    pub oom_memcg_usage_pages: u64,
    pub oom_memcg_limit_pages: u64,
}

pub const INFERRED_NONE: u32 = 0;
pub const INFERRED_MEMCG: u32 = 1;

/// Offsets (bytes) into kernel structures, resolved from BTF by userspace and handed to the
/// eBPF programs as the global `LAYOUT`. [`ABSENT`] marks what the running kernel lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub page_shift: u32,

    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_real_cred: u32,
    pub task_cgroups: u32,
    /// `task_struct.pending.signal` (first word of the thread's pending set).
    pub task_pending_signal: u32,
    pub cred_uid: u32,
    pub signal_oom_score_adj: u32,
    /// `signal_struct.shared_pending.signal`.
    pub signal_shared_pending_signal: u32,
    /// `signal_struct.oom_mm`: set by the first `mark_oom_victim()` of the process.
    pub signal_oom_mm: u32,

    pub mm_total_vm: u32,
    /// Start of `mm_struct.rss_stat`.
    pub mm_rss_stat: u32,
    /// Size of one `rss_stat` element (a `percpu_counter` on >= 6.2, an `atomic_long_t` before).
    pub mm_rss_stride: u32,
    /// Offset of the counter value inside one element (`percpu_counter.count`, or 0).
    pub mm_rss_value: u32,
    pub mm_pgtables_bytes: u32,
    pub mm_filepages: u32,
    pub mm_anonpages: u32,
    pub mm_shmempages: u32,

    pub css_set_subsys: u32,
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// `kernfs_node.name` (a `const char *`).
    pub kn_name: u32,
    /// `kernfs_node.parent` (`__parent` since 6.15).
    pub kn_parent: u32,
    pub memcg_css: u32,
    pub memcg_memory: u32,
    pub memcg_memory_events: u32,
    pub memcg_oom_event: u32,
    pub page_counter_usage: u32,
    pub page_counter_max: u32,
    pub page_counter_parent: u32,

    pub oc_memcg: u32,
    pub oc_gfp_mask: u32,
    pub oc_order: u32,
    pub oc_totalpages: u32,
    pub oc_chosen_points: u32,
    pub oc_constraint: u32,

    /// Classic `oom/mark_victim` tracepoint fields (from tracefs `format`).
    pub tp_pid: u32,
    pub tp_comm_loc: u32,
    pub tp_total_vm: u32,
    pub tp_anon_rss: u32,
    pub tp_file_rss: u32,
    pub tp_shmem_rss: u32,
    pub tp_uid: u32,
    pub tp_pgtables: u32,
    pub tp_oom_score_adj: u32,
    /// Inferred constraint: a memcg counts as "at its limit" when its usage is within this many
    /// pages of it (the failed charge plus per-CPU charge stock drained since the check).
    pub oom_margin_pages: u32,
}

impl KernelLayout {
    /// A layout in which nothing is known.
    pub const fn absent() -> Self {
        Self {
            page_shift: 12,
            task_pid: ABSENT,
            task_tgid: ABSENT,
            task_comm: ABSENT,
            task_mm: ABSENT,
            task_signal: ABSENT,
            task_real_cred: ABSENT,
            task_cgroups: ABSENT,
            task_pending_signal: ABSENT,
            cred_uid: ABSENT,
            signal_oom_score_adj: ABSENT,
            signal_shared_pending_signal: ABSENT,
            signal_oom_mm: ABSENT,
            mm_total_vm: ABSENT,
            mm_rss_stat: ABSENT,
            mm_rss_stride: ABSENT,
            mm_rss_value: ABSENT,
            mm_pgtables_bytes: ABSENT,
            mm_filepages: ABSENT,
            mm_anonpages: ABSENT,
            mm_shmempages: ABSENT,
            css_set_subsys: ABSENT,
            memory_cgrp_id: ABSENT,
            css_cgroup: ABSENT,
            cgroup_kn: ABSENT,
            kn_id: ABSENT,
            kn_name: ABSENT,
            kn_parent: ABSENT,
            memcg_css: ABSENT,
            memcg_memory: ABSENT,
            memcg_memory_events: ABSENT,
            memcg_oom_event: ABSENT,
            page_counter_usage: ABSENT,
            page_counter_max: ABSENT,
            page_counter_parent: ABSENT,
            oc_memcg: ABSENT,
            oc_gfp_mask: ABSENT,
            oc_order: ABSENT,
            oc_totalpages: ABSENT,
            oc_chosen_points: ABSENT,
            oc_constraint: ABSENT,
            tp_pid: ABSENT,
            tp_comm_loc: ABSENT,
            tp_total_vm: ABSENT,
            tp_anon_rss: ABSENT,
            tp_file_rss: ABSENT,
            tp_shmem_rss: ABSENT,
            tp_uid: ABSENT,
            tp_pgtables: ABSENT,
            tp_oom_score_adj: ABSENT,
            oom_margin_pages: 8,
        }
    }
}

/// Per-invocation OOM context captured at the entry of `oom_kill_process`, keyed by the
/// allocating thread's id, removed at its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomContext {
    /// Address of the kernel's `struct oom_control` (valid until `oom_kill_process` returns).
    pub oc: u64,
    pub incident: u64,
    pub hook: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<TaskRecord>() == 32);
const _: () = assert!(core::mem::size_of::<OomKillRecord>() == 192);
const _: () = assert!(core::mem::size_of::<CgroupPathRecord>() == 16 + 8 * 8 + 8 * 128);
const _: () = assert!(core::mem::size_of::<KernelLayout>() == 51 * 4);
const _: () = assert!(core::mem::size_of::<OomContext>() == 24);
const _: () = assert!(core::mem::size_of::<PressureConfig>() == 16 + STAT_ITEM_LIMIT);
const _: () = assert!(core::mem::size_of::<MemcgStats>() == 9 * 8);
const _: () = assert!(core::mem::size_of::<MemoryPressureRecord>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], contain only integers and have no padding (size asserts
    // above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::TaskRecord {}
    unsafe impl aya::Pod for super::OomKillRecord {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::OomContext {}
    unsafe impl aya::Pod for super::CgroupPathRecord {}
    unsafe impl aya::Pod for super::PressureConfig {}
    unsafe impl aya::Pod for super::MemcgStats {}
    unsafe impl aya::Pod for super::MemoryPressureRecord {}
}
