//! The enriched OOM kill event: a kernel record with wall time, cgroup paths, an incident id
//! and workload names. Rendered by `crate::output::schema`.
use std::collections::HashMap;

use oomtrace_common::{field, OomKillRecord, INFERRED_MEMCG};

use crate::{
    capture::probes,
    capture::record::c_str,
    cgroup::{CgroupRef, CgroupResolver},
    enrich::names::{Namer, WorkloadNames},
    enrich::workload::{self, Scope},
    timefmt,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub pid: Option<u32>,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<CgroupRef>,
}

impl TaskInfo {
    /// The task's memory cgroup path, when known.
    pub fn cgroup_path(&self) -> Option<&str> {
        self.cgroup.as_ref().and_then(|c| c.path.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub task: TaskInfo,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i32>,
    pub total_vm_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub file_rss_bytes: Option<u64>,
    pub shmem_rss_bytes: Option<u64>,
    pub pgtables_bytes: Option<u64>,
    pub points: Option<i64>,
    /// Whether the kernel had sent SIGKILL when it marked the victim (known only from hooks
    /// that see the victim's task_struct).
    pub sigkill_pending: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomMemcg {
    pub cgroup: CgroupRef,
    pub usage_bytes: u64,
    pub limit_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oom {
    pub constraint: Option<&'static str>,
    /// `"kernel"` or `"inferred"`.
    pub constraint_source: &'static str,
    pub gfp_mask: Option<u32>,
    pub order: Option<i32>,
    pub totalpages: Option<u64>,
    pub memcg: Option<OomMemcg>,
}

/// What the kernel did to the victim it marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL was sent (`__oom_kill_process`).
    Killed,
    /// The victim was already exiting: the kernel sent no signal, only granted it memory
    /// reserves and queued the OOM reaper (`task_will_free_mem`), and printed no kill report.
    AlreadyExiting,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Killed => "killed",
            Action::AlreadyExiting => "already_exiting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKillEvent {
    pub time_unix_ns: i128,
    pub ktime_ns: u64,
    pub host: String,
    pub incident: String,
    /// Known when the hook sees the victim's task (not from the classic tracepoint).
    pub action: Option<Action>,
    pub victim: Victim,
    pub trigger: TaskInfo,
    pub oom: Oom,
    pub hooks: Vec<String>,
    pub events_lost: u64,
    /// The record's number in the kernel's sequence of kill records (`capture.seq`).
    pub seq: u64,
    /// Whose limit was hit (container, pod, node or other), from the constraint and the OOM
    /// memcg's path.
    pub scope: Option<Scope>,
    /// Workload names, when the enricher has a [`Namer`].
    pub names: Option<EventNames>,
}

/// Workload names of the cgroups in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNames {
    pub node: Option<String>,
    pub victim: Option<WorkloadNames>,
    pub trigger: Option<WorkloadNames>,
    pub oom_memcg: Option<WorkloadNames>,
}

/// Turns kernel records into events: wall time, cgroup paths, names, incident ids.
pub struct Enricher {
    clock: timefmt::ClockMap,
    host: String,
    boot_id: String,
    page_size: u64,
    constraints: HashMap<u32, &'static str>,
    /// Last incident per trigger thread, for victims without an exact incident key.
    recent: HashMap<u32, (u64, String)>,
    namer: Option<Namer>,
    node: Option<String>,
}

/// Victims of one invocation are marked within microseconds; a gap this long starts a new one.
const INCIDENT_GAP_NS: u64 = 100_000_000;

/// Size of `recent` at which entries older than [`INCIDENT_GAP_NS`] (which can never match
/// again) are dropped: the map holds the triggers of the last 100 ms, plus at most this many.
const RECENT_PRUNE_AT: usize = 256;

impl Enricher {
    pub fn new(constraints: HashMap<u32, &'static str>, page_shift: u32) -> Self {
        Self {
            clock: timefmt::ClockMap::now(),
            host: host_name(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            page_size: 1 << page_shift,
            constraints,
            recent: HashMap::new(),
            namer: None,
            node: None,
        }
    }

    /// The same enricher with a fixed clock, host name and boot id (which the incident ids
    /// hash), for tests whose output must not depend on the machine or the time.
    #[cfg(test)]
    pub(crate) fn with_fixed_identity(
        mut self,
        clock: timefmt::ClockMap,
        host: &str,
        boot_id: &str,
    ) -> Self {
        self.clock = clock;
        self.host = host.to_string();
        self.boot_id = boot_id.to_string();
        self
    }

    /// Adds workload names (systemd unit, container, Kubernetes pod) and the node's name.
    pub fn with_names(mut self, namer: Namer, node: Option<String>) -> Self {
        self.namer = Some(namer);
        self.node = node;
        self
    }

    /// The namer's miss counters: (cgroup paths of no known shape, Kubernetes workloads
    /// missing from the kubelet's log tree, and from the API cache).
    pub fn name_misses(&self) -> (u64, u64, u64) {
        self.namer.as_ref().map_or((0, 0, 0), |n| {
            (n.path_misses, n.kubelet_misses, n.api_misses)
        })
    }

    /// Wall-clock ns (Unix epoch) of a kernel `CLOCK_MONOTONIC` time.
    pub fn wall_ns(&self, ktime_ns: u64) -> i128 {
        self.clock.wall_ns(ktime_ns)
    }

    /// The kernel's page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The Kubernetes node name, when set.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Workload names of a cgroup path (`None` without a namer); a lookup that fails counts as
    /// a miss.
    pub fn names_of(&mut self, path: &str) -> Option<WorkloadNames> {
        self.namer.as_mut().map(|n| n.name(path))
    }

    /// The same without counting misses, for lookups repeated every second.
    pub fn peek_names(&mut self, path: &str) -> Option<WorkloadNames> {
        self.namer.as_mut().map(|n| n.peek(path))
    }

    fn task(
        resolver: &mut Option<&mut CgroupResolver>,
        t: &oomtrace_common::TaskRecord,
        pid: bool,
        tgid: bool,
        comm: bool,
        memcg: bool,
    ) -> TaskInfo {
        TaskInfo {
            pid: pid.then_some(t.pid),
            tgid: tgid.then_some(t.tgid),
            comm: comm.then(|| c_str(&t.comm)),
            cgroup: memcg.then(|| cgroup(resolver, t.memcg_id)),
        }
    }

    fn incident(&mut self, r: &OomKillRecord) -> String {
        let has = |f: u32| r.fields & f != 0;
        if has(field::INCIDENT) {
            let source: u8 = if has(field::KERNEL_CONTEXT) {
                b'k'
            } else {
                b'm'
            };
            return format!(
                "{:016x}",
                fnv1a(&[
                    self.boot_id.as_bytes(),
                    &[source],
                    &r.trigger.pid.to_le_bytes(),
                    &r.oom_memcg_id.to_le_bytes(),
                    &r.incident.to_le_bytes(),
                ])
            );
        }
        // No exact key (inferred global OOM): victims by one trigger in quick succession.
        if let Some((t, id)) = self.recent.get(&r.trigger.pid) {
            if r.ktime_ns.saturating_sub(*t) < INCIDENT_GAP_NS {
                let id = id.clone();
                self.recent.insert(r.trigger.pid, (r.ktime_ns, id.clone()));
                return id;
            }
        }
        let id = format!(
            "{:016x}",
            fnv1a(&[
                self.boot_id.as_bytes(),
                b"t",
                &r.trigger.pid.to_le_bytes(),
                &r.ktime_ns.to_le_bytes(),
            ])
        );
        if self.recent.len() >= RECENT_PRUNE_AT {
            self.recent
                .retain(|_, (t, _)| r.ktime_ns.saturating_sub(*t) < INCIDENT_GAP_NS);
        }
        self.recent.insert(r.trigger.pid, (r.ktime_ns, id.clone()));
        id
    }

    /// The event for a kill record; cgroup paths come from `resolver` (absent without one).
    pub fn enrich(
        &mut self,
        r: &OomKillRecord,
        events_lost: u64,
        mut resolver: Option<&mut CgroupResolver>,
    ) -> OomKillEvent {
        let has = |f: u32| r.fields & f != 0;
        let task_hook = r.hooks & oomtrace_common::hook::TRACEPOINT_MARK_VICTIM == 0;
        let kernel = has(field::KERNEL_CONTEXT);
        let victim_task = Self::task(
            &mut resolver,
            &r.victim,
            has(field::VICTIM_PID),
            has(field::VICTIM_TGID),
            has(field::VICTIM_COMM),
            has(field::VICTIM_MEMCG),
        );
        let trigger = Self::task(
            &mut resolver,
            &r.trigger,
            true,
            true,
            true,
            has(field::TRIGGER_MEMCG),
        );
        let mm = has(field::VICTIM_MM);
        let constraint = if kernel {
            self.constraints.get(&r.constraint).copied()
        } else if r.constraint == INFERRED_MEMCG {
            Some("memcg")
        } else {
            Some("none")
        };
        let memcg = has(field::OOM_MEMCG).then(|| OomMemcg {
            cgroup: cgroup(&mut resolver, r.oom_memcg_id),
            usage_bytes: r.oom_memcg_usage_pages.saturating_mul(self.page_size),
            limit_bytes: r.oom_memcg_limit_pages.saturating_mul(self.page_size),
        });
        let mut ev = OomKillEvent {
            time_unix_ns: self.clock.wall_ns(r.ktime_ns),
            ktime_ns: r.ktime_ns,
            host: self.host.clone(),
            incident: self.incident(r),
            action: task_hook.then_some(if has(field::SIGKILL_PENDING) {
                Action::Killed
            } else {
                Action::AlreadyExiting
            }),
            victim: Victim {
                task: victim_task,
                uid: has(field::UID).then_some(r.uid),
                oom_score_adj: has(field::OOM_SCORE_ADJ).then_some(r.oom_score_adj),
                total_vm_bytes: mm.then_some(r.total_vm_bytes),
                anon_rss_bytes: mm.then_some(r.anon_rss_bytes),
                file_rss_bytes: mm.then_some(r.file_rss_bytes),
                shmem_rss_bytes: mm.then_some(r.shmem_rss_bytes),
                pgtables_bytes: has(field::PGTABLES).then_some(r.pgtables_bytes),
                points: kernel.then_some(r.points),
                sigkill_pending: task_hook.then_some(has(field::SIGKILL_PENDING)),
            },
            trigger,
            oom: Oom {
                constraint,
                constraint_source: if kernel { "kernel" } else { "inferred" },
                gfp_mask: kernel.then_some(r.gfp_mask),
                order: kernel.then_some(r.order),
                totalpages: kernel.then_some(r.totalpages),
                memcg,
            },
            hooks: probes::hook_names(r.hooks),
            events_lost,
            seq: r.seq,
            scope: None,
            names: None,
        };
        let oom_path = ev.oom.memcg.as_ref().and_then(|m| m.cgroup.path.clone());
        let oom_workload = oom_path.as_deref().map(workload::parse);
        ev.scope = ev.oom.constraint.map(|c| {
            // A memcg OOM whose memcg could not be resolved leaves the scope unknown.
            if c == "memcg" && oom_workload.is_none() {
                Scope::Other
            } else {
                workload::scope(c == "none", oom_workload.as_ref())
            }
        });
        if let Some(namer) = self.namer.as_mut() {
            let mut name =
                |c: Option<&CgroupRef>| c.and_then(|c| c.path.as_deref()).map(|p| namer.name(p));
            let victim = name(ev.victim.task.cgroup.as_ref());
            let trigger = name(ev.trigger.cgroup.as_ref());
            let oom_memcg = name(ev.oom.memcg.as_ref().map(|m| &m.cgroup));
            ev.names = Some(EventNames {
                node: self.node.clone(),
                victim,
                trigger,
                oom_memcg,
            });
        }
        ev
    }
}

/// The cgroup `id` with its path, when the resolver knows it.
fn cgroup(resolver: &mut Option<&mut CgroupResolver>, id: u64) -> CgroupRef {
    CgroupRef {
        id,
        path: resolver.as_mut().and_then(|r| r.path(id)),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// FNV-1a over several byte strings (a stable, dependency-free id hash).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inferred global OOM's victim (no exact incident key) by trigger `pid` at `t` ns.
    fn victim(pid: u32, t: u64) -> OomKillRecord {
        let mut r = OomKillRecord {
            ktime_ns: t,
            ..OomKillRecord::default()
        };
        r.trigger.pid = pid;
        r
    }

    #[test]
    fn recent_incidents_are_pruned() {
        let mut e = Enricher::new(HashMap::new(), 12);
        let first = e.incident(&victim(1, 1_000));
        assert_eq!(
            e.incident(&victim(1, 2_000)),
            first,
            "same trigger, 1 µs apart"
        );
        // Thousands of triggers, 1 ms apart: only those of the last 100 ms (+ the threshold)
        // stay remembered.
        for pid in 2..5_000u32 {
            e.incident(&victim(pid, u64::from(pid) * 1_000_000));
            assert!(e.recent.len() <= RECENT_PRUNE_AT, "{}", e.recent.len());
        }
        assert!(!e.recent.contains_key(&1));
        // Pruning forgets nothing that could still match.
        let last = e.incident(&victim(4_999, 4_999_000_000));
        assert_eq!(e.incident(&victim(4_999, 4_999_050_000)), last);
        assert_ne!(e.incident(&victim(4_999, 5_200_000_000)), last);
    }
}
