//! Evidence from the kernel's own OOM report: what `explain --kernel-log` can judge for kills
//! that happened before oomtrace ran. The report has the victim's sizes and `oom_score_adj`,
//! the OOM memcg's usage, limit and `memory.stat`, and the task table; not the command line or
//! environment, the container-init fact, per-cgroup shares or a timeline ([`NOT_IN_KERNEL_LOG`]).
use super::evidence::{Evidence, OvercommitFacts, StatFacts, TaskFacts, VictimFacts};
use crate::{capture::kernel_log::OomReport, enrich::workload};

/// The page size the kernel log's page counts are in. The log does not print it; 4 KiB is what
/// every kernel oomtrace supports (x86-64, and arm64 with 4 KiB pages) uses.
pub const LOG_PAGE_SIZE: u64 = 4096;

/// Evidence a kernel log cannot give, so rules that need it stay silent.
pub const NOT_IN_KERNEL_LOG: &[&str] = &[
    "command line and environment (runtime heap caps)",
    "container init",
    "per-cgroup shares (sidecars)",
    "usage timeline (leak or spike)",
    "workload names",
];

/// `memory.stat` as the report printed it: v2 names, else v1's hierarchical `total_*` lines,
/// else v1's own lines.
fn stat(r: &OomReport) -> Option<StatFacts> {
    let (_, m) = r.memory_stat.as_ref()?;
    let get = |v2: &str, v1: &str| -> Option<u64> {
        m.get(v2)
            .or_else(|| m.get(&format!("total_{v1}")))
            .or_else(|| m.get(v1))
            .copied()
    };
    let v1 = m.contains_key("rss") || m.contains_key("total_rss");
    Some(StatFacts {
        anon: get("anon", "rss"),
        file: get("file", "cache"),
        shmem: get("shmem", "shmem"),
        kernel: if v1 {
            r.kmem_usage
                .as_ref()
                .map(|k| k.usage_kb.saturating_mul(1024))
        } else {
            m.get("kernel").copied()
        },
        slab: m.get("slab").copied(),
        sock: m.get("sock").copied(),
        kernel_stack: m.get("kernel_stack").copied(),
        pagetables: m.get("pagetables").copied(),
    })
}

/// The kernel's badness of a task-table row (`oom_badness`): RSS + swap entries + page-table
/// pages, plus `oom_score_adj` × (`totalpages` / 1000); `None` for -1000 (never killed).
pub fn badness(
    rss_pages: u64,
    swapents: u64,
    pgtables_bytes: u64,
    adj: i32,
    totalpages: u64,
) -> Option<i64> {
    if adj == -1000 {
        return None;
    }
    // The numbers come from a log file: out of range gives no points, not an overflow.
    let base = rss_pages
        .checked_add(swapents)?
        .checked_add(pgtables_bytes / LOG_PAGE_SIZE)?;
    i64::try_from(base)
        .ok()?
        .checked_add(i64::from(adj).checked_mul(i64::try_from(totalpages / 1000).ok()?)?)
}

/// The evidence one report holds.
pub fn evidence(r: &OomReport) -> Evidence {
    let summary = r.summary.as_ref();
    let global = summary.map_or(r.killed.global, |s| s.constraint != "CONSTRAINT_MEMCG");
    let limit = r
        .memcg_usage
        .as_ref()
        .map(|u| u.limit_kb.saturating_mul(1024));
    let page = LOG_PAGE_SIZE;
    let totalpages = match limit {
        Some(l) if !global => Some(l / page),
        _ => r.ram_pages.map(|ram| {
            ram.saturating_add(r.swap_total_kb.unwrap_or(0).saturating_mul(1024) / page)
        }),
    };
    let victim_cgroup = summary.and_then(|s| s.task_memcg.clone());
    let k = &r.killed;
    let tasks = (!r.tasks.is_empty()).then(|| {
        r.tasks
            .iter()
            .map(|t| TaskFacts {
                pid: t.tgid.unwrap_or(t.pid),
                comm: t.name.clone(),
                cgroup: None,
                rss_bytes: t.rss_pages.saturating_mul(page),
                swap_bytes: Some(t.swapents.saturating_mul(page)),
                pgtables_bytes: Some(t.pgtables_bytes),
                oom_score_adj: t.oom_score_adj,
                points: totalpages.and_then(|tp| {
                    badness(
                        t.rss_pages,
                        t.swapents,
                        t.pgtables_bytes,
                        t.oom_score_adj,
                        tp,
                    )
                }),
                victim: t.pid == k.pid || t.tgid == Some(k.pid),
            })
            .collect()
    });
    Evidence {
        global,
        oom_memcg: summary
            .and_then(|s| s.oom_memcg.clone())
            .filter(|_| !global),
        limit_bytes: limit.filter(|_| !global),
        usage_bytes: r
            .memcg_usage
            .as_ref()
            .map(|u| u.usage_kb.saturating_mul(1024))
            .filter(|_| !global),
        order: r.invoked.as_ref().map(|i| i.order),
        page_size: page,
        victim: VictimFacts {
            pid: Some(k.pid),
            comm: Some(k.comm.clone()),
            anon_rss_bytes: Some(k.anon_rss_kb.saturating_mul(1024)),
            file_rss_bytes: Some(k.file_rss_kb.saturating_mul(1024)),
            shmem_rss_bytes: Some(k.shmem_rss_kb.saturating_mul(1024)),
            pgtables_bytes: Some(k.pgtables_kb.saturating_mul(1024)),
            oom_score_adj: Some(k.oom_score_adj),
            cgroup: victim_cgroup.clone(),
        },
        process: None,
        in_container: victim_cgroup.as_deref().is_some_and(|p| {
            let w = workload::parse(p);
            w.container_id.is_some() || w.runtime.is_some()
        }),
        stat: if global { None } else { stat(r) },
        tasks,
        children: None,
        timeline: None,
        group_kill: Some(r.group_kill.is_some()),
        overcommit: if global {
            r.ram_pages.map(|ram| OvercommitFacts {
                mem_total_bytes: ram.saturating_mul(page),
                swap_total_bytes: r.swap_total_kb.unwrap_or(0).saturating_mul(1024),
                limits_sum_bytes: None,
                limited_cgroups: None,
            })
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::kernel_log::parse_log;

    #[test]
    fn badness_is_the_kernels() {
        // 30 MiB RSS, no swap, 96 KiB page tables, adj 500 in a 64 MiB memcg (16384 pages).
        assert_eq!(
            badness(7680, 0, 98304, 500, 16384),
            Some(7680 + 24 + 500 * 16)
        );
        assert_eq!(badness(7680, 0, 0, -1000, 16384), None);
    }

    #[test]
    fn a_real_v1_report_gives_its_numbers() {
        let text = include_str!("../../tests/fixtures/kernel_log/6.18-v1-sidecar.dmesg");
        let reports = parse_log(text);
        assert!(!reports.is_empty());
        // The first kill's header was rate-limited away; the second has it all.
        let r = reports
            .iter()
            .find(|r| r.memcg_usage.is_some() && !r.tasks.is_empty())
            .expect("a report with its header");
        let e = evidence(r);
        assert!(!e.global);
        assert_eq!(
            e.limit_bytes,
            r.memcg_usage
                .as_ref()
                .map(|u| u.limit_kb.saturating_mul(1024))
        );
        assert_eq!(e.victim.pid, Some(r.killed.pid));
        let tasks = e.tasks.as_ref().expect("a task table");
        assert_eq!(tasks.len(), r.tasks.len());
        assert_eq!(tasks.iter().filter(|t| t.victim).count(), 1);
        let stat = e.stat.expect("memory.stat");
        let m = &r.memory_stat.as_ref().expect("stat").1;
        assert_eq!(stat.anon, m.get("total_rss").copied());
        assert_eq!(stat.file, m.get("total_cache").copied());
    }
}
