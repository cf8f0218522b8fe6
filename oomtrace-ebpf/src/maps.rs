//! Maps shared by the programs, and the layout global.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
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

/// Victim records to userspace. Kills are rare; 256 KiB holds well over a thousand records.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Exec and SIGKILL records to userspace, apart from `EVENTS` so that they never crowd out
/// kills. 128 KiB holds about 5000 exec records (16 bytes plus the ring's 8-byte header each)
/// or 1300 SIGKILL records (96 bytes).
#[map]
pub static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(128 * 1024, 0);

/// Failures by reason (index: `Failure as u32`), per CPU. `Failure::RingbufReserve` counts
/// the records that could not be reserved in `EVENTS` (userspace's `events_lost`).
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

/// The `oom_kill_process` context of each thread currently inside it, by thread id.
#[map]
pub static OOM_CONTEXT: HashMap<u32, OomContext> = HashMap::with_max_entries(1024, 0);

/// Memory cgroups tracked at once; the least recently updated ones are evicted beyond this.
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
    pub _pad: u32,
}

#[map]
pub static STAT_BATCH: PerCpuArray<StatBatch> = PerCpuArray::with_max_entries(1, 0);

/// When each thread entered memcg reclaim (ns), by thread id.
#[map]
pub static RECLAIM_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

/// When each cgroup last produced a pressure record (ns), for the per-cgroup rate limit.
#[map]
pub static PRESSURE_LAST: LruHashMap<u64, u64> = LruHashMap::with_max_entries(TRACKED_MEMCGS, 0);
