//! A proof of zero loss: the kills delivered, reconciled against the kernel's own counters.
//!
//! The kernel counts every SIGKILL its OOM killer sends (`__oom_kill_process`): node-wide in
//! `/proc/vmstat` `oom_kill`, and per victim memory cgroup in `memory.events.local` (v2) or
//! `memory.oom_control` (v1, 4.13+) `oom_kill`. It counts before it marks the victim, so each
//! counted kill has a `mark_victim` record with a later kernel time (`ktime_ns`, CLOCK_MONOTONIC).
//! (`oom_group_kill` counts group kills once per group; each member is an `oom_kill` too, so it
//! adds nothing to check.)
//!
//! The arithmetic, with snapshots `(t_before, counter, t_after)`:
//! - the baseline's `t_before` is the start: kills counted before it are in the baseline, and
//!   records of kills with a kernel time before it (queued in pinned rings while no agent ran)
//!   are not counted as delivered — a restart does not show them as gaps;
//! - a snapshot is judged one tick later, when every kill it counted has had seconds to arrive:
//!   the kernel's count since the baseline minus the kills delivered with a kernel time before
//!   the snapshot's `t_after` (plus a little slack) is the number unrecorded. The error is one
//!   way only: a kill counted just after the read may be delivered inside the slack and hide a
//!   gap for one tick; no kill is ever reported missing that was delivered.
//!
//! Per-cgroup counters are read only when the node-wide count shows a gap, to name where it was.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::cgroup::{CgroupVersion, MemoryHierarchy};

/// Kernel time between the count and the `mark_victim` record of one kill, at most (it is a
/// few microseconds: the same function sends the signal in between).
pub const SLACK_NS: u64 = 10_000_000;

/// A node-wide reading of the kernel's OOM kill count, between two clock readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub before_ns: u64,
    pub oom_kills: u64,
    pub after_ns: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the kernel's OOM kill count from {path}: {reason}")]
pub struct CounterError {
    path: String,
    reason: String,
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, so of every record's `ktime_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The `oom_kill` line of a `/proc/vmstat`, `memory.events*` or `memory.oom_control` text.
pub fn oom_kill_of(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

impl Snapshot {
    /// Reads `PROC/vmstat` between two clock readings.
    pub fn take(proc_root: &Path) -> Result<Self, CounterError> {
        let path = proc_root.join("vmstat");
        let before_ns = monotonic_ns();
        let text = std::fs::read_to_string(&path).map_err(|e| CounterError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let after_ns = monotonic_ns();
        let oom_kills = oom_kill_of(&text).ok_or_else(|| CounterError {
            path: path.display().to_string(),
            reason: "no oom_kill line (kernel before 4.13)".into(),
        })?;
        Ok(Self {
            before_ns,
            oom_kills,
            after_ns,
        })
    }
}

/// Each memory cgroup's own `oom_kill` count, by path below the hierarchy's root (`/a/b`; the
/// root is `/`). Cgroups without the counter are left out.
pub fn cgroup_oom_kills(h: &MemoryHierarchy) -> HashMap<String, u64> {
    let file = match h.version {
        CgroupVersion::V1 => "memory.oom_control",
        CgroupVersion::V2 => "memory.events.local",
    };
    let mut out = HashMap::new();
    let mut stack: Vec<PathBuf> = vec![h.root.clone()];
    while let Some(dir) = stack.pop() {
        if let Some(n) = std::fs::read_to_string(dir.join(file))
            .ok()
            .as_deref()
            .and_then(oom_kill_of)
        {
            let rel = dir.strip_prefix(&h.root).unwrap_or(&dir);
            out.insert(format!("/{}", rel.display()), n);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        stack.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    out
}

/// Kills the kernel counted that no record was delivered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The victims' memory cgroup; `None` when it could not be told (removed since, or no
    /// per-cgroup counter).
    pub cgroup: Option<String>,
    pub missing: u64,
}

/// Delivered kills against the kernel's counters since a baseline.
#[derive(Debug)]
pub struct Ledger {
    start_ns: u64,
    base_node: u64,
    base_cgroups: HashMap<String, u64>,
    /// Delivered kills (kernel time, victim cgroup) not yet folded into a judged snapshot.
    pending: Vec<(u64, Option<String>)>,
    folded: u64,
    delivered_by_cgroup: HashMap<String, u64>,
    last: Option<Snapshot>,
    unrecorded: u64,
    reported_by_cgroup: HashMap<Option<String>, u64>,
}

impl Ledger {
    /// Starts counting at `baseline`, with the cgroups' counts at that time (empty when not
    /// known: every cgroup then starts at 0).
    pub fn new(baseline: Snapshot, base_cgroups: HashMap<String, u64>) -> Self {
        Self {
            start_ns: baseline.before_ns,
            base_node: baseline.oom_kills,
            base_cgroups,
            pending: Vec::new(),
            folded: 0,
            delivered_by_cgroup: HashMap::new(),
            last: Some(baseline),
            unrecorded: 0,
            reported_by_cgroup: HashMap::new(),
        }
    }

    /// A delivered kill record. `killed` is false for a victim the kernel found already
    /// exiting (no SIGKILL, not counted); records from before the baseline do not count.
    pub fn delivered(&mut self, ktime_ns: u64, killed: bool, cgroup: Option<&str>) {
        if !killed || ktime_ns < self.start_ns {
            return;
        }
        self.pending.push((ktime_ns, cgroup.map(str::to_string)));
        if let Some(c) = cgroup {
            *self.delivered_by_cgroup.entry(c.to_string()).or_default() += 1;
        }
    }

    /// Forgets the cgroups `exists` says are gone (their counters went with them; a cgroup
    /// made again at the same path starts from 0), so pod churn does not grow the ledger.
    pub fn retain_cgroups(&mut self, exists: impl Fn(&str) -> bool) {
        self.base_cgroups.retain(|p, _| exists(p));
        self.delivered_by_cgroup.retain(|p, _| exists(p));
        self.reported_by_cgroup
            .retain(|p, _| p.as_deref().is_none_or(&exists));
    }

    /// Kills counted by the kernel since the baseline and never delivered, in total.
    pub fn unrecorded_total(&self) -> u64 {
        self.unrecorded
    }

    /// Judges the previous snapshot and keeps `now` for the next call. Returns the new gaps:
    /// their sum is the increase of [`Self::unrecorded_total`]. `cgroups` reads the
    /// per-cgroup counters; it is called only when there is a gap to place.
    pub fn reconcile(
        &mut self,
        now: Snapshot,
        cgroups: impl FnOnce() -> HashMap<String, u64>,
    ) -> Vec<Gap> {
        let Some(prev) = self.last.replace(now) else {
            return Vec::new();
        };
        let cutoff = prev.after_ns.saturating_add(SLACK_NS);
        let before = self.pending.len();
        self.pending.retain(|(t, _)| *t >= cutoff);
        self.folded += (before - self.pending.len()) as u64;
        let missing = prev
            .oom_kills
            .saturating_sub(self.base_node)
            .saturating_sub(self.folded);
        if missing <= self.unrecorded {
            return Vec::new();
        }
        let new = missing - self.unrecorded;
        self.unrecorded = missing;
        self.place(new, &cgroups())
    }

    /// Names the cgroups of `new` missing kills: those whose own count rose more than the kills
    /// delivered from them (beyond what was already reported); the rest has no cgroup.
    fn place(&mut self, new: u64, counts: &HashMap<String, u64>) -> Vec<Gap> {
        let mut left = new;
        let mut gaps = Vec::new();
        let mut paths: Vec<&String> = counts.keys().collect();
        paths.sort();
        for path in paths {
            if left == 0 {
                break;
            }
            let counted =
                counts[path].saturating_sub(self.base_cgroups.get(path).copied().unwrap_or(0));
            let delivered = self.delivered_by_cgroup.get(path).copied().unwrap_or(0);
            let key = Some(path.clone());
            let reported = self.reported_by_cgroup.get(&key).copied().unwrap_or(0);
            let excess = counted
                .saturating_sub(delivered)
                .saturating_sub(reported)
                .min(left);
            if excess > 0 {
                *self.reported_by_cgroup.entry(key).or_default() += excess;
                gaps.push(Gap {
                    cgroup: Some(path.clone()),
                    missing: excess,
                });
                left -= excess;
            }
        }
        if left > 0 {
            *self.reported_by_cgroup.entry(None).or_default() += left;
            gaps.push(Gap {
                cgroup: None,
                missing: left,
            });
        }
        gaps
    }
}

/// The agent's reconciler: a [`Ledger`] started now, over this host's counters.
#[derive(Debug)]
pub struct Reconciler {
    ledger: Ledger,
    proc_root: PathBuf,
    hierarchy: Option<MemoryHierarchy>,
    ticks: u64,
}

/// Every this many ticks the reconciler forgets removed cgroups (one `stat` each).
const PRUNE_EVERY: u64 = 12;

impl Reconciler {
    /// Takes the baseline (node-wide, and every memory cgroup's count).
    pub fn start(proc_root: &Path) -> Result<Self, CounterError> {
        let hierarchy = MemoryHierarchy::detect()
            .inspect_err(|e| log::warn!("unrecorded kills will not be placed in cgroups: {e}"))
            .ok();
        let base_cgroups = hierarchy.as_ref().map(cgroup_oom_kills).unwrap_or_default();
        let baseline = Snapshot::take(proc_root)?;
        Ok(Self {
            ledger: Ledger::new(baseline, base_cgroups),
            proc_root: proc_root.to_path_buf(),
            hierarchy,
            ticks: 0,
        })
    }

    /// A kill record the agent wrote.
    pub fn delivered(&mut self, kill: &crate::stream::Kill) {
        let ev = &kill.event;
        let killed = ev.action != Some(crate::enrich::event::Action::AlreadyExiting);
        self.ledger
            .delivered(ev.ktime_ns, killed, ev.victim.task.cgroup_path());
    }

    /// Reads the counters and judges the previous reading; logs and returns each new gap.
    pub fn tick(&mut self) -> Result<Vec<Gap>, CounterError> {
        let now = Snapshot::take(&self.proc_root)?;
        self.ticks += 1;
        if let Some(h) = self
            .hierarchy
            .as_ref()
            .filter(|_| self.ticks.is_multiple_of(PRUNE_EVERY))
        {
            let root = h.root.clone();
            self.ledger
                .retain_cgroups(|p| root.join(p.trim_start_matches('/')).is_dir());
        }
        let hierarchy = self.hierarchy.as_ref();
        let gaps = self
            .ledger
            .reconcile(now, || hierarchy.map(cgroup_oom_kills).unwrap_or_default());
        for g in &gaps {
            log::warn!(
                "{} OOM kill(s) counted by the kernel were not recorded (victims' cgroup: {})",
                g.missing,
                g.cgroup.as_deref().unwrap_or("unknown, removed since")
            );
        }
        Ok(gaps)
    }

    /// Kills the kernel counted since the start that no record showed.
    pub fn unrecorded_total(&self) -> u64 {
        self.ledger.unrecorded_total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(before_ns: u64, oom_kills: u64) -> Snapshot {
        Snapshot {
            before_ns,
            oom_kills,
            after_ns: before_ns + 1_000,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn parses_the_oom_kill_line() {
        let vmstat = "oom_kill_disable 0\nunder_oom 0\noom_kill 926\n";
        assert_eq!(oom_kill_of(vmstat), Some(926));
        assert_eq!(
            oom_kill_of("low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(oom_kill_of("pgfault 5\n"), None);
    }

    #[test]
    fn every_kill_delivered_is_no_gap_even_when_it_arrives_a_tick_late() {
        let mut l = Ledger::new(snap(10 * S, 100), HashMap::new());
        // Two kills between the baseline and the first tick; one record arrives only after it.
        l.delivered(11 * S, true, Some("/a"));
        assert_eq!(l.reconcile(snap(12 * S, 102), HashMap::new), vec![]);
        l.delivered(11 * S + 5, true, Some("/a"));
        assert_eq!(l.reconcile(snap(14 * S, 102), HashMap::new), vec![]);
        assert_eq!(l.reconcile(snap(16 * S, 102), HashMap::new), vec![]);
        assert_eq!(l.unrecorded_total(), 0);
    }

    #[test]
    fn queued_records_from_before_the_start_are_neither_delivered_nor_gaps() {
        let mut l = Ledger::new(snap(10 * S, 100), HashMap::new());
        // Kills queued in pinned rings while no agent ran: counted before the baseline.
        l.delivered(9 * S, true, Some("/a"));
        l.delivered(9 * S + 1, true, Some("/a"));
        // One kill after the start, not delivered.
        let gaps = l.reconcile(snap(12 * S, 101), || HashMap::from([("/a".into(), 3)]));
        assert_eq!(gaps, vec![]);
        let gaps = l.reconcile(snap(14 * S, 101), || HashMap::from([("/a".into(), 3)]));
        assert_eq!(
            gaps,
            vec![Gap {
                cgroup: Some("/a".into()),
                missing: 1
            }]
        );
    }

    #[test]
    fn a_gap_is_placed_in_its_cgroup_and_reported_once() {
        let base = HashMap::from([("/a".to_string(), 5), ("/b".to_string(), 0)]);
        let mut l = Ledger::new(snap(10 * S, 100), base);
        l.delivered(11 * S, true, Some("/a"));
        l.delivered(11 * S, false, Some("/b")); // already exiting: not counted by the kernel
                                                // The kernel counted 3: one in /a (delivered), two in /b (not delivered).
        let counts = || HashMap::from([("/a".to_string(), 6), ("/b".to_string(), 2)]);
        assert_eq!(l.reconcile(snap(12 * S, 103), counts), vec![]);
        let gaps = l.reconcile(snap(14 * S, 103), counts);
        assert_eq!(
            gaps,
            vec![Gap {
                cgroup: Some("/b".into()),
                missing: 2
            }]
        );
        assert_eq!(l.unrecorded_total(), 2);
        assert_eq!(l.reconcile(snap(16 * S, 103), counts), vec![]);
        // One more lost, in a cgroup removed since: no cgroup to name.
        assert_eq!(l.reconcile(snap(18 * S, 104), counts), vec![]);
        assert_eq!(
            l.reconcile(snap(20 * S, 104), counts),
            vec![Gap {
                cgroup: None,
                missing: 1
            }]
        );
        assert_eq!(l.unrecorded_total(), 3);
    }

    #[test]
    fn removed_cgroups_are_forgotten_and_start_again_from_zero() {
        let base = HashMap::from([("/gone".to_string(), 7), ("/kept".to_string(), 1)]);
        let mut l = Ledger::new(snap(10 * S, 100), base);
        l.delivered(11 * S, true, Some("/gone"));
        l.retain_cgroups(|p| p == "/kept");
        assert_eq!(l.base_cgroups.len(), 1);
        assert!(l.delivered_by_cgroup.is_empty());
        // "/gone" made again: its one kill (counter 1, not 8) is placed there.
        let counts = || HashMap::from([("/gone".to_string(), 1), ("/kept".to_string(), 1)]);
        assert_eq!(l.reconcile(snap(12 * S, 102), counts), vec![]);
        assert_eq!(
            l.reconcile(snap(14 * S, 102), counts),
            vec![Gap {
                cgroup: Some("/gone".into()),
                missing: 1
            }]
        );
    }

    #[test]
    fn records_after_the_judged_snapshot_do_not_hide_its_gap() {
        let mut l = Ledger::new(snap(10 * S, 100), HashMap::new());
        // The kernel counted 1 by t=12 s; no record for it. A later kill (t=13 s) is delivered.
        assert_eq!(l.reconcile(snap(12 * S, 101), HashMap::new), vec![]);
        l.delivered(13 * S, true, None);
        let gaps = l.reconcile(snap(14 * S, 102), HashMap::new);
        assert_eq!(
            gaps,
            vec![Gap {
                cgroup: None,
                missing: 1
            }]
        );
    }
}
