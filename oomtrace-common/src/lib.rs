//! Types shared by oomtrace's eBPF programs and its userspace.
//!
//! Everything here is `#[repr(C)]` and plain old data: the eBPF side writes [`records`] into the
//! ring buffer, reads [`KernelLayout`] and [`PressureConfig`] from globals that userspace fills
//! in at load time, and counts its failures by [`Failure`]. No kernel struct offset is compiled
//! in anywhere: every offset comes from the running kernel's BTF (or tracefs `format` files)
//! through [`KernelLayout`].
#![no_std]

pub mod failure;
pub mod layout;
pub mod pressure;
pub mod records;

pub use failure::Failure;
pub use layout::{KernelLayout, ABSENT, MAX_MEMCG_DEPTH};
pub use pressure::{
    pressure_source, stat_slot, MemcgStats, MemoryPressureRecord, PressureConfig, STAT_ITEMS,
    STAT_ITEM_LIMIT, STAT_ITEM_SLOTS,
};
pub use records::{
    field, hook, seq, sigkill_field, CgroupPathRecord, ExecRecord, OomContext, OomKillRecord,
    RecordKind, SigkillRecord, TaskRecord, UnknownRecordKind, CGROUP_NAME_LEN, CGROUP_PATH_DEPTH,
    INFERRED_MEMCG, INFERRED_NONE, SI_KERNEL, TASK_COMM_LEN,
};
