//! The enriched OOM kill event (schema v1): built from a kernel record, rendered as JSON.
use std::collections::HashMap;

use oomtrace_common::{field, OomKillRecord, INFERRED_MEMCG};
use serde_json::{json, Map, Value};

use crate::{
    cgroup::{CgroupResolver, MemoryHierarchy},
    names::{self, Namer, WorkloadNames},
    pressure::{event::MemoryPressureEvent, monitor::Reading},
    probes,
    record::c_str,
    timefmt,
    tracer::Tracer,
    workload::{self, Scope},
};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    pub id: u64,
    /// `None` when the cgroup was gone before it could be resolved.
    pub path: Option<String>,
}

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
    /// Whose limit was hit (container, pod, node or other), from the constraint and the OOM
    /// memcg's path.
    pub scope: Option<Scope>,
    /// Workload names, when the enricher has a [`Namer`].
    pub names: Option<EventNames>,
    /// The OOM cgroup's last minute (`crate::pressure::monitor::PressureMonitor::kill_section`).
    pub pressure: Option<Value>,
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
    resolver: Option<CgroupResolver>,
    /// Last incident per trigger thread, for victims without an exact incident key.
    recent: HashMap<u32, (u64, String)>,
    namer: Option<Namer>,
    node: Option<String>,
}

/// Victims of one invocation are marked within microseconds; a gap this long starts a new one.
const INCIDENT_GAP_NS: u64 = 100_000_000;

impl Enricher {
    pub fn new(
        constraints: HashMap<u32, &'static str>,
        resolver: Option<CgroupResolver>,
        page_shift: u32,
    ) -> Self {
        Self {
            clock: timefmt::ClockMap::now(),
            host: host_name(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            page_size: 1 << page_shift,
            constraints,
            resolver,
            recent: HashMap::new(),
            namer: None,
            node: None,
        }
    }

    /// The enricher for a started tracer: cgroup paths from the memory hierarchy (absent, with a
    /// warning, when there is none), workload names from `namer`, `node` as `k8s.node.name`.
    pub fn for_tracer(tracer: &Tracer, namer: Namer, node: Option<String>) -> Self {
        let resolver = match MemoryHierarchy::detect() {
            Ok(h) => Some(CgroupResolver::new(h)),
            Err(e) => {
                log::warn!("{e}; cgroup paths and workload names will be absent");
                None
            }
        };
        Self::new(
            tracer.constraints.clone(),
            resolver,
            tracer.layout.page_shift,
        )
        .with_names(namer, node)
    }

    /// Cgroup paths the kernel side read at kills ([`crate::tracer::Tracer::take_kernel_paths`]).
    pub fn learn_paths(&mut self, paths: Vec<(u64, String)>) {
        if let Some(r) = self.resolver.as_mut() {
            r.learn(paths);
        }
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

    /// A near-limit reading as an event: wall time, host, node and workload names.
    pub fn pressure_event(&mut self, reading: Reading) -> MemoryPressureEvent {
        let names = reading.path.as_deref().and_then(|p| self.names_of(p));
        MemoryPressureEvent {
            time_unix_ns: self.clock.wall_ns(reading.ktime_ns),
            host: self.host.clone(),
            node: self.node.clone(),
            reading,
            names,
        }
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

    fn cgroup(&mut self, id: u64) -> CgroupRef {
        CgroupRef {
            id,
            path: self.resolver.as_mut().and_then(|r| r.path(id)),
        }
    }

    fn task(
        &mut self,
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
            cgroup: memcg.then(|| self.cgroup(t.memcg_id)),
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
        self.recent.insert(r.trigger.pid, (r.ktime_ns, id.clone()));
        id
    }

    pub fn enrich(&mut self, r: &OomKillRecord, events_lost: u64) -> OomKillEvent {
        let has = |f: u32| r.fields & f != 0;
        let task_hook = r.hooks & oomtrace_common::hook::TRACEPOINT_MARK_VICTIM == 0;
        let kernel = has(field::KERNEL_CONTEXT);
        let victim_task = self.task(
            &r.victim,
            has(field::VICTIM_PID),
            has(field::VICTIM_TGID),
            has(field::VICTIM_COMM),
            has(field::VICTIM_MEMCG),
        );
        let trigger = self.task(&r.trigger, true, true, true, has(field::TRIGGER_MEMCG));
        let mm = has(field::VICTIM_MM);
        let constraint = if kernel {
            self.constraints.get(&r.constraint).copied()
        } else if r.constraint == INFERRED_MEMCG {
            Some("memcg")
        } else {
            Some("none")
        };
        let memcg = has(field::OOM_MEMCG).then(|| OomMemcg {
            cgroup: self.cgroup(r.oom_memcg_id),
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
            scope: None,
            names: None,
            pressure: None,
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

/// The keys every event starts with: `event`, `schema`, `time`, `ktime_ns`, `host`.
pub fn header(event: &str, time_unix_ns: i128, ktime_ns: u64, host: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("event".into(), event.into());
    out.insert("schema".into(), SCHEMA_VERSION.into());
    out.insert("time".into(), timefmt::rfc3339_nanos(time_unix_ns).into());
    out.insert("ktime_ns".into(), ktime_ns.into());
    out.insert("host".into(), json!({ "name": host }));
    out
}

/// A workload's names at the top level of an event (`k8s.*`, `container.*`, `systemd.unit`),
/// and the node as `k8s.node.name`.
pub fn workload_json(
    out: &mut Map<String, Value>,
    names: Option<&WorkloadNames>,
    node: Option<&str>,
) {
    if let Some(n) = names {
        names::insert_json(out, n);
    }
    if let Some(node) = node {
        let k8s = out
            .entry("k8s")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(k8s) = k8s.as_object_mut() {
            k8s.insert("node".into(), json!({ "name": node }));
        }
    }
}

fn insert<T: Into<Value>>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v.into());
    }
}

fn cgroup_json(c: &CgroupRef) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), c.id.into());
    insert(&mut m, "path", c.path.clone());
    Value::Object(m)
}

fn task_json(t: &TaskInfo) -> Map<String, Value> {
    let mut m = Map::new();
    insert(&mut m, "pid", t.pid);
    insert(&mut m, "tgid", t.tgid);
    insert(&mut m, "comm", t.comm.clone());
    if let Some(c) = &t.cgroup {
        m.insert("cgroup".into(), cgroup_json(c));
    }
    m
}

impl OomKillEvent {
    /// The schema v1 JSON object.
    pub fn to_json(&self) -> Value {
        let v = &self.victim;
        let mut victim = task_json(&v.task);
        insert(&mut victim, "uid", v.uid);
        insert(&mut victim, "oom_score_adj", v.oom_score_adj);
        insert(&mut victim, "total_vm_bytes", v.total_vm_bytes);
        insert(&mut victim, "anon_rss_bytes", v.anon_rss_bytes);
        insert(&mut victim, "file_rss_bytes", v.file_rss_bytes);
        insert(&mut victim, "shmem_rss_bytes", v.shmem_rss_bytes);
        insert(&mut victim, "pgtables_bytes", v.pgtables_bytes);
        insert(&mut victim, "points", v.points);
        insert(&mut victim, "sigkill_pending", v.sigkill_pending);

        let o = &self.oom;
        let mut oom = Map::new();
        insert(&mut oom, "constraint", o.constraint);
        oom.insert("constraint_source".into(), o.constraint_source.into());
        insert(&mut oom, "gfp_mask", o.gfp_mask);
        insert(&mut oom, "order", o.order);
        insert(&mut oom, "totalpages", o.totalpages);
        if let Some(m) = &o.memcg {
            let mut memcg = Map::new();
            memcg.insert("id".into(), m.cgroup.id.into());
            insert(&mut memcg, "path", m.cgroup.path.clone());
            memcg.insert("usage_bytes".into(), m.usage_bytes.into());
            memcg.insert("limit_bytes".into(), m.limit_bytes.into());
            if let Some(n) = self.names.as_ref().and_then(|n| n.oom_memcg.as_ref()) {
                names::insert_json(&mut memcg, n);
            }
            oom.insert("memcg".into(), Value::Object(memcg));
        }
        insert(&mut oom, "scope", self.scope.map(Scope::as_str));
        let mut trigger = task_json(&self.trigger);
        // The trigger's names only when it sits in another cgroup than the victim.
        let same_cgroup = self.trigger.cgroup.as_ref().map(|c| c.id)
            == self.victim.task.cgroup.as_ref().map(|c| c.id);
        if let Some(n) = self.names.as_ref().and_then(|n| n.trigger.as_ref()) {
            if !same_cgroup {
                names::insert_json(&mut trigger, n);
            }
        }
        let mut out = header("oom_kill", self.time_unix_ns, self.ktime_ns, &self.host);
        out.insert("incident".into(), self.incident.clone().into());
        insert(&mut out, "action", self.action.map(Action::as_str));
        // The victim's workload at the top level, as OpenTelemetry resource attributes are.
        if let Some(n) = &self.names {
            workload_json(&mut out, n.victim.as_ref(), n.node.as_deref());
        }
        out.insert("victim".into(), Value::Object(victim));
        out.insert("trigger".into(), Value::Object(trigger));
        out.insert("oom".into(), Value::Object(oom));
        out.insert(
            "capture".into(),
            json!({ "hooks": self.hooks, "events_lost": self.events_lost }),
        );
        if let Some(p) = &self.pressure {
            out.insert("pressure".into(), p.clone());
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomtrace_common::{hook, RecordKind};

    fn inferred_memcg_record() -> OomKillRecord {
        let mut r = OomKillRecord {
            kind: RecordKind::OomKill as u32,
            hooks: hook::TP_BTF_MARK_VICTIM,
            fields: field::VICTIM_PID
                | field::VICTIM_TGID
                | field::VICTIM_COMM
                | field::VICTIM_MEMCG
                | field::UID
                | field::OOM_SCORE_ADJ
                | field::VICTIM_MM
                | field::PGTABLES
                | field::TRIGGER_MEMCG
                | field::CONSTRAINT_INFERRED
                | field::OOM_MEMCG
                | field::SIGKILL_PENDING
                | field::INCIDENT,
            constraint: INFERRED_MEMCG,
            ktime_ns: 5_000_000_000,
            incident: 3,
            uid: 65534,
            oom_score_adj: 500,
            total_vm_bytes: 70_012 << 10,
            anon_rss_bytes: 63_512 << 10,
            file_rss_bytes: 1_280 << 10,
            shmem_rss_bytes: 0,
            pgtables_bytes: 172 << 10,
            oom_memcg_id: 77,
            oom_memcg_usage_pages: 16384,
            oom_memcg_limit_pages: 16384,
            ..Default::default()
        };
        r.victim.pid = 100;
        r.victim.tgid = 100;
        r.victim.comm[..3].copy_from_slice(b"hog");
        r.victim.memcg_id = 77;
        r.trigger = r.victim;
        r
    }

    #[test]
    fn renders_schema_v1_with_absent_kernel_only_fields() {
        let mut e = Enricher::new(HashMap::new(), None, 12);
        let ev = e.enrich(&inferred_memcg_record(), 0);
        let j = ev.to_json();
        assert_eq!(j["event"], "oom_kill");
        assert_eq!(j["schema"], 1);
        assert_eq!(j["victim"]["anon_rss_bytes"], 63_512u64 << 10);
        assert_eq!(j["victim"]["uid"], 65534);
        assert_eq!(j["victim"]["oom_score_adj"], 500);
        assert_eq!(j["victim"]["cgroup"]["id"], 77);
        assert_eq!(j["oom"]["constraint"], "memcg");
        assert_eq!(j["oom"]["constraint_source"], "inferred");
        assert_eq!(j["oom"]["memcg"]["limit_bytes"], 64u64 << 20);
        assert_eq!(j["capture"]["hooks"][0], "tp_btf/mark_victim");
        // Known only from the kernel's oom_control: absent, never 0.
        for key in ["gfp_mask", "order", "totalpages"] {
            assert!(j["oom"].get(key).is_none(), "{key}");
        }
        assert!(j["victim"].get("points").is_none());
        let time = j["time"].as_str().expect("time");
        assert_eq!(time.len(), "2026-11-22T03:41:07.123456789Z".len(), "{time}");
    }

    #[test]
    fn victims_of_one_invocation_share_an_incident() {
        let mut e = Enricher::new(HashMap::new(), None, 12);
        let a = inferred_memcg_record();
        let mut b = a;
        b.victim.pid = 101;
        b.ktime_ns += 1000;
        let mut next = a;
        next.incident = 4;
        let (ia, ib, inext) = (
            e.enrich(&a, 0).incident,
            e.enrich(&b, 0).incident,
            e.enrich(&next, 0).incident,
        );
        assert_eq!(ia, ib);
        assert_ne!(ia, inext);
    }

    #[test]
    fn kernel_context_fields_and_names() {
        let mut r = inferred_memcg_record();
        r.fields = (r.fields & !field::CONSTRAINT_INFERRED) | field::KERNEL_CONTEXT;
        r.hooks |= hook::FENTRY_OOM_KILL_PROCESS;
        r.constraint = 3;
        r.gfp_mask = 0xcc0;
        r.order = 0;
        r.totalpages = 16384;
        r.points = 16000;
        let mut e = Enricher::new(HashMap::from([(3, "memcg"), (0, "none")]), None, 12);
        let j = e.enrich(&r, 2).to_json();
        assert_eq!(j["oom"]["constraint_source"], "kernel");
        assert_eq!(j["oom"]["gfp_mask"], 0xcc0);
        assert_eq!(j["oom"]["totalpages"], 16384);
        assert_eq!(j["victim"]["points"], 16000);
        assert_eq!(j["capture"]["events_lost"], 2);
        assert_eq!(
            j["capture"]["hooks"],
            json!(["tp_btf/mark_victim", "fentry/oom_kill_process"])
        );
    }

    #[test]
    fn classic_tracepoint_record_has_no_tgid_or_sigkill_flag() {
        let mut r = inferred_memcg_record();
        r.hooks = hook::TRACEPOINT_MARK_VICTIM;
        r.fields &= !(field::VICTIM_TGID | field::VICTIM_MEMCG | field::SIGKILL_PENDING);
        let j = Enricher::new(HashMap::new(), None, 12)
            .enrich(&r, 0)
            .to_json();
        assert!(j["victim"].get("tgid").is_none());
        assert!(j["victim"].get("cgroup").is_none());
        assert!(j["victim"].get("sigkill_pending").is_none());
        assert_eq!(j["victim"]["pid"], 100);
    }
}
