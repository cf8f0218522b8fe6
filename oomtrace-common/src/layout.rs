//! Kernel struct offsets, resolved from BTF by userspace and handed to the programs.
#[cfg(feature = "user")]
use aya::Pod;

/// Marks an offset or index that the running kernel does not have.
pub const ABSENT: u32 = u32::MAX;

/// How many memcg ancestors the in-kernel constraint inference walks at most.
pub const MAX_MEMCG_DEPTH: u32 = 16;

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
    /// Classic `signal/signal_generate` tracepoint fields (from tracefs `format`); `comm` is an
    /// inline `char[16]` there.
    pub sig_tp_sig: u32,
    pub sig_tp_code: u32,
    pub sig_tp_comm: u32,
    pub sig_tp_pid: u32,
    pub sig_tp_group: u32,
    pub sig_tp_result: u32,
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
            sig_tp_sig: ABSENT,
            sig_tp_code: ABSENT,
            sig_tp_comm: ABSENT,
            sig_tp_pid: ABSENT,
            sig_tp_group: ABSENT,
            sig_tp_result: ABSENT,
            oom_margin_pages: 8,
        }
    }
}

const _: () = assert!(core::mem::size_of::<KernelLayout>() == 57 * 4);

// SAFETY: #[repr(C)], only u32 fields, no padding (size assert above): any bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl Pod for KernelLayout {}
