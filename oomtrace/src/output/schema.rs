//! The JSON Lines schema (v1), as types. Every object oomtrace prints is one of these, built by
//! borrowing from the pipeline's events ([`crate::stream::Item`]); field order is output order.
//! A value the kernel did not give is absent (`skip_serializing_if`), never a made-up 0. The
//! README's schema tables are checked against these types (`readme_documents_every_key`).
use std::collections::BTreeMap;

use oomtrace_common::stat_slot;
use serde::Serialize;
use serde_json::Value;

use crate::{
    cgroup::{
        memory::{MemoryEvents, MemoryStat, Psi, PsiLine},
        CgroupRef,
    },
    diagnosis::{Finding, Sizing, Verdict},
    enrich::{
        domain::{ChildUsage, DomainTask, DomainTasks, MemcgChildren, Overcommit},
        event::{OomKillEvent, TaskInfo},
        names::WorkloadNames,
        process::ProcessIdentity,
    },
    pressure::{
        monitor::{KillPressure, StatRead},
        thrashing::ThrashEvidence,
        timeline::Sample,
    },
    stream::{Item, Kill, MemoryPressureEvent, SigkillItem},
    timefmt,
};

/// The schema version every object carries; a renamed or retyped key is a new version.
pub const SCHEMA_VERSION: u32 = 1;

/// One item as its JSON line (no newline).
pub fn line(item: &Item) -> String {
    let out = match item {
        Item::Kill(k) => serde_json::to_string(&OomKill::new(k)),
        Item::Pressure(p) => serde_json::to_string(&MemoryPressure::from(p.as_ref())),
        Item::Sigkill(s) => serde_json::to_string(&SigkillJson::from(s.as_ref())),
    };
    // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
    out.unwrap_or_default()
}

/// A kill as a JSON value, without the victim's process identity, with the verdict the rest
/// of its evidence supports (4 KiB pages; tests read fields by name).
pub fn kill_value(event: &OomKillEvent, pressure: Option<&KillPressure>) -> Value {
    Kill::new(event.clone(), pressure.cloned(), None, None, 4096).to_json()
}

/// An item as a JSON value.
pub fn item_value(item: &Item) -> Value {
    match item {
        Item::Kill(k) => k.to_json(),
        Item::Pressure(p) => {
            serde_json::to_value(MemoryPressure::from(p.as_ref())).unwrap_or(Value::Null)
        }
        Item::Sigkill(s) => {
            serde_json::to_value(SigkillJson::from(s.as_ref())).unwrap_or(Value::Null)
        }
    }
}

impl Kill {
    /// This kill's JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(OomKill::new(self)).unwrap_or(Value::Null)
    }
}

// ---- the header every event starts with -------------------------------------------------------

#[derive(Serialize)]
struct Host<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Header<'a> {
    event: &'static str,
    schema: u32,
    /// RFC 3339 UTC with 9 fractional digits.
    time: String,
    ktime_ns: u64,
    host: Host<'a>,
}

impl<'a> Header<'a> {
    fn new(event: &'static str, time_unix_ns: i128, ktime_ns: u64, host: &'a str) -> Self {
        Self {
            event,
            schema: SCHEMA_VERSION,
            time: timefmt::rfc3339_nanos(time_unix_ns),
            ktime_ns,
            host: Host { name: host },
        }
    }
}

// ---- workload names: k8s.*, container.*, systemd.unit ------------------------------------------

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(Serialize, Default)]
struct Pod<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Owner<'a> {
    kind: &'a str,
    name: &'a str,
}

/// `k8s.*`, OpenTelemetry's names: the owner also as `k8s.<kind>.name` for the usual kinds.
#[derive(Serialize, Default)]
struct K8s<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<Pod<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicaset: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statefulset: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemonset: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cronjob: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<Owner<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Name<'a>>,
}

impl K8s<'_> {
    fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.container.is_none()
            && self.owner.is_none()
            && self.node.is_none()
    }
}

#[derive(Serialize)]
struct Container<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'static str>,
}

#[derive(Serialize)]
struct Systemd<'a> {
    unit: &'a str,
}

/// A workload's names, flattened into the object that carries them. `k8s` comes first when it
/// names the pod; a node name alone (a systemd service on a Kubernetes node) comes last, after
/// `container` and `systemd`, as schema v1 has always printed it.
#[derive(Serialize, Default)]
struct Workload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    k8s: Option<K8s<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    systemd: Option<Systemd<'a>>,
    #[serde(rename = "k8s", skip_serializing_if = "Option::is_none")]
    k8s_node_only: Option<K8s<'a>>,
}

impl<'a> Workload<'a> {
    fn new(names: Option<&'a WorkloadNames>, node: Option<&'a str>) -> Self {
        let mut k8s = K8s::default();
        let mut out = Workload::default();
        if let Some(n) = names {
            let w = &n.workload;
            let pod_names = n.pod.as_ref();
            k8s.namespace = pod_names.map(|p| Name { name: &p.namespace });
            let mut pod = Pod {
                name: pod_names.map(|p| p.pod.as_str()),
                uid: pod_names
                    .map(|p| p.pod_uid.as_str())
                    .or(w.pod_uid.as_deref()),
                qos_class: w.qos_class.map(|q| q.as_str()),
                labels: None,
            };
            let has_pod = pod.name.is_some() || pod.uid.is_some() || pod.qos_class.is_some();
            k8s.container = pod_names
                .and_then(|p| p.container.as_deref())
                .map(|name| Name { name });
            if let Some(meta) = &n.api {
                if has_pod && !meta.labels.is_empty() {
                    pod.labels = Some(&meta.labels);
                }
                if let Some(o) = &meta.owner {
                    let name = Some(Name { name: &o.name });
                    match o.kind.as_str() {
                        "Deployment" => k8s.deployment = name,
                        "ReplicaSet" => k8s.replicaset = name,
                        "StatefulSet" => k8s.statefulset = name,
                        "DaemonSet" => k8s.daemonset = name,
                        "Job" => k8s.job = name,
                        "CronJob" => k8s.cronjob = name,
                        _ => {}
                    }
                    k8s.owner = Some(Owner {
                        kind: &o.kind,
                        name: &o.name,
                    });
                }
            }
            k8s.pod = has_pod.then_some(pod);
            out.container = (w.container_id.is_some() || w.runtime.is_some()).then(|| Container {
                id: w.container_id.as_deref(),
                runtime: w.runtime.map(|r| r.as_str()),
            });
            out.systemd = w.systemd_unit.as_deref().map(|unit| Systemd { unit });
        }
        let named = !k8s.is_empty();
        k8s.node = node.map(|name| Name { name });
        if named {
            out.k8s = Some(k8s);
        } else if k8s.node.is_some() {
            out.k8s_node_only = Some(k8s);
        }
        out
    }
}

// ---- the oom_kill event -----------------------------------------------------------------------

#[derive(Serialize)]
struct Cgroup<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
}

impl<'a> From<&'a CgroupRef> for Cgroup<'a> {
    fn from(c: &'a CgroupRef) -> Self {
        Self {
            id: c.id,
            path: c.path.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct Task<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<Cgroup<'a>>,
}

impl<'a> From<&'a TaskInfo> for Task<'a> {
    fn from(t: &'a TaskInfo) -> Self {
        Self {
            pid: t.pid,
            tgid: t.tgid,
            comm: t.comm.as_deref(),
            cgroup: t.cgroup.as_ref().map(Cgroup::from),
        }
    }
}

#[derive(Serialize)]
struct Victim<'a> {
    #[serde(flatten)]
    task: Task<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oom_score_adj: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_vm_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anon_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shmem_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pgtables_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sigkill_pending: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Process<'a>>,
}

/// `victim.process`: who the victim was, read from `/proc` while it lived.
#[derive(Serialize)]
struct Process<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<&'a str>,
    command_line: String,
    args: &'a [String],
    command_line_bytes: u64,
    command_line_truncated: bool,
    /// Absent when `environ` could not be read; `{}` when none of the allowlist was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_init: Option<bool>,
    source: &'static str,
}

impl<'a> From<&'a ProcessIdentity> for Process<'a> {
    fn from(p: &'a ProcessIdentity) -> Self {
        Self {
            executable: p.executable.as_deref(),
            command_line: p.command_line(),
            args: &p.args,
            command_line_bytes: p.command_line_bytes,
            command_line_truncated: p.truncated,
            env: p.env_read.then_some(&p.env),
            container_init: p.container_init,
            source: p.source.as_str(),
        }
    }
}

#[derive(Serialize)]
struct Trigger<'a> {
    #[serde(flatten)]
    task: Task<'a>,
    /// Only when the trigger sits in another cgroup than the victim.
    #[serde(flatten)]
    names: Workload<'a>,
}

#[derive(Serialize)]
struct OomMemcg<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    usage_bytes: u64,
    limit_bytes: u64,
    #[serde(flatten)]
    names: Workload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<Children<'a>>,
}

// ---- the kill's OOM domain: oom.tasks, oom.memcg.children, oom.overcommit -----------------

/// ns-derived ms rounded to µs, as the pressure section prints them.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[derive(Serialize)]
struct PathOnly<'a> {
    path: &'a str,
}

/// One task of `oom.tasks.top`.
#[derive(Serialize)]
struct DomainTaskJson<'a> {
    pid: u32,
    comm: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<PathOnly<'a>>,
    anon_rss_bytes: u64,
    file_rss_bytes: u64,
    shmem_rss_bytes: u64,
    swap_bytes: u64,
    pgtables_bytes: u64,
    oom_score_adj: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<i64>,
    victim: bool,
    #[serde(flatten)]
    names: Workload<'a>,
}

impl<'a> From<&'a DomainTask> for DomainTaskJson<'a> {
    fn from(t: &'a DomainTask) -> Self {
        Self {
            pid: t.pid,
            comm: &t.comm,
            cgroup: t.cgroup_path.as_deref().map(|path| PathOnly { path }),
            anon_rss_bytes: t.anon_rss_bytes,
            file_rss_bytes: t.file_rss_bytes,
            shmem_rss_bytes: t.shmem_rss_bytes,
            swap_bytes: t.swap_bytes,
            pgtables_bytes: t.pgtables_bytes,
            oom_score_adj: t.oom_score_adj,
            points: t.points,
            victim: t.victim,
            names: Workload::new(t.names.as_ref(), None),
        }
    }
}

/// `oom.tasks`.
#[derive(Serialize)]
struct Tasks<'a> {
    source: &'static str,
    age_ms: f64,
    count: usize,
    top: Vec<DomainTaskJson<'a>>,
}

impl<'a> From<&'a DomainTasks> for Tasks<'a> {
    fn from(t: &'a DomainTasks) -> Self {
        Self {
            source: t.source,
            age_ms: round3(t.age_ms),
            count: t.count,
            top: t.top.iter().map(DomainTaskJson::from).collect(),
        }
    }
}

/// One child of `oom.memcg.children.top`.
#[derive(Serialize)]
struct Child<'a> {
    path: &'a str,
    usage_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<u64>,
    share: f64,
    #[serde(flatten)]
    names: Workload<'a>,
}

impl<'a> From<&'a ChildUsage> for Child<'a> {
    fn from(c: &'a ChildUsage) -> Self {
        Self {
            path: &c.path,
            usage_bytes: c.usage_bytes,
            limit_bytes: c.limit_bytes,
            share: round4(c.share),
            names: Workload::new(c.names.as_ref(), None),
        }
    }
}

/// `oom.memcg.children`.
#[derive(Serialize)]
struct Children<'a> {
    source: &'static str,
    age_ms: f64,
    top: Vec<Child<'a>>,
}

impl<'a> From<&'a MemcgChildren> for Children<'a> {
    fn from(c: &'a MemcgChildren) -> Self {
        Self {
            source: c.source,
            age_ms: round3(c.age_ms),
            top: c.top.iter().map(Child::from).collect(),
        }
    }
}

/// `oom.overcommit`.
#[derive(Serialize)]
struct OvercommitJson {
    mem_total_bytes: u64,
    swap_total_bytes: u64,
    limits_sum_bytes: u64,
    limited_cgroups: usize,
}

impl From<&Overcommit> for OvercommitJson {
    fn from(o: &Overcommit) -> Self {
        Self {
            mem_total_bytes: o.mem_total_bytes,
            swap_total_bytes: o.swap_total_bytes,
            limits_sum_bytes: o.limits_sum_bytes,
            limited_cgroups: o.limited_cgroups,
        }
    }
}

#[derive(Serialize)]
struct Oom<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    constraint: Option<&'static str>,
    constraint_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gfp_mask: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totalpages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memcg: Option<OomMemcg<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_kill: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Tasks<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overcommit: Option<OvercommitJson>,
}

#[derive(Serialize)]
struct Capture<'a> {
    hooks: &'a [String],
    events_lost: u64,
    seq: u64,
}

/// `{"event":"oom_kill",…}`: one victim of one OOM kill.
#[derive(Serialize)]
struct OomKill<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    incident: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    /// The victim's workload at the top level, as OpenTelemetry resource attributes are.
    #[serde(flatten)]
    workload: Workload<'a>,
    victim: Victim<'a>,
    trigger: Trigger<'a>,
    oom: Oom<'a>,
    capture: Capture<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pressure: Option<PressureSection<'a>>,
    diagnosis: Vec<FindingOut<'a>>,
    sizing: SizingOut<'a>,
}

impl<'a> OomKill<'a> {
    fn new(kill: &'a Kill) -> Self {
        let (ev, pressure) = (&kill.event, kill.pressure.as_ref());
        let (process, domain) = (kill.process.as_ref(), kill.domain.as_ref());
        let names = ev.names.as_ref();
        let v = &ev.victim;
        let same_cgroup =
            ev.trigger.cgroup.as_ref().map(|c| c.id) == v.task.cgroup.as_ref().map(|c| c.id);
        let trigger_names = names
            .and_then(|n| n.trigger.as_ref())
            .filter(|_| !same_cgroup);
        let o = &ev.oom;
        OomKill {
            header: Header::new("oom_kill", ev.time_unix_ns, ev.ktime_ns, &ev.host),
            incident: &ev.incident,
            action: ev.action.map(|a| a.as_str()),
            workload: match names {
                Some(n) => Workload::new(n.victim.as_ref(), n.node.as_deref()),
                None => Workload::default(),
            },
            victim: Victim {
                task: Task::from(&v.task),
                uid: v.uid,
                oom_score_adj: v.oom_score_adj,
                total_vm_bytes: v.total_vm_bytes,
                anon_rss_bytes: v.anon_rss_bytes,
                file_rss_bytes: v.file_rss_bytes,
                shmem_rss_bytes: v.shmem_rss_bytes,
                pgtables_bytes: v.pgtables_bytes,
                points: v.points,
                sigkill_pending: v.sigkill_pending,
                process: process.map(Process::from),
            },
            trigger: Trigger {
                task: Task::from(&ev.trigger),
                names: Workload::new(trigger_names, None),
            },
            oom: Oom {
                constraint: o.constraint,
                constraint_source: o.constraint_source,
                gfp_mask: o.gfp_mask,
                order: o.order,
                totalpages: o.totalpages,
                memcg: o.memcg.as_ref().map(|m| OomMemcg {
                    id: m.cgroup.id,
                    path: m.cgroup.path.as_deref(),
                    usage_bytes: m.usage_bytes,
                    limit_bytes: m.limit_bytes,
                    names: Workload::new(names.and_then(|n| n.oom_memcg.as_ref()), None),
                    children: domain.and_then(|d| d.children.as_ref()).map(Children::from),
                }),
                scope: ev.scope.map(|s| s.as_str()),
                group_kill: domain.and_then(|d| d.group_kill),
                tasks: domain.and_then(|d| d.tasks.as_ref()).map(Tasks::from),
                overcommit: domain
                    .and_then(|d| d.overcommit.as_ref())
                    .map(OvercommitJson::from),
            },
            capture: Capture {
                hooks: &ev.hooks,
                events_lost: ev.events_lost,
                seq: ev.seq,
            },
            pressure: pressure.map(PressureSection::from),
            diagnosis: kill.verdict.findings.iter().map(FindingOut::from).collect(),
            sizing: SizingOut::from(&kill.verdict.sizing),
        }
    }
}

// ---- why it died ------------------------------------------------------------------------------

/// A verdict's `diagnosis` and `sizing` values, for records built outside the pipeline (a kill
/// read back from the kernel log).
pub fn verdict_values(v: &Verdict) -> (Value, Value) {
    let findings: Vec<FindingOut<'_>> = v.findings.iter().map(FindingOut::from).collect();
    (
        serde_json::to_value(findings).unwrap_or(Value::Null),
        serde_json::to_value(SizingOut::from(&v.sizing)).unwrap_or(Value::Null),
    )
}

/// One verdict line: `{code, severity, summary, evidence}`.
#[derive(Serialize)]
struct FindingOut<'a> {
    code: &'static str,
    severity: &'static str,
    summary: &'a str,
    /// The numbers behind the summary; keys depend on the code (README, "Why did it die?").
    evidence: &'a serde_json::Map<String, Value>,
}

impl<'a> From<&'a Finding> for FindingOut<'a> {
    fn from(f: &'a Finding) -> Self {
        FindingOut {
            code: f.code,
            severity: f.severity.as_str(),
            summary: &f.summary,
            evidence: &f.evidence,
        }
    }
}

#[derive(Serialize)]
struct SizingOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    needed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_charge_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_60s_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    growth_bytes_per_s: Option<i64>,
    /// Null when there is no right limit; `reason` says why.
    suggested_limit_bytes: Option<u64>,
    reason: &'a str,
}

impl<'a> From<&'a Sizing> for SizingOut<'a> {
    fn from(s: &'a Sizing) -> Self {
        SizingOut {
            needed_bytes: s.needed_bytes,
            failed_charge_bytes: s.failed_charge_bytes,
            peak_60s_bytes: s.peak_60s_bytes,
            growth_bytes_per_s: s.growth_bytes_per_s.map(|g| g.round() as i64),
            suggested_limit_bytes: s.suggested_limit_bytes,
            reason: &s.reason,
        }
    }
}

// ---- the kill's pressure section --------------------------------------------------------------

/// Nanoseconds as milliseconds with µs precision.
fn ns_to_ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}

#[derive(Serialize)]
struct Reclaim {
    count: u64,
    stall_ms: f64,
}

impl Reclaim {
    fn new((count, stall_ns): (u64, u64)) -> Self {
        Self {
            count,
            stall_ms: ns_to_ms(stall_ns),
        }
    }
}

#[derive(Serialize)]
struct Stat {
    #[serde(skip_serializing_if = "Option::is_none")]
    anon_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shmem_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_stack_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slab_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sock_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pagetables_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inactive_file_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_file_bytes: Option<u64>,
    /// When it was read, from the kill (negative: before it).
    offset_ms: f64,
    age_ms: f64,
}

impl Stat {
    fn new(read: &StatRead, kill_ns: u64) -> Self {
        let MemoryStat {
            anon,
            file,
            shmem,
            kernel,
            kernel_stack,
            slab,
            sock,
            pagetables,
            swap,
            inactive_file,
            active_file,
            refaults: _,
            major_faults: _,
        } = read.stat;
        let offset_ms = (read.ktime_ns as i128 - kill_ns as i128) as f64 / 1e6;
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            anon_bytes: anon,
            file_bytes: file,
            shmem_bytes: shmem,
            kernel_bytes: kernel,
            kernel_stack_bytes: kernel_stack,
            slab_bytes: slab,
            sock_bytes: sock,
            pagetables_bytes: pagetables,
            swap_bytes: swap,
            inactive_file_bytes: inactive_file,
            active_file_bytes: active_file,
            offset_ms: round(offset_ms),
            age_ms: round(offset_ms.abs()),
        }
    }
}

#[derive(Serialize)]
struct Events {
    #[serde(skip_serializing_if = "Option::is_none")]
    low: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    high: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oom: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oom_kill: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oom_group_kill: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failcnt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    under_oom: Option<bool>,
}

impl From<&MemoryEvents> for Events {
    fn from(e: &MemoryEvents) -> Self {
        Self {
            low: e.low,
            high: e.high,
            max: e.max,
            oom: e.oom,
            oom_kill: e.oom_kill,
            oom_group_kill: e.oom_group_kill,
            failcnt: e.failcnt,
            under_oom: e.under_oom,
        }
    }
}

#[derive(Serialize)]
struct PsiAvgs {
    avg10: f64,
    avg60: f64,
    avg300: f64,
    total_us: u64,
}

impl From<&PsiLine> for PsiAvgs {
    fn from(l: &PsiLine) -> Self {
        Self {
            avg10: l.avg10,
            avg60: l.avg60,
            avg300: l.avg300,
            total_us: l.total_us,
        }
    }
}

#[derive(Serialize)]
struct PsiJson {
    some: PsiAvgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    full: Option<PsiAvgs>,
}

impl From<&Psi> for PsiJson {
    fn from(p: &Psi) -> Self {
        Self {
            some: PsiAvgs::from(&p.some),
            full: p.full.as_ref().map(PsiAvgs::from),
        }
    }
}

/// Charges since the previous point, in bytes (`oomtrace_common::stat_slot` order).
#[derive(Serialize)]
struct Charged {
    anon_bytes: i64,
    file_bytes: i64,
    shmem_bytes: i64,
    kernel_bytes: i64,
    sock_bytes: i64,
    slab_bytes: i64,
}

impl From<&[i64; stat_slot::COUNT]> for Charged {
    fn from(c: &[i64; stat_slot::COUNT]) -> Self {
        Self {
            anon_bytes: c[stat_slot::ANON],
            file_bytes: c[stat_slot::FILE],
            shmem_bytes: c[stat_slot::SHMEM],
            kernel_bytes: c[stat_slot::KERNEL],
            sock_bytes: c[stat_slot::SOCK],
            slab_bytes: c[stat_slot::SLAB],
        }
    }
}

#[derive(Serialize)]
struct Point {
    /// From the kill, in whole ms (negative: before it).
    offset_ms: i64,
    usage_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_set_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    charged: Option<Charged>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaims: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaim_stall_ms: Option<f64>,
}

impl Point {
    fn new(s: &Sample, end_ns: u64) -> Self {
        Self {
            offset_ms: ((s.ktime_ns as i128 - end_ns as i128) / 1_000_000) as i64,
            usage_bytes: s.usage_bytes,
            working_set_bytes: s.working_set_bytes,
            charged: s.charged.as_ref().map(Charged::from),
            reclaims: s.reclaim.map(|(n, _)| n),
            reclaim_stall_ms: s.reclaim.map(|(_, ns)| ns_to_ms(ns)),
        }
    }
}

/// A kill's `pressure` section.
#[derive(Serialize)]
struct PressureSection<'a> {
    sources: &'a [&'static str],
    interval_ms: u64,
    usage_bytes: u64,
    limit_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    growth_bytes_per_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaim: Option<Reclaim>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stat: Option<Stat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Events>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<PsiJson>,
    timeline: Vec<Point>,
}

impl<'a> From<&'a KillPressure> for PressureSection<'a> {
    fn from(p: &'a KillPressure) -> Self {
        Self {
            sources: &p.sources,
            interval_ms: u64::try_from(p.interval.as_millis()).unwrap_or(u64::MAX),
            usage_bytes: p.usage_bytes,
            limit_bytes: p.limit_bytes,
            growth_bytes_per_s: p.growth_bytes_per_s.map(|g| g.round() as i64),
            reclaim: p.reclaim.map(Reclaim::new),
            stat: p.stat.as_ref().map(|s| Stat::new(s, p.kill_ns)),
            events: p.events.as_ref().map(Events::from),
            psi: p.psi.as_ref().map(PsiJson::from),
            timeline: p
                .timeline
                .iter()
                .map(|s| Point::new(s, p.kill_ns))
                .collect(),
        }
    }
}

// ---- the memory_pressure event ----------------------------------------------------------------

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[derive(Serialize)]
struct PressureTask<'a> {
    pid: u32,
    comm: &'a str,
}

/// `{"event":"memory_pressure",…}`: a cgroup at or above the near-limit threshold.
#[derive(Serialize)]
struct MemoryPressure<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    #[serde(flatten)]
    workload: Workload<'a>,
    cgroup: Cgroup<'a>,
    usage_bytes: u64,
    /// Usage minus inactive page cache: what is judged against the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    working_set_bytes: Option<u64>,
    limit_bytes: u64,
    /// Usage / limit.
    ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_set_ratio: Option<f64>,
    threshold: f64,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thrashing: Option<Thrashing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    growth_bytes_per_s: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaim: Option<Reclaim>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<PressureTask<'a>>,
    /// Kernel records only (`kernel_stat`, `kernel_reclaim`).
    #[serde(skip_serializing_if = "Option::is_none")]
    capture: Option<PressureCapture>,
}

#[derive(Serialize)]
struct PressureCapture {
    seq: u64,
}

/// `thrashing`: the evidence that a cgroup is stuck at its limit, over the last interval.
#[derive(Serialize)]
struct Thrashing {
    /// How long it has been stuck, up to this record.
    stuck_ms: u64,
    refaults_per_s: f64,
    refault_bytes_per_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    major_faults_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaims_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaim_stall_ms_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<PsiJson>,
}

impl From<&ThrashEvidence> for Thrashing {
    fn from(t: &ThrashEvidence) -> Self {
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        Self {
            stuck_ms: t.stuck_ns / 1_000_000,
            refaults_per_s: round1(t.refaults_per_s),
            refault_bytes_per_s: t.refault_bytes_per_s.round() as u64,
            major_faults_per_s: t.major_faults_per_s.map(round1),
            reclaims_per_s: t.reclaims_per_s.map(round1),
            reclaim_stall_ms_per_s: t.reclaim_stall_ms_per_s.map(round1),
            psi: t.psi.as_ref().map(PsiJson::from),
        }
    }
}

impl<'a> From<&'a MemoryPressureEvent> for MemoryPressure<'a> {
    fn from(ev: &'a MemoryPressureEvent) -> Self {
        let r = &ev.reading;
        Self {
            header: Header::new("memory_pressure", ev.time_unix_ns, r.ktime_ns, &ev.host),
            workload: Workload::new(ev.names.as_ref(), ev.node.as_deref()),
            cgroup: Cgroup {
                id: r.cgroup_id,
                path: r.path.as_deref(),
            },
            usage_bytes: r.usage_bytes,
            working_set_bytes: r.working_set_bytes,
            limit_bytes: r.limit_bytes,
            ratio: round4(r.ratio()),
            working_set_ratio: r.working_set_ratio().map(round4),
            threshold: round4(r.threshold),
            source: r.source,
            thrashing: r.thrashing.as_ref().map(Thrashing::from),
            growth_bytes_per_s: r.growth_bytes_per_s.map(|g| g.round() as i64),
            reclaim: r.reclaim.map(Reclaim::new),
            task: r
                .task
                .as_ref()
                .map(|(pid, comm)| PressureTask { pid: *pid, comm }),
            capture: r.seq.map(|seq| PressureCapture { seq }),
        }
    }
}

// ---- sigkill ------------------------------------------------------------------------------------

/// `target`: the task the SIGKILL was for, and who it was.
#[derive(Serialize)]
struct SigkillTarget<'a> {
    #[serde(flatten)]
    task: Task<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Process<'a>>,
}

/// `sender`: the process that sent it, with its workload names.
#[derive(Serialize)]
struct SigkillSender<'a> {
    #[serde(flatten)]
    task: Task<'a>,
    #[serde(flatten)]
    names: Workload<'a>,
}

/// `pressure` of a userspace OOM killer's SIGKILL: the target's cgroup at that moment.
#[derive(Serialize)]
struct SigkillPressure<'a> {
    path: &'a str,
    /// `kernel` (the page counter at the signal) or `cgroup_files` (read after it).
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    psi: Option<PsiJson>,
}

#[derive(Serialize)]
struct SigkillCapture<'a> {
    hooks: &'a [String],
    seq: u64,
}

/// `{"event":"sigkill",…}`: a SIGKILL to a workload that was not the kernel's OOM killer.
#[derive(Serialize)]
struct SigkillJson<'a> {
    #[serde(flatten)]
    header: Header<'a>,
    /// The target's workload at the top level, as an `oom_kill` record has its victim's.
    #[serde(flatten)]
    workload: Workload<'a>,
    target: SigkillTarget<'a>,
    /// Absent when the kernel sent it itself (`si_code` 128).
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<SigkillSender<'a>>,
    si_code: i32,
    group: bool,
    cause: &'static str,
    /// Why the known sender means this cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause_detail: Option<&'static str>,
    /// "Was it memory?": true only for a userspace OOM killer.
    memory: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pressure: Option<SigkillPressure<'a>>,
    capture: SigkillCapture<'a>,
}

impl<'a> From<&'a SigkillItem> for SigkillJson<'a> {
    fn from(s: &'a SigkillItem) -> Self {
        let ev = &s.event;
        Self {
            header: Header::new("sigkill", s.time_unix_ns, ev.ktime_ns, &s.host),
            workload: Workload::new(s.target_names.as_ref(), s.node.as_deref()),
            target: SigkillTarget {
                task: Task::from(&ev.target),
                process: s.target_process.as_ref().map(Process::from),
            },
            sender: ev.sender.as_ref().map(|t| SigkillSender {
                task: Task::from(t),
                names: Workload::new(s.sender_names.as_ref(), None),
            }),
            si_code: ev.si_code,
            group: ev.group,
            cause: ev.cause.as_str(),
            cause_detail: ev.known_sender.map(|k| k.why),
            memory: ev.cause.memory(),
            pressure: ev.pressure.as_ref().map(|p| SigkillPressure {
                path: &p.path,
                source: p.source,
                usage_bytes: p.usage_bytes,
                limit_bytes: p.limit_bytes,
                ratio: match (p.usage_bytes, p.limit_bytes) {
                    (Some(u), Some(l)) if l > 0 => Some(round4(u as f64 / l as f64)),
                    _ => None,
                },
                psi: p.psi.as_ref().map(PsiJson::from),
            }),
            capture: SigkillCapture {
                hooks: &ev.hooks,
                seq: ev.seq,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oomtrace_common::{field, hook, OomKillRecord};
    use serde_json::json;

    use super::*;
    use crate::{
        enrich::{
            event::Enricher,
            kube::{Owner, PodMeta},
            kubelet_logs::PodNames,
            workload,
        },
        pressure::monitor::Reading,
    };

    /// The golden tests' base record: a memcg OOM seen by `tp_btf/mark_victim`, constraint
    /// inferred, victim = trigger (pid 4242) in cgroup 4101.
    fn inferred_memcg_record() -> OomKillRecord {
        super::super::golden_tests::base_record()
    }

    #[test]
    fn renders_schema_v1_with_absent_kernel_only_fields() {
        let mut e = Enricher::new(HashMap::new(), 12);
        let ev = e.enrich(&inferred_memcg_record(), 0, None);
        let j = kill_value(&ev, None);
        assert_eq!(j["event"], "oom_kill");
        assert_eq!(j["schema"], 1);
        assert_eq!(j["victim"]["anon_rss_bytes"], 63_512u64 << 10);
        assert_eq!(j["victim"]["uid"], 65534);
        assert_eq!(j["victim"]["oom_score_adj"], 500);
        assert_eq!(j["victim"]["cgroup"]["id"], 4101);
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
        let mut e = Enricher::new(HashMap::new(), 12);
        let a = inferred_memcg_record();
        let mut b = a;
        b.victim.pid = 4243;
        b.ktime_ns += 1000;
        let mut next = a;
        next.incident = 4;
        let (ia, ib, inext) = (
            e.enrich(&a, 0, None).incident,
            e.enrich(&b, 0, None).incident,
            e.enrich(&next, 0, None).incident,
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
        let mut e = Enricher::new(HashMap::from([(3, "memcg"), (0, "none")]), 12);
        let j = kill_value(&e.enrich(&r, 2, None), None);
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
        let j = kill_value(&Enricher::new(HashMap::new(), 12).enrich(&r, 0, None), None);
        assert!(j["victim"].get("tgid").is_none());
        assert!(j["victim"].get("cgroup").is_none());
        assert!(j["victim"].get("sigkill_pending").is_none());
        assert_eq!(j["victim"]["pid"], 4242);
    }

    #[test]
    fn api_labels_and_owner_join_the_kubelet_names() {
        let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f0a8c1e_3b2d_4c6e_9f7a_1b2c3d4e5f60.slice/cri-containerd-3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899.scope";
        let names = WorkloadNames {
            workload: workload::parse(path),
            pod: Some(PodNames {
                namespace: "shop".into(),
                pod: "web-7d9f8b6c5-x2k4q".into(),
                pod_uid: "5f0a8c1e-3b2d-4c6e-9f7a-1b2c3d4e5f60".into(),
                container: Some("app".into()),
            }),
            api: Some(PodMeta {
                namespace: "shop".into(),
                name: "web-7d9f8b6c5-x2k4q".into(),
                uid: "5f0a8c1e-3b2d-4c6e-9f7a-1b2c3d4e5f60".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                owner: Some(Owner {
                    kind: "Deployment".into(),
                    name: "web".into(),
                }),
                containers: Vec::new(),
            }),
        };
        let v = serde_json::to_value(Workload::new(Some(&names), None)).expect("json");
        assert_eq!(v["k8s"]["pod"]["labels"]["app"], "web");
        assert_eq!(v["k8s"]["deployment"]["name"], "web");
        assert_eq!(
            v["k8s"]["owner"],
            json!({"kind": "Deployment", "name": "web"})
        );
        assert_eq!(v["k8s"]["container"]["name"], "app");
        assert_eq!(v["container"]["runtime"], "containerd");
        assert_eq!(v["k8s"]["pod"]["qos_class"], "burstable");
    }

    #[test]
    fn memory_pressure_json_shape() {
        let ev = MemoryPressureEvent {
            time_unix_ns: 1_700_000_000_123_456_789,
            host: "node-a".into(),
            node: None,
            reading: Reading {
                ktime_ns: 42,
                cgroup_id: 7,
                path: Some("/system.slice/app.service".into()),
                usage_bytes: 60 << 20,
                working_set_bytes: Some(58 << 20),
                limit_bytes: 64 << 20,
                threshold: 0.9,
                source: "kernel_stat",
                task: Some((1234, "app".into())),
                growth_bytes_per_s: Some(1048576.4),
                reclaim: Some((3, 1_500_000)),
                seq: Some(5),
                thrashing: Some(ThrashEvidence {
                    since_ns: 2,
                    stuck_ns: 3_000_400_000,
                    refaults_per_s: 130_000.04,
                    refault_bytes_per_s: 532_480_163.8,
                    major_faults_per_s: Some(150.0),
                    reclaims_per_s: None,
                    reclaim_stall_ms_per_s: Some(712.345),
                    psi: None,
                }),
            },
            names: None,
        };
        let j = serde_json::to_value(MemoryPressure::from(&ev)).expect("json");
        assert_eq!(j["event"], "memory_pressure");
        assert_eq!(j["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(j["cgroup"]["path"], "/system.slice/app.service");
        assert_eq!(j["ratio"], 0.9375);
        assert_eq!(j["working_set_bytes"], 58u64 << 20);
        assert_eq!(j["working_set_ratio"], 0.9063);
        assert_eq!(
            j["thrashing"],
            json!({"stuck_ms": 3000, "refaults_per_s": 130000.0, "refault_bytes_per_s": 532480164u64,
                   "major_faults_per_s": 150.0, "reclaim_stall_ms_per_s": 712.3})
        );
        assert_eq!(j["limit_bytes"], 64u64 << 20);
        assert_eq!(j["growth_bytes_per_s"], 1048576);
        assert_eq!(j["reclaim"]["stall_ms"], 1.5);
        assert_eq!(j["task"]["comm"], "app");
        // Without names, a node name alone still lands in k8s.node.name.
        let with_node = MemoryPressureEvent {
            node: Some("node-a".into()),
            ..ev
        };
        let j = serde_json::to_value(MemoryPressure::from(&with_node)).expect("json");
        assert_eq!(j["k8s"], json!({"node": {"name": "node-a"}}));
    }

    #[test]
    fn timeline_points_are_offsets_from_the_kill() {
        let kill_ns = 45_500_000_000;
        let s = Sample {
            ktime_ns: 45_000_000_000,
            usage_bytes: 1 << 20,
            working_set_bytes: Some(1 << 19),
            charged: None,
            reclaim: Some((1, 2_000_000)),
        };
        let j = serde_json::to_value(Point::new(&s, kill_ns)).expect("json");
        assert_eq!(
            j,
            json!({"offset_ms": -500, "usage_bytes": 1048576, "working_set_bytes": 524288, "reclaims": 1, "reclaim_stall_ms": 2.0})
        );
    }

    #[test]
    fn stat_offsets_and_absent_counters() {
        let read = StatRead {
            ktime_ns: 10_000_000_000 - 233_800_000,
            stat: MemoryStat {
                anon: Some(50),
                ..MemoryStat::default()
            },
        };
        let j = serde_json::to_value(Stat::new(&read, 10_000_000_000)).expect("json");
        assert_eq!(
            j,
            json!({"anon_bytes": 50, "offset_ms": -233.8, "age_ms": 233.8})
        );
        let psi = Psi {
            some: PsiLine {
                avg10: 0.0,
                avg60: 0.0,
                avg300: 0.0,
                total_us: 0,
            },
            full: None,
        };
        assert_eq!(
            serde_json::to_value(PsiJson::from(&psi)).expect("json"),
            json!({"some": {"avg10": 0.0, "avg60": 0.0, "avg300": 0.0, "total_us": 0}})
        );
    }
}
