//! Evidence from a live kill: the kernel record as enriched, its pressure section (timeline and
//! `memory.stat`), the victim's process identity and the OOM domain read at the kill.
use super::evidence::{
    ChildFacts, Evidence, OvercommitFacts, ProcessFacts, StatFacts, TaskFacts, TimelineFacts,
    VictimFacts,
};
use crate::{
    enrich::{
        domain::OomDomain, event::OomKillEvent, names::WorkloadNames, process::ProcessIdentity,
        workload,
    },
    pressure::monitor::KillPressure,
};

/// The evidence the record and its pressure section hold (process and domain are added by
/// the caller, which owns them).
pub fn evidence(event: &OomKillEvent, pressure: Option<&KillPressure>, page_size: u64) -> Evidence {
    let v = &event.victim;
    let victim_path = v.task.cgroup_path().map(str::to_string);
    let memcg = event.oom.memcg.as_ref();
    let global = match event.oom.constraint {
        Some(c) => c != "memcg",
        None => memcg.is_none(),
    };
    let in_container = victim_path.as_deref().is_some_and(|p| {
        let w = workload::parse(p);
        w.container_id.is_some() || w.runtime.is_some() || w.level == workload::Level::Container
    });
    Evidence {
        global,
        oom_memcg: memcg.and_then(|m| m.cgroup.path.clone()),
        limit_bytes: memcg.map(|m| m.limit_bytes),
        usage_bytes: memcg.map(|m| m.usage_bytes),
        order: event.oom.order,
        page_size,
        victim: VictimFacts {
            pid: v.task.tgid.or(v.task.pid),
            comm: v.task.comm.clone(),
            anon_rss_bytes: v.anon_rss_bytes,
            file_rss_bytes: v.file_rss_bytes,
            shmem_rss_bytes: v.shmem_rss_bytes,
            pgtables_bytes: v.pgtables_bytes,
            oom_score_adj: v.oom_score_adj,
            cgroup: victim_path,
        },
        in_container,
        stat: pressure.and_then(|p| p.stat.as_ref()).map(|s| StatFacts {
            anon: s.stat.anon,
            file: s.stat.file,
            shmem: s.stat.shmem,
            kernel: s.stat.kernel,
            slab: s.stat.slab,
            sock: s.stat.sock,
            kernel_stack: s.stat.kernel_stack,
            pagetables: s.stat.pagetables,
        }),
        timeline: pressure.map(timeline),
        ..Evidence::default()
    }
}

fn timeline(p: &KillPressure) -> TimelineFacts {
    let kill = i128::from(p.kill_ns);
    TimelineFacts {
        samples: p
            .timeline
            .iter()
            .map(|s| {
                let ms = (i128::from(s.ktime_ns) - kill) / 1_000_000;
                (i64::try_from(ms).unwrap_or(i64::MIN), s.usage_bytes)
            })
            .collect(),
        growth_bytes_per_s: p.growth_bytes_per_s,
    }
}

/// The victim's identity as the rules read it.
pub fn process_facts(p: &ProcessIdentity) -> ProcessFacts {
    ProcessFacts {
        executable: p.executable.clone(),
        args: p.args.clone(),
        env: p.env.clone(),
        env_read: p.env_read,
        container_init: p.container_init,
    }
}

/// A short readable name of a cgroup: its Kubernetes container, else its systemd unit.
fn label(names: Option<&WorkloadNames>) -> Option<String> {
    let n = names?;
    n.pod
        .as_ref()
        .and_then(|p| p.container.clone())
        .or_else(|| n.workload.systemd_unit.clone())
}

/// Adds who else held the budget: the domain's top tasks, the OOM memcg's children, the group
/// kill and, for a global OOM, the limits against RAM.
pub fn add_domain(e: &mut Evidence, d: &OomDomain) {
    e.tasks = d.tasks.as_ref().map(|t| {
        t.top
            .iter()
            .map(|t| TaskFacts {
                pid: t.pid,
                comm: t.comm.clone(),
                cgroup: t.cgroup_path.clone(),
                rss_bytes: t
                    .anon_rss_bytes
                    .saturating_add(t.file_rss_bytes)
                    .saturating_add(t.shmem_rss_bytes),
                swap_bytes: Some(t.swap_bytes),
                pgtables_bytes: Some(t.pgtables_bytes),
                oom_score_adj: t.oom_score_adj,
                points: t.points,
                victim: t.victim,
            })
            .collect()
    });
    e.children = d.children.as_ref().map(|c| {
        c.top
            .iter()
            .map(|c| ChildFacts {
                path: c.path.clone(),
                name: label(c.names.as_ref()),
                usage_bytes: c.usage_bytes,
            })
            .collect()
    });
    e.group_kill = d.group_kill;
    e.overcommit = d.overcommit.as_ref().map(|o| OvercommitFacts {
        mem_total_bytes: o.mem_total_bytes,
        swap_total_bytes: o.swap_total_bytes,
        limits_sum_bytes: Some(o.limits_sum_bytes),
        limited_cgroups: Some(o.limited_cgroups),
    });
}
