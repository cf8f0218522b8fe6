//! The probe table: for each thing oomtrace must observe, the hooks that can observe it, best
//! first. The tracer walks each probe's hooks, skips those the kernel or `--attach` rules out
//! (saying why) and keeps the first that loads and attaches.
use std::fmt;

use oomtrace_common::hook;

/// How a hook is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// BTF tracepoint (`tp_btf`); `arg0` names the struct the first argument must point to.
    TpBtf {
        tracepoint: &'static str,
        arg0: Option<&'static str>,
    },
    /// fentry on a kernel function, with an optional fexit program.
    Fentry { function: &'static str },
    /// kprobe on a kernel function, with an optional kretprobe program.
    Kprobe { function: &'static str },
    /// Classic tracefs tracepoint.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
}

/// The `--attach` families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// The best hook each probe can get, falling back as needed.
    Auto,
    /// BTF hooks only: tp_btf and fentry/fexit.
    Fentry,
    /// kprobes/kretprobes for kernel functions, the classic tracepoint for the victim.
    Kprobe,
    /// Classic tracepoints only (the OOM context is then inferred).
    Tracepoint,
}

impl AttachMode {
    /// The mode named as `--attach` names it (`auto`, `fentry`, `kprobe`, `tracepoint`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "fentry" => Some(Self::Fentry),
            "kprobe" => Some(Self::Kprobe),
            "tracepoint" => Some(Self::Tracepoint),
            _ => None,
        }
    }

    pub fn allows(self, kind: HookKind) -> bool {
        match self {
            AttachMode::Auto => true,
            AttachMode::Fentry => matches!(kind, HookKind::TpBtf { .. } | HookKind::Fentry { .. }),
            AttachMode::Kprobe => {
                matches!(kind, HookKind::Kprobe { .. } | HookKind::Tracepoint { .. })
            }
            AttachMode::Tracepoint => matches!(kind, HookKind::Tracepoint { .. }),
        }
    }
}

/// One way to observe a probe's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub kind: HookKind,
    /// Name of the eBPF program (the function name in `oomtrace-ebpf`).
    pub program: &'static str,
    /// Program attached at the function's return, when the hook needs one.
    pub exit_program: Option<&'static str>,
    /// `oomtrace_common::hook` bit the records carry.
    pub bit: u32,
    /// Where the hook first appeared, for messages.
    pub since: &'static str,
}

impl Hook {
    /// Short name used in records' `capture.hooks` and in logs, e.g. `tp_btf/mark_victim`.
    pub fn name(&self) -> String {
        match self.kind {
            HookKind::TpBtf { tracepoint, .. } => format!("tp_btf/{tracepoint}"),
            HookKind::Fentry { function } => format!("fentry/{function}"),
            HookKind::Kprobe { function } => format!("kprobe/{function}"),
            HookKind::Tracepoint { category, name } => format!("tracepoint/{category}/{name}"),
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Something oomtrace observes, and the hooks that can observe it, best first.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub name: &'static str,
    pub purpose: &'static str,
    /// Without this probe oomtrace cannot run.
    pub required: bool,
    /// What happens when no hook attaches (for optional probes).
    pub without: &'static str,
    /// Feeds memory-pressure timelines and records (not attached with `--no-pressure`, and not
    /// bound by `--attach`, which chooses OOM hooks).
    pub pressure: bool,
    pub hooks: &'static [Hook],
}

pub const VICTIM: Probe = Probe {
    name: "victim",
    purpose: "one record per OOM victim (oom:mark_victim)",
    required: true,
    without: "no OOM kill can be recorded",
    pressure: false,
    hooks: &[
        Hook {
            kind: HookKind::TpBtf {
                tracepoint: "mark_victim",
                arg0: Some("task_struct"),
            },
            program: "oomtrace_tp_btf_mark_victim",
            exit_program: None,
            bit: hook::TP_BTF_MARK_VICTIM,
            since: "6.9 (6.6.y stable): mark_victim passes the task",
        },
        Hook {
            kind: HookKind::Fentry {
                function: "mark_oom_victim",
            },
            program: "oomtrace_fentry_mark_oom_victim",
            exit_program: None,
            bit: hook::FENTRY_MARK_OOM_VICTIM,
            since: "5.5 with fentry",
        },
        Hook {
            kind: HookKind::Kprobe {
                function: "mark_oom_victim",
            },
            program: "oomtrace_kprobe_mark_oom_victim",
            exit_program: None,
            bit: hook::KPROBE_MARK_OOM_VICTIM,
            since: "any kernel with kprobes",
        },
        Hook {
            kind: HookKind::Tracepoint {
                category: "oom",
                name: "mark_victim",
            },
            program: "oomtrace_tracepoint_mark_victim",
            exit_program: None,
            bit: hook::TRACEPOINT_MARK_VICTIM,
            since: "4.13 (pid only before 6.9)",
        },
    ],
};

pub const OOM_CONTEXT: Probe = Probe {
    name: "oom_context",
    purpose: "the kernel's verdict: constraint, OOM memcg, points, totalpages, gfp_mask, order (oom_kill_process)",
    required: false,
    without: "constraint and OOM memcg inferred from page counters; points, totalpages, gfp_mask and order unknown",
    pressure: false,
    hooks: &[
        Hook {
            kind: HookKind::Fentry {
                function: "oom_kill_process",
            },
            program: "oomtrace_fentry_oom_kill_process",
            exit_program: Some("oomtrace_fexit_oom_kill_process"),
            bit: hook::FENTRY_OOM_KILL_PROCESS,
            since: "5.5 with fentry",
        },
        Hook {
            kind: HookKind::Kprobe {
                function: "oom_kill_process",
            },
            program: "oomtrace_kprobe_oom_kill_process",
            exit_program: Some("oomtrace_kretprobe_oom_kill_process"),
            bit: hook::KPROBE_OOM_KILL_PROCESS,
            since: "any kernel with kprobes",
        },
    ],
};

pub const MEMCG_LRUVEC_STAT: Probe = Probe {
    name: "memcg_lruvec_stat",
    purpose: "anon, file, shmem and slab charges per cgroup and in-kernel near-limit detection (memcg:mod_memcg_lruvec_state)",
    required: false,
    without: "timelines from cgroup files (1 s) and reclaim; near-limit records from 1 s cgroup-file samples",
    pressure: true,
    hooks: &[Hook {
        kind: HookKind::TpBtf {
            tracepoint: "mod_memcg_lruvec_state",
            arg0: Some("mem_cgroup"),
        },
        program: "oomtrace_tp_btf_mod_memcg_lruvec_state",
        exit_program: None,
        bit: hook::TP_BTF_MOD_MEMCG_LRUVEC_STATE,
        since: "6.13",
    }],
};

pub const MEMCG_STAT: Probe = Probe {
    name: "memcg_stat",
    purpose: "kernel-memory and socket charges per cgroup (memcg:mod_memcg_state)",
    required: false,
    without: "no kernel/sock charge deltas in timelines",
    pressure: true,
    hooks: &[Hook {
        kind: HookKind::TpBtf {
            tracepoint: "mod_memcg_state",
            arg0: Some("mem_cgroup"),
        },
        program: "oomtrace_tp_btf_mod_memcg_state",
        exit_program: None,
        bit: hook::TP_BTF_MOD_MEMCG_STATE,
        since: "6.13",
    }],
};

pub const RECLAIM_BEGIN: Probe = Probe {
    name: "reclaim_begin",
    purpose: "start of each memcg reclaim pass (vmscan:mm_vmscan_memcg_reclaim_begin)",
    required: false,
    without: "no reclaim counts or stall times",
    pressure: true,
    hooks: &[
        Hook {
            kind: HookKind::TpBtf {
                tracepoint: "mm_vmscan_memcg_reclaim_begin",
                arg0: None,
            },
            program: "oomtrace_tp_btf_memcg_reclaim_begin",
            exit_program: None,
            bit: hook::TP_BTF_MEMCG_RECLAIM_BEGIN,
            since: "5.5 (tp_btf)",
        },
        Hook {
            kind: HookKind::Tracepoint {
                category: "vmscan",
                name: "mm_vmscan_memcg_reclaim_begin",
            },
            program: "oomtrace_tracepoint_memcg_reclaim_begin",
            exit_program: None,
            bit: hook::TRACEPOINT_MEMCG_RECLAIM_BEGIN,
            since: "2.6.36",
        },
    ],
};

pub const RECLAIM_END: Probe = Probe {
    name: "reclaim_end",
    purpose: "end of each memcg reclaim pass: count, stall time and near-limit check (vmscan:mm_vmscan_memcg_reclaim_end)",
    required: false,
    without: "no reclaim counts or stall times",
    pressure: true,
    hooks: &[
        Hook {
            kind: HookKind::TpBtf {
                tracepoint: "mm_vmscan_memcg_reclaim_end",
                arg0: None,
            },
            program: "oomtrace_tp_btf_memcg_reclaim_end",
            exit_program: None,
            bit: hook::TP_BTF_MEMCG_RECLAIM_END,
            since: "5.5 (tp_btf)",
        },
        Hook {
            kind: HookKind::Tracepoint {
                category: "vmscan",
                name: "mm_vmscan_memcg_reclaim_end",
            },
            program: "oomtrace_tracepoint_memcg_reclaim_end",
            exit_program: None,
            bit: hook::TRACEPOINT_MEMCG_RECLAIM_END,
            since: "2.6.36",
        },
    ],
};

pub const EXEC: Probe = Probe {
    name: "exec",
    purpose: "each exec, so the victim's command line, executable and memory settings are read from /proc while it lives (sched:sched_process_exec)",
    required: false,
    without: "victim.process from the start-up scan of /proc, or read at the kill (a dying process has no command line left): programs started later may have none",
    pressure: false,
    hooks: &[
        Hook {
            kind: HookKind::TpBtf {
                tracepoint: "sched_process_exec",
                arg0: Some("task_struct"),
            },
            program: "oomtrace_tp_btf_sched_process_exec",
            exit_program: None,
            bit: hook::TP_BTF_SCHED_PROCESS_EXEC,
            since: "5.5 (tp_btf)",
        },
        Hook {
            kind: HookKind::Tracepoint {
                category: "sched",
                name: "sched_process_exec",
            },
            program: "oomtrace_tracepoint_sched_process_exec",
            exit_program: None,
            bit: hook::TRACEPOINT_SCHED_PROCESS_EXEC,
            since: "3.4",
        },
    ],
};

pub const SIGKILL: Probe = Probe {
    name: "sigkill",
    purpose: "who sent each SIGKILL (signal:signal_generate, filtered on the signal number first in the kernel)",
    required: false,
    without: "no sigkill records: kills other than the kernel's OOM killer go unexplained",
    pressure: false,
    hooks: &[
        Hook {
            kind: HookKind::TpBtf {
                tracepoint: "signal_generate",
                arg0: None,
            },
            program: "oomtrace_tp_btf_signal_generate",
            exit_program: None,
            bit: hook::TP_BTF_SIGNAL_GENERATE,
            since: "5.5 (tp_btf)",
        },
        Hook {
            kind: HookKind::Tracepoint {
                category: "signal",
                name: "signal_generate",
            },
            program: "oomtrace_tracepoint_signal_generate",
            exit_program: None,
            bit: hook::TRACEPOINT_SIGNAL_GENERATE,
            since: "3.8",
        },
    ],
};

/// The probes `--no-stat-hooks` leaves out.
pub const STAT_PROBES: &[&str] = &[MEMCG_LRUVEC_STAT.name, MEMCG_STAT.name];

/// Every probe, in attach order.
pub const PROBES: &[Probe] = &[
    VICTIM,
    OOM_CONTEXT,
    MEMCG_LRUVEC_STAT,
    MEMCG_STAT,
    RECLAIM_BEGIN,
    RECLAIM_END,
    EXEC,
    SIGKILL,
];

/// Names of the hooks whose bits are set in a record's `hooks`.
pub fn hook_names(bits: u32) -> Vec<String> {
    PROBES
        .iter()
        .flat_map(|p| p.hooks.iter())
        .filter(|h| bits & h.bit != 0)
        .map(Hook::name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_has_a_distinct_bit_and_program() {
        let hooks: Vec<&Hook> = PROBES.iter().flat_map(|p| p.hooks.iter()).collect();
        for (i, a) in hooks.iter().enumerate() {
            for b in &hooks[i + 1..] {
                assert_ne!(a.bit, b.bit, "{a} and {b}");
                assert_ne!(a.program, b.program);
            }
        }
        assert_eq!(
            hook_names(hook::TP_BTF_MARK_VICTIM | hook::FENTRY_OOM_KILL_PROCESS),
            ["tp_btf/mark_victim", "fentry/oom_kill_process"]
        );
    }

    #[test]
    fn attach_modes_select_families() {
        let kinds: Vec<HookKind> = VICTIM.hooks.iter().map(|h| h.kind).collect();
        let allowed = |m: AttachMode| kinds.iter().filter(|k| m.allows(**k)).count();
        assert_eq!(allowed(AttachMode::Auto), 4);
        assert_eq!(allowed(AttachMode::Fentry), 2);
        assert_eq!(allowed(AttachMode::Kprobe), 2);
        assert_eq!(allowed(AttachMode::Tracepoint), 1);
    }
}
