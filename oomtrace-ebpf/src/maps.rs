//! Maps shared by the programs, and the layout global.
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    Global,
};
use oomtrace_common::{
    CgroupPathRecord, Failure, KernelLayout, MemcgStats, OomContext, PressureConfig,
};

/// Kernel offsets, filled in by userspace at load time.
#[unsafe(no_mangle)]
pub static LAYOUT: Global<KernelLayout> = Global::new(KernelLayout::absent());

/// Pressure settings and the stat item numbers, filled in by userspace at load time.
#[unsafe(no_mangle)]
pub static PRESSURE: Global<PressureConfig> = Global::new(PressureConfig::disabled());

/// Kill records, and the cgroup path records they need, to userspace: nothing else, so that
/// nothing crowds kills out. A kill takes 208 bytes (the ring's 8-byte header included) and a
/// path 1112, sent once per cgroup and incident (`PATH_SENT`): 512 KiB holds a
/// `memory.oom.group` kill of 2400 processes in one cgroup, or of 390 in as many cgroups, with
/// userspace reading none of it meanwhile.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

/// Near-limit records and their cgroup paths (80 + 1112 bytes; at most one per cgroup per
/// pressure interval): they yield to kills by living apart. 256 KiB holds 220 of them.
#[map]
pub static PRESSURE_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Exec and SIGKILL records to userspace, apart from `EVENTS` so that they never crowd out
/// kills. 128 KiB holds about 5000 exec records (16 bytes plus the ring's 8-byte header each)
/// or 1000 SIGKILL records (120 bytes).
#[map]
pub static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(128 * 1024, 0);

/// Failures by reason (index: `Failure as u32`), per CPU. The `*RingbufReserve` reasons
/// count the records lost for want of ring room, one per record kind (userspace's
/// `lost_by_kind`).
#[map]
pub static FAILURES: PerCpuArray<u64> = PerCpuArray::with_max_entries(Failure::COUNT as u32, 0);

/// The failure a kill-path program noted for its log line.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Note {
    /// `Failure as u32 + 1`; 0 when nothing is noted.
    pub reason: u32,
    /// The victim (or thread) it concerns.
    pub pid: u32,
    /// A reason-specific value: hook bits, record fields, an address, a record kind.
    pub detail: u64,
}

/// The failure a kill-path program noted for its log line, per CPU (see `failure.rs`).
#[map]
pub static LOG_NOTE: PerCpuArray<Note> = PerCpuArray::with_max_entries(1, 0);

/// Where a [`CgroupPathRecord`] is built (too big for the BPF stack), one per CPU.
#[map]
pub static PATH_SCRATCH: PerCpuArray<CgroupPathRecord> = PerCpuArray::with_max_entries(1, 0);

/// The `oom_kill_process` context of each thread currently inside it, by thread id. An LRU:
/// a context whose exit was never seen (a detached kretprobe) cannot keep others out.
#[map]
pub static OOM_CONTEXT: LruHashMap<u32, OomContext> = LruHashMap::with_max_entries(1024, 0);

/// The next number of each record sequence (index: `oomtrace_common::seq`), taken with an
/// atomic add before the record is reserved: a record lost leaves a gap.
#[map]
pub static SEQ: Array<u64> = Array::with_max_entries(oomtrace_common::seq::COUNT, 0);

/// When a cgroup's path was last sent on `EVENTS`, by cgroup id: a group kill of 500 tasks
/// in one cgroup sends it once (userspace keeps paths by id).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathSent {
    /// The incident it was sent for (0 when the kill had none).
    pub incident: u64,
    pub ktime_ns: u64,
}

#[map]
pub static PATH_SENT: LruHashMap<u64, PathSent> = LruHashMap::with_max_entries(4096, 0);

/// Memory cgroups tracked at once; the least recently updated ones are evicted beyond this.
/// The most this object asks for: userspace lowers it at load to fit a memory budget on
/// machines with many CPUs (the map holds one value per possible CPU per entry).
pub const TRACKED_MEMCGS: u32 = 8192;

/// Cumulative per-cgroup counters (charge deltas, page-counter samples, reclaim), per CPU.
#[map]
pub static MEMCG_STATS: LruPerCpuHashMap<u64, MemcgStats> =
    LruPerCpuHashMap::with_max_entries(TRACKED_MEMCGS, 0);

/// One CPU's batch of stat updates for the memcg it last saw (see `stats.rs`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StatBatch {
    /// The memcg the batch belongs to (a kernel address), 0 when empty.
    pub memcg: u64,
    pub cgroup_id: u64,
    /// By slot plus one (index 0 unused): indexed by `PressureConfig::slot_of` bytes as they are.
    pub pending: [i64; 8],
    pub updates: u32,
    /// 1 while a program on this CPU is changing the batch: a stat update nested inside it
    /// (a charge made by the program's own helpers) or preempting it is left out and counted
    /// (`Failure::StatNested`) rather than corrupt it.
    pub busy: u32,
}

#[map]
pub static STAT_BATCH: PerCpuArray<StatBatch> = PerCpuArray::with_max_entries(1, 0);

/// When each thread entered memcg reclaim (ns), by thread id.
#[map]
pub static RECLAIM_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// When each cgroup last produced a pressure record (ns), for the per-cgroup rate limit.
#[map]
pub static PRESSURE_LAST: LruHashMap<u64, u64> = LruHashMap::with_max_entries(TRACKED_MEMCGS, 0);
