//! The ring-buffer records, their kinds, and the hook and field bits a kill record carries.
#[cfg(feature = "user")]
use aya::Pod;

pub const TASK_COMM_LEN: usize = 16;

/// The kind of a ring-buffer record: the first field (`kind: u32`) of every record.
///
/// Records keep `kind` a `u32`, written as `RecordKind::X as u32`: a malformed value read from
/// the ring is then a decode error ([`UnknownRecordKind`]), never an invalid enum.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An [`OomKillRecord`].
    OomKill = 1,
    /// A [`CgroupPathRecord`]: sent just before the kill (or pressure) record it belongs to.
    CgroupPath = 2,
    /// A [`crate::MemoryPressureRecord`]: a memory cgroup crossed the near-limit threshold.
    MemoryPressure = 3,
    /// An [`ExecRecord`]: a process started a new program (sent on `PROCESS_EVENTS`).
    Exec = 4,
    /// A [`SigkillRecord`]: a SIGKILL was generated (sent on `PROCESS_EVENTS`).
    Sigkill = 5,
}

/// A `kind` value that names no [`RecordKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownRecordKind(pub u32);

impl TryFrom<u32> for RecordKind {
    type Error = UnknownRecordKind;

    fn try_from(v: u32) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(Self::OomKill),
            2 => Ok(Self::CgroupPath),
            3 => Ok(Self::MemoryPressure),
            4 => Ok(Self::Exec),
            5 => Ok(Self::Sigkill),
            other => Err(UnknownRecordKind(other)),
        }
    }
}

/// Levels of a cgroup path read in the kernel (leaf first); deeper paths are marked incomplete.
pub const CGROUP_PATH_DEPTH: usize = 8;
/// Bytes kept of each path component, NUL included (kernfs names are at most 255; container
/// scopes ~85). A longer name marks the path incomplete.
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
    /// 1 when the walk reached the hierarchy root and read every component whole.
    pub complete: u32,
    /// The victim this path belongs to (thread id), to pair it with its kill record.
    pub victim_pid: u32,
    pub ids: [u64; CGROUP_PATH_DEPTH],
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_PATH_DEPTH],
}

impl Default for CgroupPathRecord {
    fn default() -> Self {
        Self {
            kind: RecordKind::CgroupPath as u32,
            depth: 0,
            complete: 0,
            victim_pid: 0,
            ids: [0; CGROUP_PATH_DEPTH],
            names: [[0; CGROUP_NAME_LEN]; CGROUP_PATH_DEPTH],
        }
    }
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
    pub const TP_BTF_SCHED_PROCESS_EXEC: u32 = 1 << 12;
    pub const TRACEPOINT_SCHED_PROCESS_EXEC: u32 = 1 << 13;
    pub const TP_BTF_SIGNAL_GENERATE: u32 = 1 << 14;
    pub const TRACEPOINT_SIGNAL_GENERATE: u32 = 1 << 15;
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
    /// [`RecordKind::OomKill`].
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
    /// This record's number in the kernel's sequence of kill records ([`seq`]): a gap means
    /// records lost.
    pub seq: u64,
}

/// A process started a new program (`sched_process_exec`): userspace reads its identity from
/// `/proc` while it lives. `current` is the new image there, so no kernel offset is needed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecRecord {
    /// [`RecordKind::Exec`].
    pub kind: u32,
    /// The process (thread group) id, as the initial PID namespace numbers it.
    pub tgid: u32,
    pub ktime_ns: u64,
}

/// Which fields of a [`SigkillRecord`] carry a value (`SigkillRecord::fields`).
pub mod sigkill_field {
    /// `target.pid`, `target.tgid`, `target.comm`, `target.memcg_id`.
    pub const TARGET_PID: u32 = 1 << 0;
    pub const TARGET_TGID: u32 = 1 << 1;
    pub const TARGET_COMM: u32 = 1 << 2;
    pub const TARGET_MEMCG: u32 = 1 << 3;
    /// The same for the sender (`current`).
    pub const SENDER_PID: u32 = 1 << 4;
    pub const SENDER_TGID: u32 = 1 << 5;
    pub const SENDER_COMM: u32 = 1 << 6;
    pub const SENDER_MEMCG: u32 = 1 << 7;
    /// `target_usage_pages` and `target_limit_pages`: the target memcg's page counter at the
    /// signal.
    pub const TARGET_MEMCG_COUNTER: u32 = 1 << 8;
}

/// A SIGKILL generated for a task (`signal:signal_generate`): who sent it (`current`, or the
/// kernel itself when `si_code` is `SI_KERNEL`) and to whom.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigkillRecord {
    /// [`RecordKind::Sigkill`].
    pub kind: u32,
    /// `sigkill_field::*` bits of the fields that carry a value.
    pub fields: u32,
    pub ktime_ns: u64,
    pub target: TaskRecord,
    pub sender: TaskRecord,
    /// As the tracepoint stores it: `SI_USER` (0) for `kill(2)`, `SI_TKILL` (-6) for
    /// `tgkill(2)`, `SI_KERNEL` (0x80) for a signal the kernel sent itself.
    pub si_code: i32,
    /// `TRACE_SIGNAL_*`: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 info lost.
    pub result: i32,
    /// 1 when sent to the whole thread group.
    pub group: u32,
    /// `hook::*` bit of the hook that produced it.
    pub hook: u32,
    /// The target memcg's usage and limit (`max`) in pages, read at the signal: a userspace OOM
    /// killer's kill frees them at once, so a later read would see the aftermath.
    pub target_usage_pages: u64,
    pub target_limit_pages: u64,
    /// This record's number in the kernel's sequence of SIGKILL records ([`seq`]).
    pub seq: u64,
}

/// Record sequences (`SEQ` map indices): each kind of record userspace reports numbers its
/// records 1, 2, 3, … in the kernel, a number taken before the ring has room, so a record lost
/// leaves a gap.
pub mod seq {
    pub const KILL: u32 = 0;
    pub const PRESSURE: u32 = 1;
    pub const SIGKILL: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// `si_code` of a signal the kernel sent itself (`SEND_SIG_PRIV`).
pub const SI_KERNEL: i32 = 0x80;

pub const INFERRED_NONE: u32 = 0;
pub const INFERRED_MEMCG: u32 = 1;

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
const _: () = assert!(core::mem::size_of::<OomKillRecord>() == 200);
const _: () = assert!(core::mem::size_of::<CgroupPathRecord>() == 16 + 8 * 8 + 8 * 128);
const _: () = assert!(core::mem::size_of::<OomContext>() == 24);
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 16);
const _: () = assert!(core::mem::size_of::<SigkillRecord>() == 16 + 2 * 32 + 16 + 16 + 8);

// SAFETY: all of these are #[repr(C)], contain only integers and have no padding (size asserts
// above), so every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl Pod for TaskRecord {}
#[cfg(feature = "user")]
unsafe impl Pod for OomKillRecord {}
#[cfg(feature = "user")]
unsafe impl Pod for OomContext {}
#[cfg(feature = "user")]
unsafe impl Pod for CgroupPathRecord {}
#[cfg(feature = "user")]
unsafe impl Pod for ExecRecord {}
#[cfg(feature = "user")]
unsafe impl Pod for SigkillRecord {}
