//! What the verdict rules read: plain numbers and strings about one kill, filled from a live
//! kill record (with its pressure section, process identity and OOM domain) or from the
//! kernel's own OOM report. A field that could not be known is `None`, and the rules that need it
//! stay silent.
use std::collections::BTreeMap;

/// The victim as the kernel saw it at the kill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VictimFacts {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
    pub pgtables_bytes: Option<u64>,
    pub oom_score_adj: Option<i32>,
    /// The victim's memory cgroup path.
    pub cgroup: Option<String>,
}

/// The victim's program, as captured while it lived.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessFacts {
    pub executable: Option<String>,
    pub args: Vec<String>,
    /// Only the memory-relevant variables (`NODE_OPTIONS`, `GOMEMLIMIT`, ...).
    pub env: BTreeMap<String, String>,
    /// Whether the environment was read (an unread one may hold a heap cap).
    pub env_read: bool,
    /// PID 1 of its PID namespace.
    pub container_init: Option<bool>,
}

/// The OOM memcg's `memory.stat` breakdown near the kill (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatFacts {
    pub anon: Option<u64>,
    /// Page cache including shmem/tmpfs (v2 `file`, v1 `cache`).
    pub file: Option<u64>,
    pub shmem: Option<u64>,
    /// All kernel memory (v2 `kernel`, v1 `memory.kmem.usage_in_bytes`).
    pub kernel: Option<u64>,
    pub slab: Option<u64>,
    pub sock: Option<u64>,
    pub kernel_stack: Option<u64>,
    pub pagetables: Option<u64>,
}

/// One task of the OOM domain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFacts {
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// anon + file + shmem RSS.
    pub rss_bytes: u64,
    pub swap_bytes: Option<u64>,
    pub pgtables_bytes: Option<u64>,
    pub oom_score_adj: i32,
    /// The kernel's badness; `None` when ineligible.
    pub points: Option<i64>,
    pub victim: bool,
}

/// One child cgroup of the OOM memcg.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChildFacts {
    pub path: String,
    /// A readable name (container, unit) when known.
    pub name: Option<String>,
    pub usage_bytes: u64,
}

/// The OOM memcg's usage over the minute before the kill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimelineFacts {
    /// `(ms before the kill, usage bytes)`, oldest first; offsets are negative or zero.
    pub samples: Vec<(i64, u64)>,
    pub growth_bytes_per_s: Option<f64>,
}

/// Limits against RAM, for a global OOM.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OvercommitFacts {
    pub mem_total_bytes: u64,
    pub swap_total_bytes: u64,
    pub limits_sum_bytes: Option<u64>,
    pub limited_cgroups: Option<usize>,
}

/// Everything known about one kill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    /// No cgroup limit was hit: the node (or a cpuset/mempolicy) ran out.
    pub global: bool,
    pub oom_memcg: Option<String>,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// Allocation order of the charge that failed (`None` unknown; -1 sysrq).
    pub order: Option<i32>,
    pub page_size: u64,
    pub victim: VictimFacts,
    pub process: Option<ProcessFacts>,
    /// The victim's cgroup is a container's (or inside one).
    pub in_container: bool,
    pub stat: Option<StatFacts>,
    pub tasks: Option<Vec<TaskFacts>>,
    pub children: Option<Vec<ChildFacts>>,
    pub timeline: Option<TimelineFacts>,
    /// `memory.oom.group` was set: every task of the cgroup was killed together.
    pub group_kill: Option<bool>,
    pub overcommit: Option<OvercommitFacts>,
}

impl Evidence {
    /// The OOM memcg is above the victim's own cgroup (a pod limit, a parent slice).
    pub fn limit_above_victim(&self) -> bool {
        match (&self.oom_memcg, &self.victim.cgroup) {
            (Some(oom), Some(victim)) => oom != victim && crate::cgroup::is_under(victim, oom),
            _ => false,
        }
    }

    /// The size of the failed charge, when the kernel gave its order.
    pub fn failed_charge_bytes(&self) -> Option<u64> {
        match self.order {
            Some(o) if (0..=20).contains(&o) => Some(self.page_size << o),
            _ => None,
        }
    }

    /// The denominator for "share of the budget": usage at the kill, else the limit.
    pub fn budget_bytes(&self) -> Option<u64> {
        self.usage_bytes.or(self.limit_bytes).filter(|b| *b > 0)
    }
}
