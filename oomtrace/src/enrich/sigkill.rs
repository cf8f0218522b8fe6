//! Who sent a SIGKILL, and why: the `sigkill` record of every SIGKILL that ends a workload and
//! is not the kernel's OOM killer (those have their `oom_kill` record). The cause comes from the
//! sender: the kernel itself (`SI_KERNEL`), a known sender ([`KNOWN_SENDERS`]), or anyone else.
use std::collections::HashMap;

use oomtrace_common::{sigkill_field, SigkillRecord, SI_KERNEL};

use crate::{
    capture::{probes, record::c_str},
    cgroup::{
        memory::{MemoryFiles, Psi},
        CgroupRef, CgroupResolver,
    },
    enrich::{event::TaskInfo, workload},
};

/// Which SIGKILLs get a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigkillScope {
    /// Targets in a container or in a memory-limited cgroup.
    Workloads,
    /// Every target.
    All,
}

/// Why the SIGKILL was sent, as far as its sender tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// A userspace OOM killer acted on memory pressure.
    UserspaceOomKiller,
    /// A container runtime or shim stopped the container (grace period over: eviction, a failed
    /// liveness probe, a deletion or rollout).
    RuntimeStop,
    /// systemd stopped a unit (`TimeoutStopSec`, `KillMode`).
    SystemdStop,
    /// Any other process: a person's `kill -9`, a supervisor, a script.
    User,
    /// The kernel, for a reason other than an OOM kill (`RLIMIT_CPU`, seccomp, a dying
    /// thread group).
    KernelOther,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::UserspaceOomKiller => "userspace_oom_killer",
            Cause::RuntimeStop => "runtime_stop",
            Cause::SystemdStop => "systemd_stop",
            Cause::User => "user",
            Cause::KernelOther => "kernel_other",
        }
    }

    /// Whether memory was the reason: yes for a userspace OOM killer, no for the rest.
    pub fn memory(self) -> bool {
        self == Cause::UserspaceOomKiller
    }
}

/// A sender recognised by its command name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownSender {
    /// `comm` as the kernel keeps it (at most 15 bytes: longer names are cut).
    pub comm: &'static str,
    pub cause: Cause,
    /// Why this sender means that cause.
    pub why: &'static str,
}

/// The senders oomtrace names, in one place.
pub const KNOWN_SENDERS: &[KnownSender] = &[
    KnownSender {
        comm: "systemd-oomd",
        cause: Cause::UserspaceOomKiller,
        why: "systemd's userspace OOM killer: kills a cgroup whose memory pressure (PSI) or swap use stays over its limit",
    },
    KnownSender {
        comm: "earlyoom",
        cause: Cause::UserspaceOomKiller,
        why: "kills the process with the highest oom_score when available memory and swap fall under its thresholds",
    },
    KnownSender {
        comm: "oomd",
        cause: Cause::UserspaceOomKiller,
        why: "Meta's userspace OOM killer: kills cgroups by PSI and swap rules",
    },
    KnownSender {
        comm: "nohang",
        cause: Cause::UserspaceOomKiller,
        why: "userspace OOM killer (nohang, nohang-desktop): acts on low available memory or PSI",
    },
    KnownSender {
        comm: "runc",
        cause: Cause::RuntimeStop,
        why: "the OCI runtime: `runc kill` is how containerd, Docker and CRI-O stop a container after its grace period",
    },
    KnownSender {
        comm: "crun",
        cause: Cause::RuntimeStop,
        why: "the OCI runtime of Podman and CRI-O setups: `crun kill` stops a container",
    },
    KnownSender {
        comm: "youki",
        cause: Cause::RuntimeStop,
        why: "an OCI runtime: `youki kill` stops a container",
    },
    KnownSender {
        comm: "runsc",
        cause: Cause::RuntimeStop,
        why: "gVisor's OCI runtime",
    },
    KnownSender {
        comm: "containerd-shim",
        cause: Cause::RuntimeStop,
        why: "containerd's shim (containerd-shim-runc-v2, its comm cut to 15 bytes): kills the container's processes on stop",
    },
    KnownSender {
        comm: "containerd",
        cause: Cause::RuntimeStop,
        why: "the container runtime daemon",
    },
    KnownSender {
        comm: "conmon",
        cause: Cause::RuntimeStop,
        why: "CRI-O's and Podman's container monitor",
    },
    KnownSender {
        comm: "crio",
        cause: Cause::RuntimeStop,
        why: "the CRI-O daemon",
    },
    KnownSender {
        comm: "dockerd",
        cause: Cause::RuntimeStop,
        why: "the Docker daemon: `docker stop` after its timeout, `docker kill`",
    },
    KnownSender {
        comm: "podman",
        cause: Cause::RuntimeStop,
        why: "Podman: `podman stop` after its timeout, `podman kill`",
    },
    KnownSender {
        comm: "systemd",
        cause: Cause::SystemdStop,
        why: "PID 1 or a user's service manager: SIGKILL after TimeoutStopSec, or KillMode on stop",
    },
];

/// The known sender of this command name, if any.
pub fn known_sender(comm: &str) -> Option<&'static KnownSender> {
    KNOWN_SENDERS.iter().find(|k| k.comm == comm)
}

/// The target's cgroup at the moment a userspace OOM killer acted: usage against the nearest
/// limit, and PSI (v2).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetPressure {
    /// The cgroup the figures are of: the target's, or its nearest limited ancestor.
    pub path: String,
    /// `"kernel"`: the target memcg's page counter read at the signal (its own limit);
    /// `"cgroup_files"`: read when the record arrived (a limit on an ancestor), after the kill
    /// may have freed memory.
    pub source: &'static str,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub psi: Option<Psi>,
}

/// One SIGKILL with its sender, target and cause.
#[derive(Debug, Clone, PartialEq)]
pub struct SigkillEvent {
    pub ktime_ns: u64,
    pub target: TaskInfo,
    /// `None` when the kernel sent it (`SI_KERNEL`): `current` was only the context.
    pub sender: Option<TaskInfo>,
    pub si_code: i32,
    pub group: bool,
    pub cause: Cause,
    pub known_sender: Option<&'static KnownSender>,
    pub pressure: Option<TargetPressure>,
    pub hooks: Vec<String>,
    /// The record's number in the kernel's sequence of SIGKILL records (`capture.seq`).
    pub seq: u64,
}

/// Turns SIGKILL records into events for the targets in scope.
pub struct SigkillEnricher {
    scope: SigkillScope,
    page_size: u64,
    /// Whether a cgroup (by id) is a workload's: in a container, or under a memory limit.
    workloads: HashMap<u64, bool>,
}

/// A page counter at or above this many pages has no limit (`PAGE_COUNTER_MAX` is 2^51 with
/// 4 KiB pages).
const NO_LIMIT_PAGES: u64 = 1 << 50;

/// Cgroups remembered as workloads or not before the cache starts over.
const WORKLOAD_CACHE: usize = 4096;

impl SigkillEnricher {
    pub fn new(scope: SigkillScope, page_size: u64) -> Self {
        Self {
            scope,
            page_size,
            workloads: HashMap::new(),
        }
    }

    /// The event for a record, or `None` when its target is out of scope.
    pub fn enrich(
        &mut self,
        r: &SigkillRecord,
        mut resolver: Option<&mut CgroupResolver>,
    ) -> Option<SigkillEvent> {
        let has = |f: u32| r.fields & f != 0;
        let mut cgroup = |id: u64| CgroupRef {
            id,
            path: resolver.as_deref_mut().and_then(|res| res.path(id)),
        };
        let target = TaskInfo {
            pid: has(sigkill_field::TARGET_PID).then_some(r.target.pid),
            tgid: has(sigkill_field::TARGET_TGID).then_some(r.target.tgid),
            comm: has(sigkill_field::TARGET_COMM).then(|| c_str(&r.target.comm)),
            cgroup: has(sigkill_field::TARGET_MEMCG).then(|| cgroup(r.target.memcg_id)),
        };
        let kernel = r.si_code == SI_KERNEL;
        let sender = (!kernel).then(|| TaskInfo {
            pid: has(sigkill_field::SENDER_PID).then_some(r.sender.pid),
            tgid: has(sigkill_field::SENDER_TGID).then_some(r.sender.tgid),
            comm: has(sigkill_field::SENDER_COMM).then(|| c_str(&r.sender.comm)),
            cgroup: has(sigkill_field::SENDER_MEMCG).then(|| cgroup(r.sender.memcg_id)),
        });
        let in_scope = match self.scope {
            SigkillScope::All => true,
            SigkillScope::Workloads => match (&target.cgroup, resolver.as_deref()) {
                (Some(c), Some(res)) => self.is_workload(c, res),
                _ => false,
            },
        };
        if !in_scope {
            return None;
        }
        let known = sender
            .as_ref()
            .and_then(|s| s.comm.as_deref())
            .and_then(known_sender);
        let cause = match (kernel, known) {
            (true, _) => Cause::KernelOther,
            (false, Some(k)) => k.cause,
            (false, None) => Cause::User,
        };
        let at_signal = (has(sigkill_field::TARGET_MEMCG_COUNTER)
            && r.target_limit_pages < NO_LIMIT_PAGES)
            .then(|| {
                (
                    r.target_usage_pages.saturating_mul(self.page_size),
                    r.target_limit_pages.saturating_mul(self.page_size),
                )
            });
        let pressure = match (cause, target.cgroup_path(), resolver.as_deref()) {
            (Cause::UserspaceOomKiller, Some(path), Some(res)) => {
                Some(target_pressure(path, res, at_signal))
            }
            _ => None,
        };
        Some(SigkillEvent {
            ktime_ns: r.ktime_ns,
            target,
            sender,
            si_code: r.si_code,
            group: r.group != 0,
            cause,
            known_sender: known,
            pressure,
            hooks: probes::hook_names(r.hook),
            seq: r.seq,
        })
    }

    /// In a container, or under a memory limit (its own or an ancestor's).
    fn is_workload(&mut self, c: &CgroupRef, res: &CgroupResolver) -> bool {
        if let Some(w) = self.workloads.get(&c.id) {
            return *w;
        }
        let Some(path) = c.path.as_deref() else {
            return false;
        };
        let w = workload::parse(path);
        let answer = w.container_id.is_some()
            || w.runtime.is_some()
            || w.level == workload::Level::Container
            || nearest_limit(path, res).is_some();
        if self.workloads.len() >= WORKLOAD_CACHE {
            self.workloads.clear();
        }
        self.workloads.insert(c.id, answer);
        answer
    }
}

/// The cgroup itself or its nearest ancestor with a memory limit, and the limit.
fn nearest_limit(path: &str, res: &CgroupResolver) -> Option<(String, u64)> {
    let h = res.hierarchy();
    let mut p = path.to_string();
    loop {
        if p == "/" || p.is_empty() {
            return None;
        }
        let files = MemoryFiles::new(h.dir(&p), h.version);
        if let Ok(Some(limit)) = files.limit_bytes() {
            return Some((p, limit));
        }
        p = match p.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => p[..i].to_string(),
        };
    }
}

/// The target's cgroup at the signal: the kernel's page counter when the target's own cgroup
/// has the limit, else the nearest limited ancestor's files. PSI (averages) from the files.
fn target_pressure(
    path: &str,
    res: &CgroupResolver,
    at_signal: Option<(u64, u64)>,
) -> TargetPressure {
    let h = res.hierarchy();
    if let Some((usage, limit)) = at_signal {
        let files = MemoryFiles::new(h.dir(path), h.version);
        return TargetPressure {
            path: path.to_string(),
            source: "kernel",
            usage_bytes: Some(usage),
            limit_bytes: Some(limit),
            psi: files.psi().ok().flatten(),
        };
    }
    let (at, limit) = match nearest_limit(path, res) {
        Some((p, l)) => (p, Some(l)),
        None => (path.to_string(), None),
    };
    let files = MemoryFiles::new(h.dir(&at), h.version);
    TargetPressure {
        usage_bytes: files.usage_bytes().ok(),
        limit_bytes: limit,
        psi: files.psi().ok().flatten(),
        source: "cgroup_files",
        path: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_senders_are_unique_and_fit_in_a_comm() {
        for (i, k) in KNOWN_SENDERS.iter().enumerate() {
            assert!(k.comm.len() <= 15, "{} is longer than a comm", k.comm);
            assert!(!k.why.is_empty());
            assert!(
                KNOWN_SENDERS[i + 1..].iter().all(|o| o.comm != k.comm),
                "{} twice",
                k.comm
            );
        }
        assert_eq!(
            known_sender("earlyoom").map(|k| k.cause),
            Some(Cause::UserspaceOomKiller)
        );
        assert_eq!(
            known_sender("runc").map(|k| k.cause),
            Some(Cause::RuntimeStop)
        );
        assert_eq!(known_sender("bash"), None);
    }

    #[test]
    fn the_kernel_is_the_sender_of_si_kernel() {
        let mut e = SigkillEnricher::new(SigkillScope::All, 4096);
        let mut r = SigkillRecord {
            fields: sigkill_field::TARGET_PID | sigkill_field::SENDER_COMM,
            si_code: SI_KERNEL,
            ..SigkillRecord::default()
        };
        r.sender.comm[..4].copy_from_slice(b"runc");
        let ev = e.enrich(&r, None).expect("in scope");
        assert_eq!((ev.cause, ev.sender.is_none()), (Cause::KernelOther, true));
        r.si_code = 0;
        let ev = e.enrich(&r, None).expect("in scope");
        assert_eq!(ev.cause, Cause::RuntimeStop);
        assert_eq!(ev.sender.and_then(|s| s.comm).as_deref(), Some("runc"));
        // Without a hierarchy nothing can be placed in a workload.
        let mut w = SigkillEnricher::new(SigkillScope::Workloads, 4096);
        assert!(w.enrich(&r, None).is_none());
    }
}
