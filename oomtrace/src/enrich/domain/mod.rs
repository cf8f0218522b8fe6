//! Who else held the budget at a kill: the OOM domain's processes ranked by the kernel's own
//! badness, the OOM memcg's children by usage, `memory.oom.group`, and for a global OOM how
//! the node's limits compare with its memory.
//!
//! The domain is the OOM memcg and its descendants (their `cgroup.procs`), or every process for
//! a global OOM. It is read from `/proc` (`procfs.rs`) and the cgroup files (`memcg.rs`) as soon
//! as the kill record arrives, within milliseconds; `age_ms` says how long after the kill. The
//! victim's row uses the kill record's own numbers (its memory is already being freed), and
//! every victim of one incident shares one reading. Nothing here fails the stream: what cannot
//! be read is absent.
mod memcg;
mod procfs;

use std::path::PathBuf;

use crate::{
    cgroup::{is_under, MemoryHierarchy},
    enrich::{event::OomKillEvent, names::WorkloadNames},
    timefmt,
};

/// How many tasks [`DomainTasks::top`] ranks (the victim comes on top of these if it is not
/// among them).
pub const TOP_TASKS: usize = 10;
/// How many children [`MemcgChildren::top`] lists.
pub const TOP_CHILDREN: usize = 16;

/// One process of the OOM domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainTask {
    /// The thread group id.
    pub pid: u32,
    pub comm: String,
    /// Its memory cgroup.
    pub cgroup_path: Option<String>,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub swap_bytes: u64,
    pub pgtables_bytes: u64,
    pub oom_score_adj: i32,
    /// The kernel's `oom_badness()`: RSS + swap + page-table pages, plus `oom_score_adj`
    /// thousandths of the domain (`adj * (totalpages / 1000)`). `None`: never chosen
    /// (`oom_score_adj` -1000).
    pub points: Option<i64>,
    /// This record's victim.
    pub victim: bool,
    /// Workload names of `cgroup_path` (the stream fills them in).
    pub names: Option<WorkloadNames>,
}

/// The domain's processes at the kill, as the kernel's task table would list them.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainTasks {
    /// `"proc"`: `/proc/PID/status` and `oom_score_adj`.
    pub source: &'static str,
    /// From the kill to the read, in ms.
    pub age_ms: f64,
    /// Processes in the domain the kernel could have chosen.
    pub count: usize,
    /// The [`TOP_TASKS`] with the most points, most first; the victim always among them.
    pub top: Vec<DomainTask>,
}

/// One child of the OOM memcg.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildUsage {
    pub path: String,
    pub usage_bytes: u64,
    /// Its own limit, if it has one.
    pub limit_bytes: Option<u64>,
    /// `usage_bytes` over the OOM memcg's limit: its share of the budget.
    pub share: f64,
    /// Workload names of `path` (the stream fills them in).
    pub names: Option<WorkloadNames>,
}

/// The OOM memcg's children by usage, when the victim sits below it (a pod's limit, a slice).
#[derive(Debug, Clone, PartialEq)]
pub struct MemcgChildren {
    /// `"cgroup_files"`: v2 `memory.current`/`memory.max`, v1 `memory.usage_in_bytes`/
    /// `memory.limit_in_bytes`.
    pub source: &'static str,
    pub age_ms: f64,
    /// At most [`TOP_CHILDREN`], most used first.
    pub top: Vec<ChildUsage>,
}

/// A global OOM's node: its memory against the limits set on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overcommit {
    pub mem_total_bytes: u64,
    pub swap_total_bytes: u64,
    /// The limits of the top-most limited cgroups, added up.
    pub limits_sum_bytes: u64,
    /// How many top-most limited cgroups (nested limits are not counted twice).
    pub limited_cgroups: usize,
}

/// Who held the budget at one kill.
#[derive(Debug, Clone, PartialEq)]
pub struct OomDomain {
    pub tasks: Option<DomainTasks>,
    pub children: Option<MemcgChildren>,
    /// v2 `memory.oom.group` of the OOM memcg.
    pub group_kill: Option<bool>,
    /// Global OOMs only.
    pub overcommit: Option<Overcommit>,
}

/// One incident's reading, shared by its victims.
struct Reading {
    incident: String,
    read_ns: u64,
    /// The domain's processes with points (victims included as `/proc` saw them).
    tasks: Option<Vec<DomainTask>>,
    /// The domain's size in pages, for the points of victims.
    totalpages: u64,
    /// Read when a victim below the OOM memcg first asks: (read time, children).
    children: Option<(u64, Option<Vec<memcg::Child>>)>,
    group_kill: Option<bool>,
    overcommit: Option<Overcommit>,
    /// The incident's victims seen so far, from their kill records.
    victims: Vec<DomainTask>,
}

/// Reads the OOM domain of each kill, once per incident.
pub struct DomainReader {
    proc_root: PathBuf,
    hierarchy: MemoryHierarchy,
    page_size: u64,
    now: fn() -> u64,
    last: Option<Reading>,
}

/// ns from the kill to a read, as ms with µs precision (negative if the read came first).
fn age_ms(read_ns: u64, kill_ns: u64) -> f64 {
    let us = (i128::from(read_ns) - i128::from(kill_ns)) / 1000;
    us as f64 / 1000.0
}

/// The kernel's `oom_badness()` from a task's bytes.
fn badness(t: &DomainTask, totalpages: u64, page_size: u64) -> Option<i64> {
    if t.oom_score_adj == -1000 {
        return None;
    }
    let rss = (t.anon_rss_bytes + t.file_rss_bytes + t.shmem_rss_bytes) / page_size;
    let pages = rss + t.swap_bytes / page_size + t.pgtables_bytes / page_size;
    let adj = i64::from(t.oom_score_adj) * i64::try_from(totalpages / 1000).unwrap_or(i64::MAX);
    Some(i64::try_from(pages).unwrap_or(i64::MAX).saturating_add(adj))
}

fn task_from_proc(p: procfs::ProcTask, cgroup_path: Option<String>) -> DomainTask {
    DomainTask {
        pid: p.pid,
        comm: p.comm,
        cgroup_path,
        anon_rss_bytes: p.anon_kb << 10,
        file_rss_bytes: p.file_kb << 10,
        shmem_rss_bytes: p.shmem_kb << 10,
        swap_bytes: p.swap_kb << 10,
        pgtables_bytes: p.pte_kb << 10,
        oom_score_adj: p.oom_score_adj,
        points: None,
        victim: false,
        names: None,
    }
}

/// Most points first; the ineligible last; then the larger RSS, then the lower pid.
fn rank(a: &DomainTask, b: &DomainTask) -> std::cmp::Ordering {
    let rss = |t: &DomainTask| t.anon_rss_bytes + t.file_rss_bytes + t.shmem_rss_bytes;
    b.points
        .cmp(&a.points)
        .then(rss(b).cmp(&rss(a)))
        .then(a.pid.cmp(&b.pid))
}

impl DomainReader {
    /// Reads `/proc` and the memory cgroups of `hierarchy`; `page_size` in bytes.
    pub fn new(hierarchy: MemoryHierarchy, page_size: u64) -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            hierarchy,
            page_size: page_size.max(1),
            now: timefmt::monotonic_now_ns,
            last: None,
        }
    }

    /// Reads processes from another `/proc` (the host's, mounted in a container).
    pub fn with_proc_root(mut self, proc_root: impl Into<PathBuf>) -> Self {
        self.proc_root = proc_root.into();
        self
    }

    /// A fixed clock (`CLOCK_MONOTONIC` ns), for tests.
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: fn() -> u64) -> Self {
        self.now = now;
        self
    }

    /// Who held the budget at `event`'s kill. The first victim of an incident reads the
    /// domain; later victims of the same incident share that reading.
    pub fn read(&mut self, event: &OomKillEvent) -> OomDomain {
        if self.last.as_ref().map(|r| r.incident.as_str()) != Some(event.incident.as_str()) {
            self.last = Some(self.read_incident(event));
        }
        let Some(mut reading) = self.last.take() else {
            // Just set above.
            return OomDomain {
                tasks: None,
                children: None,
                group_kill: None,
                overcommit: None,
            };
        };
        let domain = self.domain(event, &mut reading);
        self.last = Some(reading);
        domain
    }

    fn read_incident(&self, event: &OomKillEvent) -> Reading {
        let memcg = event.oom.memcg.as_ref();
        let memcg_path = memcg.and_then(|m| m.cgroup.path.as_deref());
        let (mem_kb, swap_kb) = procfs::meminfo(&self.proc_root).unwrap_or((0, 0));
        let totalpages = match (event.oom.totalpages, memcg, memcg_path) {
            (Some(t), _, _) => t,
            (None, Some(m), Some(path)) => memcg::memcg_totalpages(
                &self.hierarchy,
                path,
                m.limit_bytes,
                swap_kb << 10,
                self.page_size,
            ),
            (None, Some(m), None) => m.limit_bytes / self.page_size,
            (None, None, _) => ((mem_kb + swap_kb) << 10) / self.page_size,
        };
        // The pids of the domain, with their cgroups where the walk knows them.
        let pids: Option<Vec<(u32, Option<String>)>> = match (memcg, memcg_path) {
            (Some(_), Some(path)) => memcg::domain_procs(&self.hierarchy, path)
                .map(|v| v.into_iter().map(|(pid, p)| (pid, Some(p))).collect()),
            (Some(_), None) => None,
            (None, _) => Some(
                procfs::all_pids(&self.proc_root)
                    .into_iter()
                    .map(|pid| (pid, None))
                    .collect(),
            ),
        };
        let tasks = pids.map(|pids| {
            pids.into_iter()
                // Global init is never a candidate, and the kernel's table leaves it out.
                .filter(|(pid, _)| *pid != 1)
                .filter_map(|(pid, cgroup)| {
                    let mut t = task_from_proc(procfs::read_task(&self.proc_root, pid)?, cgroup);
                    t.points = badness(&t, totalpages, self.page_size);
                    Some(t)
                })
                .collect()
        });
        let read_ns = (self.now)();
        let global = event.oom.constraint == Some("none");
        let overcommit = global.then(|| {
            let (limits_sum_bytes, limited_cgroups) = memcg::top_limits(&self.hierarchy);
            Overcommit {
                mem_total_bytes: mem_kb << 10,
                swap_total_bytes: swap_kb << 10,
                limits_sum_bytes,
                limited_cgroups,
            }
        });
        Reading {
            incident: event.incident.clone(),
            read_ns,
            tasks,
            totalpages,
            children: None,
            group_kill: memcg_path.and_then(|p| memcg::group_kill(&self.hierarchy, p)),
            overcommit,
            victims: Vec::new(),
        }
    }

    /// The victim's row from its kill record, `/proc`'s reading filling what the record lacks.
    fn victim_row(&self, event: &OomKillEvent, reading: &Reading) -> Option<DomainTask> {
        let v = &event.victim;
        let pid = v.task.tgid.or(v.task.pid)?;
        let seen = reading
            .tasks
            .as_ref()
            .and_then(|t| t.iter().find(|t| t.pid == pid));
        let mut row = DomainTask {
            pid,
            comm: v
                .task
                .comm
                .clone()
                .or_else(|| seen.map(|t| t.comm.clone()))?,
            cgroup_path: v
                .task
                .cgroup_path()
                .map(String::from)
                .or_else(|| seen.and_then(|t| t.cgroup_path.clone())),
            anon_rss_bytes: v.anon_rss_bytes.or(seen.map(|t| t.anon_rss_bytes))?,
            file_rss_bytes: v.file_rss_bytes.or(seen.map(|t| t.file_rss_bytes))?,
            shmem_rss_bytes: v.shmem_rss_bytes.or(seen.map(|t| t.shmem_rss_bytes))?,
            // The record has no swap: /proc's, if it could still be read.
            swap_bytes: seen.map_or(0, |t| t.swap_bytes),
            pgtables_bytes: v.pgtables_bytes.or(seen.map(|t| t.pgtables_bytes))?,
            oom_score_adj: v.oom_score_adj.or(seen.map(|t| t.oom_score_adj))?,
            points: None,
            victim: true,
            names: None,
        };
        row.points = v
            .points
            .or_else(|| badness(&row, reading.totalpages, self.page_size));
        Some(row)
    }

    fn domain(&self, event: &OomKillEvent, reading: &mut Reading) -> OomDomain {
        let victim = self.victim_row(event, reading);
        let victim_pid = victim.as_ref().map(|v| v.pid);
        if let Some(v) = victim {
            reading.victims.retain(|o| o.pid != v.pid);
            reading.victims.push(v);
        }
        let tasks = reading.tasks.as_ref().map(|seen| {
            let victims = &reading.victims;
            let mut all: Vec<DomainTask> = seen
                .iter()
                .filter(|t| victims.iter().all(|v| v.pid != t.pid))
                .cloned()
                .chain(victims.iter().map(|v| DomainTask {
                    victim: Some(v.pid) == victim_pid,
                    ..v.clone()
                }))
                .collect();
            all.sort_by(rank);
            let mut top: Vec<DomainTask> = all.iter().take(TOP_TASKS).cloned().collect();
            if !top.iter().any(|t| t.victim) {
                top.extend(all.iter().find(|t| t.victim).cloned());
            }
            for t in top.iter_mut().filter(|t| t.cgroup_path.is_none()) {
                t.cgroup_path =
                    procfs::memory_cgroup(&self.proc_root, t.pid, self.hierarchy.version);
            }
            DomainTasks {
                source: "proc",
                age_ms: age_ms(reading.read_ns, event.ktime_ns),
                count: all.iter().filter(|t| t.points.is_some()).count(),
                top,
            }
        });
        OomDomain {
            tasks,
            children: self.children(event, reading),
            group_kill: reading.group_kill,
            overcommit: reading.overcommit.clone(),
        }
    }

    /// The OOM memcg's children, when it is a strict ancestor of the victim's cgroup.
    fn children(&self, event: &OomKillEvent, reading: &mut Reading) -> Option<MemcgChildren> {
        let memcg = event.oom.memcg.as_ref()?;
        let path = memcg.cgroup.path.as_deref()?;
        let victim = event.victim.task.cgroup_path()?;
        if victim == path || !is_under(victim, path) {
            return None;
        }
        let (read_ns, children) = reading.children.get_or_insert_with(|| {
            let children = memcg::children(&self.hierarchy, path);
            ((self.now)(), children)
        });
        let mut top: Vec<ChildUsage> = children
            .as_ref()?
            .iter()
            .map(|(path, usage, limit)| ChildUsage {
                path: path.clone(),
                usage_bytes: *usage,
                limit_bytes: *limit,
                share: if memcg.limit_bytes == 0 {
                    0.0
                } else {
                    (*usage as f64 / memcg.limit_bytes as f64 * 10_000.0).round() / 10_000.0
                },
                names: None,
            })
            .collect();
        top.sort_by(|a, b| b.usage_bytes.cmp(&a.usage_bytes).then(a.path.cmp(&b.path)));
        top.truncate(TOP_CHILDREN);
        Some(MemcgChildren {
            source: "cgroup_files",
            age_ms: age_ms(*read_ns, event.ktime_ns),
            top,
        })
    }
}

#[cfg(test)]
mod tests;
