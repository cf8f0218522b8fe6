//! Why the eBPF side could not do something, counted per reason (the per-CPU array `FAILURES`,
//! indexed by [`Failure`]) instead of failing silently. A read of a field the kernel lacks
//! ([`crate::ABSENT`]) or of a null pointer is not a failure; a read that faults is.

/// The `log` target of the eBPF programs' aya-log records, so that userspace can tell them from
/// its own (both crates are named `oomtrace`).
pub const LOG_TARGET: &str = "oomtrace_ebpf";

/// A failure reason; its value is its index in `FAILURES`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    /// A hook got a null pointer argument (victim task, `oom_control`) and did nothing.
    NullArgument = 0,
    /// A read of a task's `task_struct`, `cred` or `signal_struct` faulted.
    ReadTask = 1,
    /// A read of the victim's `mm_struct` counters faulted.
    ReadMm = 2,
    /// A read of a task's memory cgroup (`css_set`, `mem_cgroup`) or of a page counter faulted.
    ReadMemcg = 3,
    /// A read of a cgroup's `cgroup` or `kernfs_node` (id, name, parent) faulted.
    ReadCgroup = 4,
    /// A read of the kernel's `struct oom_control` faulted.
    ReadOomControl = 5,
    /// A field of the classic `oom/mark_victim` tracepoint could not be read.
    ReadTracepoint = 6,
    /// A cgroup path was deeper than [`crate::CGROUP_PATH_DEPTH`] levels or had a name of
    /// [`crate::CGROUP_NAME_LEN`] bytes or more: its path record is marked incomplete.
    PathTruncated = 7,
    /// A kill record did not fit in its ring buffer (`EVENTS`, full) and was lost.
    KillRingbufReserve = 8,
    /// A map update failed (OOM context, reclaim start, pressure rate limit, per-cgroup
    /// counters): that map was full.
    MapUpdate = 9,
    /// A per-CPU scratch slot could not be looked up.
    ScratchLookup = 10,
    /// An exec record did not fit in its ring buffer (`PROCESS_EVENTS`) and was lost: that
    /// process's identity is read at its kill instead. Kill records never wait for these.
    ExecRingbufReserve = 11,
    /// A cgroup path record (sent ahead of a kill, on `EVENTS`) did not fit and was lost:
    /// userspace names that cgroup from the filesystem, if it still exists.
    PathRingbufReserve = 12,
    /// A near-limit record (or its cgroup path) did not fit in its ring buffer
    /// (`PRESSURE_EVENTS`) and was lost. Kill records never wait for these.
    PressureRingbufReserve = 13,
    /// A SIGKILL record did not fit in `PROCESS_EVENTS` and was lost: that SIGKILL goes
    /// unrecorded.
    SigkillRingbufReserve = 14,
    /// A memcg stat update arrived while this CPU's stat batch was in use (a stat program
    /// nested in another, or preempted by one): it was left out rather than corrupt the batch.
    StatNested = 15,
}

impl Failure {
    /// Every reason, in index order.
    pub const ALL: [Failure; 16] = [
        Failure::NullArgument,
        Failure::ReadTask,
        Failure::ReadMm,
        Failure::ReadMemcg,
        Failure::ReadCgroup,
        Failure::ReadOomControl,
        Failure::ReadTracepoint,
        Failure::PathTruncated,
        Failure::KillRingbufReserve,
        Failure::MapUpdate,
        Failure::ScratchLookup,
        Failure::ExecRingbufReserve,
        Failure::PathRingbufReserve,
        Failure::PressureRingbufReserve,
        Failure::SigkillRingbufReserve,
        Failure::StatNested,
    ];

    /// The reasons that count records lost for want of ring-buffer room, one per record kind.
    pub const LOST: [Failure; 5] = [
        Failure::KillRingbufReserve,
        Failure::PathRingbufReserve,
        Failure::PressureRingbufReserve,
        Failure::SigkillRingbufReserve,
        Failure::ExecRingbufReserve,
    ];

    /// Entries of `FAILURES`.
    pub const COUNT: usize = Self::ALL.len();

    /// The record kind a [`Failure::LOST`] reason counts (`kill`, `path`, …), `None` for the
    /// other reasons.
    pub const fn lost_kind(self) -> Option<&'static str> {
        match self {
            Failure::KillRingbufReserve => Some("kill"),
            Failure::PathRingbufReserve => Some("path"),
            Failure::PressureRingbufReserve => Some("pressure"),
            Failure::SigkillRingbufReserve => Some("sigkill"),
            Failure::ExecRingbufReserve => Some("exec"),
            _ => None,
        }
    }

    /// The stable name userspace reports (`check`, the `reason` label of the agent's metric).
    pub const fn name(self) -> &'static str {
        match self {
            Failure::NullArgument => "null_argument",
            Failure::ReadTask => "read_task",
            Failure::ReadMm => "read_mm",
            Failure::ReadMemcg => "read_memcg",
            Failure::ReadCgroup => "read_cgroup",
            Failure::ReadOomControl => "read_oom_control",
            Failure::ReadTracepoint => "read_tracepoint",
            Failure::PathTruncated => "path_truncated",
            Failure::KillRingbufReserve => "kill_ringbuf_reserve",
            Failure::MapUpdate => "map_update",
            Failure::ScratchLookup => "scratch_lookup",
            Failure::ExecRingbufReserve => "exec_ringbuf_reserve",
            Failure::PathRingbufReserve => "path_ringbuf_reserve",
            Failure::PressureRingbufReserve => "pressure_ringbuf_reserve",
            Failure::SigkillRingbufReserve => "sigkill_ringbuf_reserve",
            Failure::StatNested => "stat_nested",
        }
    }
}

// `ALL[i]` is the reason of index `i`: userspace reads `FAILURES` by these indices.
const _: () = {
    let mut i = 0;
    while i < Failure::COUNT {
        assert!(Failure::ALL[i] as usize == i);
        i += 1;
    }
};
