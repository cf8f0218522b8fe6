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
    /// A record did not fit in the ring buffer (full) and was lost.
    RingbufReserve = 8,
    /// A map update failed (OOM context, reclaim start, pressure rate limit, per-cgroup
    /// counters): that map was full.
    MapUpdate = 9,
    /// A per-CPU scratch slot could not be looked up.
    ScratchLookup = 10,
    /// An exec or SIGKILL record did not fit in its own ring buffer (`PROCESS_EVENTS`) and was
    /// lost: that process's identity is read at its kill instead, and that SIGKILL goes
    /// unrecorded. Kill records never wait for these.
    ProcessRingbufReserve = 11,
}

impl Failure {
    /// Every reason, in index order.
    pub const ALL: [Failure; 12] = [
        Failure::NullArgument,
        Failure::ReadTask,
        Failure::ReadMm,
        Failure::ReadMemcg,
        Failure::ReadCgroup,
        Failure::ReadOomControl,
        Failure::ReadTracepoint,
        Failure::PathTruncated,
        Failure::RingbufReserve,
        Failure::MapUpdate,
        Failure::ScratchLookup,
        Failure::ProcessRingbufReserve,
    ];

    /// Entries of `FAILURES`.
    pub const COUNT: usize = Self::ALL.len();

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
            Failure::RingbufReserve => "ringbuf_reserve",
            Failure::MapUpdate => "map_update",
            Failure::ScratchLookup => "scratch_lookup",
            Failure::ProcessRingbufReserve => "process_ringbuf_reserve",
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
