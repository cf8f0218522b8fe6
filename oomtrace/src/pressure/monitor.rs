//! The pressure monitor: which cgroups to watch (those with a memory limit), a sample a second
//! for each, near-limit detection where the kernel cannot do it, and the `pressure` section of
//! each kill.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use oomtrace_common::{pressure_source, stat_slot, MemcgStats, MemoryPressureRecord};

use super::{
    thrashing::{Observation, ThrashEvidence, Thrashing},
    timeline::{Sample, Timeline},
    PressureSettings,
};
use crate::{
    capture::record::c_str,
    cgroup::memory::{MemoryEvents, MemoryFiles, MemoryStat, Psi, UsageFile},
    cgroup::{watch::TreeWatch, CgroupResolver, MemoryHierarchy},
};

mod refresh;

/// How often the hierarchy is walked again for new or removed limited cgroups when inotify
/// cannot watch all of it (without inotify, or past `fs.inotify.max_user_watches`).
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// How often the hierarchy is walked again while inotify watches all of it: a safety net only
/// (mkdir, rmdir and limit writes are seen through the watch within a tick, a cgroup whose usage
/// file is gone is forgotten at its next sample). With 2000 limited cgroups a walk takes
/// 0.2–0.3 s on the event loop.
pub const FULL_RESCAN_EVERY: Duration = Duration::from_secs(600);

/// How often every watched cgroup's event counters are read without the reclaim tracepoints.
/// With them, all are read at each full walk, and between walks those that reclaimed (a charge
/// hit the limit: only then do `failcnt` and `oom_kill` move), were sampled at or above
/// [`STAT_FROM_RATIO`] of their limit, or (cgroup v2) whose `memory.events` the kernel notified.
pub const EVENTS_EVERY: Duration = Duration::from_secs(2);

/// Usage / limit below which a cgroup whose usage has stayed steady is sampled less often.
pub const SPARSE_BELOW_RATIO: f64 = 0.25;

/// How long usage must stay steady (within [`STEADY_WITHIN_RATIO`] of the limit) before a
/// cgroup below [`SPARSE_BELOW_RATIO`] is sampled every [`SPARSE_EVERY`] instead of every tick.
pub const STEADY_FOR: Duration = Duration::from_secs(10);

/// A change of usage smaller than this share of the limit keeps a cgroup steady.
pub const STEADY_WITHIN_RATIO: f64 = 0.01;

/// The sampling interval of a steady cgroup far from its limit.
pub const SPARSE_EVERY: Duration = Duration::from_secs(5);

/// Which sources feed the timelines on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// memcg stat tracepoints (charge deltas, in-kernel near-limit detection).
    pub memcg_stat: bool,
    /// memcg reclaim tracepoints (reclaim passes and stalls).
    pub reclaim: bool,
}

impl Sources {
    /// Names for records and `check`.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memcg_stat {
            out.push("memcg_stat_tracepoints");
        }
        if self.reclaim {
            out.push("reclaim_tracepoints");
        }
        out.push("cgroup_files");
        out
    }
}

/// A cgroup whose working set is at or above the near-limit threshold, or that is thrashing,
/// before enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub usage_bytes: u64,
    /// Usage minus inactive page cache: what was judged against the threshold.
    pub working_set_bytes: Option<u64>,
    pub limit_bytes: u64,
    pub threshold: f64,
    /// `kernel_stat`, `kernel_reclaim` or `cgroup_files`.
    pub source: &'static str,
    /// The thread whose charge or reclaim saw it (kernel sources).
    pub task: Option<(u32, String)>,
    pub growth_bytes_per_s: Option<f64>,
    /// Reclaim passes and stall ns over the last minute.
    pub reclaim: Option<(u64, u64)>,
    /// The kernel record's number in its sequence of near-limit records (kernel sources).
    pub seq: Option<u64>,
    /// Set when the cgroup is stuck at its limit ([`super::thrashing`]).
    pub thrashing: Option<ThrashEvidence>,
}

/// The `pressure` section of a kill: its OOM cgroup's last minute up to the kill.
#[derive(Debug, Clone, PartialEq)]
pub struct KillPressure {
    /// What fed the timeline ([`Sources::names`]).
    pub sources: Vec<&'static str>,
    /// The sampling interval.
    pub interval: Duration,
    /// The kernel's page counter at the kill.
    pub usage_bytes: u64,
    pub limit_bytes: u64,
    /// `CLOCK_MONOTONIC` ns of the kill: what offsets are measured from.
    pub kill_ns: u64,
    pub growth_bytes_per_s: Option<f64>,
    /// Reclaim passes and stall ns over the timeline and up to the kill (with the reclaim
    /// tracepoints).
    pub reclaim: Option<(u64, u64)>,
    /// The `memory.stat` that stands for the kill ([`chosen_stat`]).
    pub stat: Option<StatRead>,
    pub events: Option<MemoryEvents>,
    pub psi: Option<Psi>,
    /// The samples up to the kill, then the kill point itself (charges and reclaim since the
    /// last sample, the kernel's usage at the kill).
    pub timeline: Vec<Sample>,
}

/// A `memory.stat` read and when (`CLOCK_MONOTONIC` ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatRead {
    pub ktime_ns: u64,
    pub stat: MemoryStat,
}

impl Reading {
    /// Usage / limit.
    pub fn ratio(&self) -> f64 {
        if self.limit_bytes == 0 {
            0.0
        } else {
            self.usage_bytes as f64 / self.limit_bytes as f64
        }
    }

    /// Working set / limit, when the working set is known.
    pub fn working_set_ratio(&self) -> Option<f64> {
        let ws = self.working_set_bytes?;
        (self.limit_bytes > 0).then(|| ws as f64 / self.limit_bytes as f64)
    }
}

struct Watched {
    path: String,
    files: MemoryFiles,
    /// The usage file, held open where descriptors allow.
    usage: UsageFile,
    /// `CLOCK_MONOTONIC` ns from which the next sample is due ([`Watched::due`]).
    next_sample_ns: u64,
    /// When usage last moved by more than [`STEADY_WITHIN_RATIO`] of the limit (ns).
    steady_since_ns: u64,
    limit_bytes: u64,
    timeline: Timeline,
    /// The last `memory.stat` read (ktime ns), taken every second while usage is at least
    /// [`STAT_FROM_RATIO`] of the limit: the breakdown before a kill, which a read after it can
    /// no longer see once the OOM reaper has freed the victim's memory.
    last_stat: Option<StatRead>,
    /// The cgroups the kernel had counters for at the last sample, this one and those under
    /// it: what a kill here looks up (one map lookup each, never a walk of the map).
    kernel_ids: Vec<u64>,
    /// Working set at the last sample: from a `memory.stat` read then, or the last one capped
    /// by the usage since.
    working_set: Option<u64>,
    /// When `memory.stat` was last read for the working set (`CLOCK_MONOTONIC` ns).
    working_set_read_ns: Option<u64>,
    /// Refaults and major faults at the last `memory.stat` read near the limit, and when.
    faults: Option<(u64, Option<u64>, u64)>,
    thrashing: Thrashing,
}

/// A watched cgroup's level, as of its last sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level<'a> {
    pub path: &'a str,
    pub usage_bytes: u64,
    pub working_set_bytes: Option<u64>,
    pub limit_bytes: u64,
    /// Seconds it has spent thrashing since it was first watched.
    pub thrashing_seconds: f64,
}

/// How old a `memory.stat` read before a kill may be and still stand for it.
pub const STAT_BEFORE_MAX_NS: u64 = 2_000_000_000;

/// Usage / limit from which a cgroup's `memory.stat` is read every second (lower when a
/// threshold is lower).
pub const STAT_FROM_RATIO: f64 = 0.5;

/// Below [`STAT_FROM_RATIO`], how old the working set of a cgroup that uses memory may grow
/// before `memory.stat` is read again (it is capped by the usage in between).
pub const WORKING_SET_REFRESH_NS: u64 = 30_000_000_000;

/// Working set / limit from which reclaim that undoes itself (stalls with refaults) counts as
/// failing, for the stat hooks.
pub const FAILING_RECLAIM_FROM_RATIO: f64 = 0.5;

/// A sample interval counts as covered by the stat hooks when they were attached at most this
/// long after it began: the sample is taken just before the hooks are attached, and the few ms
/// between are not worth a second without charges.
pub const ATTACH_GRACE_NS: u64 = 100_000_000;

/// Per-cgroup timelines and near-limit detection.
pub struct PressureMonitor {
    settings: PressureSettings,
    sources: Sources,
    page_size: u64,
    hierarchy: MemoryHierarchy,
    watched: HashMap<u64, Watched>,
    by_path: HashMap<String, u64>,
    last_scan: Option<Instant>,
    /// inotify on every directory of the hierarchy; `None` when inotify is unavailable (then
    /// the tree is walked every [`RESCAN_EVERY`]).
    watch: Option<TreeWatch>,
    /// When every watched cgroup's event counters were last read.
    last_events: Option<Instant>,
    /// Cgroups whose event counters are read at the end of this tick.
    events_due: HashSet<u64>,
    kernel_last: HashMap<u64, MemcgStats>,
    last_reading: HashMap<u64, u64>,
    /// Node-wide reclaim passes and stall ns since start.
    reclaim_total: (u64, u64),
    /// Memory event counters of the watched cgroups: last values per cgroup, and the sum of
    /// their increases since start.
    events_last: HashMap<u64, HashMap<String, u64>>,
    events_total: std::collections::BTreeMap<String, u64>,
    /// When the monitor started: cgroups made since count their events from zero.
    started: std::time::SystemTime,
    /// Since when the per-page stat hooks are attached (`None`: detached;
    /// [`Self::set_stat_hooks`]).
    stat_hooks_since: Option<u64>,
    /// When the last tick sampled (`CLOCK_MONOTONIC` ns; 0 before the first).
    last_tick_ns: u64,
    /// Kernel near-limit records dismissed because the working set was below the threshold
    /// (the usage was page cache).
    dismissed: u64,
    /// `CLOCK_MONOTONIC` now, in ns (a fixed clock in tests).
    now: fn() -> u64,
}

impl PressureMonitor {
    pub fn new(
        settings: PressureSettings,
        sources: Sources,
        hierarchy: MemoryHierarchy,
        page_shift: u32,
    ) -> Self {
        Self {
            settings,
            sources,
            page_size: 1 << page_shift,
            hierarchy,
            watched: HashMap::new(),
            by_path: HashMap::new(),
            last_scan: None,
            watch: TreeWatch::new()
                .map_err(|e| log::warn!("{e}; the cgroup tree is walked every {RESCAN_EVERY:?}"))
                .ok(),
            last_events: None,
            events_due: HashSet::new(),
            kernel_last: HashMap::new(),
            last_reading: HashMap::new(),
            reclaim_total: (0, 0),
            events_last: HashMap::new(),
            events_total: Default::default(),
            started: std::time::SystemTime::now(),
            now: crate::timefmt::monotonic_now_ns,
            stat_hooks_since: sources.memcg_stat.then_some(0),
            dismissed: 0,
            last_tick_ns: 0,
        }
    }

    /// The same monitor reading time from `now` instead of `CLOCK_MONOTONIC`, for tests whose
    /// samples and `memory.stat` reads must have fixed times.
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: fn() -> u64) -> Self {
        self.now = now;
        self
    }

    /// Walks the whole tree: the resolver's paths, every limited cgroup (new ones watched,
    /// removed ones forgotten, limits updated), an inotify watch on every directory, and every
    /// watched cgroup's event counters.
    fn rescan(&mut self, resolver: &mut CgroupResolver) {
        let started = Instant::now();
        resolver.rescan();
        let resolved = started.elapsed();
        let found = self.walk();
        let walked = started.elapsed();
        let mut keep = HashMap::with_capacity(found.len());
        for c in found {
            let w = self
                .watched
                .remove(&c.id)
                .unwrap_or_else(|| self.new_watched(c.path.clone(), c.dir.clone(), c.limit_bytes));
            keep.insert(
                c.id,
                Watched {
                    limit_bytes: c.limit_bytes,
                    ..w
                },
            );
        }
        self.watched = keep;
        self.by_path = self
            .watched
            .iter()
            .map(|(id, w)| (w.path.clone(), *id))
            .collect();
        self.last_reading
            .retain(|id, _| self.watched.contains_key(id));
        let merged = started.elapsed();
        self.count_events();
        self.last_scan = Some(Instant::now());
        log::debug!(
            "cgroup walk: {} limited cgroups watched, {} directories under inotify, took {:?} \
             (paths {resolved:?}, limits and watches {:?}, event counters {:?})",
            self.watched.len(),
            self.watch.as_ref().map_or(0, |w| w.len()),
            started.elapsed(),
            walked - resolved,
            started.elapsed() - merged,
        );
    }

    fn new_watched(&self, path: String, dir: std::path::PathBuf, limit_bytes: u64) -> Watched {
        let files = MemoryFiles::new(dir, self.hierarchy.version);
        Watched {
            path,
            usage: UsageFile::new(&files),
            files,
            next_sample_ns: 0,
            steady_since_ns: (self.now)(),
            limit_bytes,
            timeline: Timeline::default(),
            last_stat: None,
            kernel_ids: Vec::new(),
            working_set: None,
            working_set_read_ns: None,
            faults: None,
            thrashing: Thrashing::default(),
        }
    }

    /// Adds the increase of each watched cgroup's own memory event counters to the totals. A
    /// cgroup seen for the first time counts from zero when it was made after the monitor
    /// started, else it only sets its baseline (its past is not ours to count).
    fn count_events(&mut self) {
        let ids: Vec<u64> = self.watched.keys().copied().collect();
        self.events_last
            .retain(|id, _| self.watched.contains_key(id));
        self.count_events_of(&ids);
        self.events_due.clear();
        self.last_events = Some(Instant::now());
    }

    /// [`Self::count_events`] for the cgroups `ids` only.
    fn count_events_of(&mut self, ids: &[u64]) {
        let empty = HashMap::new();
        for id in ids {
            let Some(w) = self.watched.get(id) else {
                continue;
            };
            let Ok(counters) = w.files.own_event_counters() else {
                continue;
            };
            let prev = match self.events_last.get(id) {
                Some(p) => Some(p),
                None if made_since(w, self.started) => Some(&empty),
                None => None,
            };
            if let Some(prev) = prev {
                for (name, v) in &counters {
                    let inc = v.saturating_sub(prev.get(name).copied().unwrap_or(0));
                    if inc > 0 {
                        *self.events_total.entry(name.clone()).or_default() += inc;
                    }
                }
            }
            self.events_last.insert(*id, counters);
        }
    }

    /// Memory events of the watched cgroups since start, by counter name.
    pub fn events_total(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.events_total
    }

    /// Node-wide reclaim passes and stall ns since start (`None` without the tracepoints).
    pub fn reclaim_total(&self) -> Option<(u64, u64)> {
        self.sources.reclaim.then_some(self.reclaim_total)
    }

    /// One second's work: rescan when due, fold the kernel's counters into each watched
    /// cgroup (and its ancestors), read each one's usage, and return the near-limit readings
    /// found here (only where the kernel cannot detect them itself).
    pub fn tick(
        &mut self,
        kernel: &[(u64, MemcgStats)],
        resolver: &mut CgroupResolver,
    ) -> Vec<Reading> {
        self.refresh(resolver);
        let now = (self.now)();
        let mut acc: HashMap<u64, Acc> = HashMap::new();
        let mut members: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut seen = HashMap::with_capacity(kernel.len());
        for (id, cur) in kernel {
            let d = delta(self.kernel_last.get(id), cur);
            seen.insert(*id, *cur);
            self.reclaim_total.0 += d.reclaims;
            self.reclaim_total.1 += d.reclaim_ns;
            let Some(path) = resolver.known(*id) else {
                continue;
            };
            for anc in ancestors(path) {
                if let Some(w) = self.by_path.get(anc) {
                    acc.entry(*w).or_default().add(&d);
                    members.entry(*w).or_default().push(*id);
                }
            }
        }
        self.kernel_last = seen;
        for (id, w) in self.watched.iter_mut() {
            w.kernel_ids = members.remove(id).unwrap_or_default();
        }

        let interval = self.settings.interval_ns();
        let page_size = self.page_size;
        let stat_from = STAT_FROM_RATIO
            .min(self.settings.threshold)
            .min(self.settings.hooks_threshold);
        let threshold = self.settings.threshold;
        let charged_known = self.charges_known(self.last_tick_ns);
        let mut readings = Vec::new();
        let mut gone = Vec::new();
        for (id, w) in self.watched.iter_mut() {
            if !w.due(now, acc.get(id)) {
                continue;
            }
            let usage = match w.usage.read() {
                Ok(u) => u,
                Err(_) => {
                    gone.push(*id);
                    continue;
                }
            };
            w.schedule(now, usage);
            let a = acc.get(id).copied().unwrap_or_default();
            let limit = w.limit_bytes as f64;
            let reclaim = self.sources.reclaim.then_some(a.reclaim);
            let near = w.limit_bytes > 0 && usage as f64 >= stat_from * limit;
            let stale = w
                .working_set_read_ns
                .is_none_or(|t| now.saturating_sub(t) >= WORKING_SET_REFRESH_NS);
            let fresh = if near || (usage > 0 && stale) {
                w.files.stat().ok()
            } else {
                None
            };
            w.working_set = match &fresh {
                _ if usage == 0 => Some(0),
                Some(stat) => stat.working_set(usage),
                None => w.working_set.map(|ws| ws.min(usage)),
            };
            if fresh.is_some() {
                w.working_set_read_ns = Some(now);
            }
            // Only reads near the limit stand for a kill's breakdown (and feed thrashing): a
            // low cgroup's read (its code and cache loaded, little anon) would describe a kill
            // within 2 s wrongly.
            if let Some(stat) = fresh.filter(|_| near) {
                w.last_stat = Some(StatRead {
                    ktime_ns: now,
                    stat,
                });
                let thrash = observe_faults(w, &stat, now, reclaim).and_then(|o| {
                    w.thrashing
                        .observe(&o, page_size, interval)
                        .map(|ev| ThrashEvidence {
                            psi: w.files.psi().ok().flatten(),
                            ..ev
                        })
                });
                if let Some(ev) = thrash {
                    readings.push(sample_reading(*id, w, usage, now, threshold, Some(ev)));
                }
            } else if !near {
                // Too far from the limit to thrash: the run, if any, is over.
                w.thrashing.interrupt();
                w.faults = None;
            }
            w.timeline.push(Sample {
                ktime_ns: now,
                usage_bytes: usage,
                working_set_bytes: w.working_set,
                charged: charged_known.then(|| a.charged_bytes(page_size)),
                reclaim,
            });
            // Near the limit means a working set near it: page cache is reclaimed first. Where
            // `memory.stat` cannot be read, the usage stands in.
            if w.limit_bytes == 0 || (w.working_set.unwrap_or(usage) as f64) < threshold * limit {
                continue;
            }
            if self
                .last_reading
                .get(id)
                .is_some_and(|t| now.saturating_sub(*t) < interval)
            {
                continue;
            }
            self.last_reading.insert(*id, now);
            readings.push(sample_reading(*id, w, usage, now, threshold, None));
        }
        self.last_tick_ns = now;
        for id in gone {
            if let Some(w) = self.watched.remove(&id) {
                self.by_path.remove(&w.path);
            }
        }
        self.count_due_events(&acc, now);
        readings
    }

    /// A near-limit record from the kernel, with the figures of its cgroup's timeline, when no
    /// record for the cgroup was made within the rate-limit interval and the cgroup's working
    /// set is at or above the threshold too: the kernel compares its page
    /// counter, which counts page cache; a record whose working set is below is dismissed
    /// (`None`, counted in [`Self::dismissed`]). A `memory.stat` that cannot be read leaves the
    /// working set unknown and the record stands.
    pub fn kernel_reading(
        &mut self,
        r: &MemoryPressureRecord,
        resolver: &mut CgroupResolver,
    ) -> Option<Reading> {
        // A cgroup new since the last walk: walk now, so its timeline (and the `memory.stat`
        // reads a kill will want) start at once rather than up to 2 s later.
        if !self.watched.contains_key(&r.cgroup_id) {
            self.watch_now(r.cgroup_id, resolver);
        }
        let usage = r.usage_pages.saturating_mul(self.page_size);
        let limit = r.limit_pages.saturating_mul(self.page_size);
        let threshold = f64::from(r.threshold_per_10k) / 10_000.0;
        let path = resolver.path(r.cgroup_id);
        let now = (self.now)();
        let files = match self.watched.get(&r.cgroup_id) {
            Some(w) => Some(w.files.clone()),
            None => path
                .as_deref()
                .map(|p| MemoryFiles::new(self.hierarchy.dir(p), self.hierarchy.version)),
        };
        let stat = files.and_then(|f| f.stat().ok());
        let working_set = stat.as_ref().and_then(|s| s.working_set(usage));
        // The read judges this record and updates the working set; it does not stand for a
        // kill's breakdown (a process still growing fast would be described as it was, not at
        // the kill: only the 1 s reads near the limit do).
        if let Some(w) = self.watched.get_mut(&r.cgroup_id) {
            if stat.is_some() {
                w.working_set = working_set;
                w.working_set_read_ns = Some(now);
            }
        }
        if working_set.is_some_and(|ws| (ws as f64) < threshold * limit as f64) {
            self.dismissed += 1;
            return None;
        }
        // One near-limit record per cgroup per interval, whoever saw it first: a 1 s sample may
        // have reported this cgroup just before the kernel did (its `capture.seq` then leaves
        // a gap, as a dismissed record's does).
        let interval = self.settings.interval_ns();
        if self
            .last_reading
            .get(&r.cgroup_id)
            .is_some_and(|t| r.ktime_ns.saturating_sub(*t) < interval)
        {
            return None;
        }
        // The 1 s samples (which look where the kernel cannot) stay quiet for this cgroup too.
        self.last_reading.insert(r.cgroup_id, r.ktime_ns);
        let w = self.watched.get(&r.cgroup_id);
        Some(Reading {
            ktime_ns: r.ktime_ns,
            cgroup_id: r.cgroup_id,
            path,
            usage_bytes: usage,
            working_set_bytes: working_set,
            limit_bytes: limit,
            threshold,
            source: if r.source == pressure_source::RECLAIM {
                "kernel_reclaim"
            } else {
                "kernel_stat"
            },
            task: Some((r.pid, c_str(&r.comm))),
            growth_bytes_per_s: w.and_then(|w| w.timeline.growth_bytes_per_s(r.ktime_ns, usage)),
            reclaim: w.and_then(|w| w.timeline.reclaim_totals(r.ktime_ns)),
            seq: Some(r.seq),
            thrashing: None,
        })
    }

    /// The `pressure` section of a kill whose limit was hit in cgroup `id` at `path`, with the
    /// kernel's usage and limit at the kill. `kernel` (a lookup of one cgroup's counters now)
    /// gives the kill point what happened since the last sample: the charges and reclaim right
    /// before the kill, in this cgroup and those under it that the last sample saw (a cgroup
    /// newer than that sample counts from the next one). O(those cgroups), not O(the map).
    pub fn kill_section(
        &mut self,
        id: u64,
        path: Option<&str>,
        usage_bytes: u64,
        limit_bytes: u64,
        kill_ns: u64,
        kernel: &dyn Fn(u64) -> Option<MemcgStats>,
    ) -> KillPressure {
        let mut last = Acc::default();
        if path.is_some() {
            let under = self.watched.get(&id).map(|w| w.kernel_ids.as_slice());
            let ids = under.unwrap_or_default();
            let extra = (!ids.contains(&id)).then_some(id);
            for kid in ids.iter().copied().chain(extra) {
                if let Some(cur) = kernel(kid) {
                    last.add(&delta(self.kernel_last.get(&kid), &cur));
                }
            }
        }
        let w = self.watched.get(&id);
        let mut timeline: Vec<Sample> = w
            .map(|w| {
                w.timeline
                    .samples()
                    .filter(|s| s.ktime_ns <= kill_ns)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        // The kill itself: the kernel's page counter at that moment, and the charges and
        // reclaim since the last sample.
        let last_sample_ns = timeline.last().map_or(self.last_tick_ns, |s| s.ktime_ns);
        timeline.push(Sample {
            ktime_ns: kill_ns,
            usage_bytes,
            working_set_bytes: None,
            charged: self
                .charges_known(last_sample_ns)
                .then(|| last.charged_bytes(self.page_size)),
            reclaim: self.sources.reclaim.then_some(last.reclaim),
        });
        let reclaim = self.sources.reclaim.then(|| {
            let (n, ns) = w
                .and_then(|w| w.timeline.reclaim_totals(kill_ns))
                .unwrap_or_default();
            (n + last.reclaim.0, ns + last.reclaim.1)
        });
        let mut section = KillPressure {
            sources: self.sources.names(),
            interval: super::SAMPLE_EVERY,
            usage_bytes,
            limit_bytes,
            kill_ns,
            growth_bytes_per_s: w.and_then(|w| w.timeline.growth_bytes_per_s(kill_ns, usage_bytes)),
            reclaim,
            stat: None,
            events: None,
            psi: None,
            timeline,
        };
        let files = w.map(|w| w.files.clone()).or_else(|| {
            path.map(|p| MemoryFiles::new(self.hierarchy.dir(p), self.hierarchy.version))
        });
        let before = w
            .and_then(|w| w.last_stat)
            .filter(|s| s.ktime_ns <= kill_ns);
        if let Some(files) = files {
            let after = files.stat().ok().map(|stat| StatRead {
                ktime_ns: (self.now)(),
                stat,
            });
            section.stat = chosen_stat(before, after, kill_ns);
            section.events = files.events().ok();
            section.psi = files.psi().ok().flatten();
        }
        section
    }

    /// Whether some watched cgroup needs the per-page stat hooks now (`--stat-hooks adaptive`):
    /// at its last sample its working set was at or above `hooks_threshold` of its limit, or
    /// its reclaim was failing. The caller keeps the hooks attached through a quiet period
    /// after this turns false.
    /// Returns the path of one such cgroup (for the log line). Failing reclaim: a working set
    /// of at least [`FAILING_RECLAIM_FROM_RATIO`] of the limit, and tasks stalled in reclaim
    /// during the last interval. A cgroup full of page cache reclaims without either.
    pub fn in_trouble(&self) -> Option<&str> {
        let hooks = self.settings.hooks_threshold;
        self.watched
            .values()
            .find(|w| {
                let (Some(ws), true) = (w.working_set, w.limit_bytes > 0) else {
                    return false;
                };
                let ratio = ws as f64 / w.limit_bytes as f64;
                let stalled = w
                    .timeline
                    .last()
                    .and_then(|s| s.reclaim)
                    .is_some_and(|(_, ns)| ns > 0);
                ratio >= hooks || (ratio >= FAILING_RECLAIM_FROM_RATIO && stalled)
            })
            .map(|w| w.path.as_str())
    }

    /// Told each time the per-page stat hooks are attached (`true`) or detached: a sample
    /// carries charge deltas only for an interval the hooks covered.
    pub fn set_stat_hooks(&mut self, attached: bool) {
        self.stat_hooks_since = match (attached, self.stat_hooks_since) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some((self.now)()),
        };
    }

    /// Whether the stat hooks counted every charge from `start` (`CLOCK_MONOTONIC` ns) on.
    fn charges_known(&self, start: u64) -> bool {
        self.sources.memcg_stat
            && self
                .stat_hooks_since
                .is_some_and(|t| t <= start.saturating_add(ATTACH_GRACE_NS))
    }

    /// Kernel near-limit records dismissed since start because the cgroup's working set was
    /// below the threshold (its usage was page cache).
    pub fn dismissed(&self) -> u64 {
        self.dismissed
    }

    /// Each watched cgroup's level as of its last sample: what the agent exports.
    pub fn levels(&self) -> impl Iterator<Item = Level<'_>> {
        self.watched.values().filter_map(|w| {
            let s = w.timeline.last()?;
            Some(Level {
                path: w.path.as_str(),
                usage_bytes: s.usage_bytes,
                working_set_bytes: s.working_set_bytes,
                limit_bytes: w.limit_bytes,
                thrashing_seconds: w.thrashing.seconds(),
            })
        })
    }
}

/// A reading of the 1 s samples (`cgroup_files`): near the limit, or thrashing.
fn sample_reading(
    id: u64,
    w: &Watched,
    usage: u64,
    now: u64,
    threshold: f64,
    thrashing: Option<ThrashEvidence>,
) -> Reading {
    Reading {
        ktime_ns: now,
        cgroup_id: id,
        path: Some(w.path.clone()),
        usage_bytes: usage,
        working_set_bytes: w.working_set,
        limit_bytes: w.limit_bytes,
        threshold,
        source: "cgroup_files",
        task: None,
        growth_bytes_per_s: w.timeline.growth_bytes_per_s(now, usage),
        reclaim: w.timeline.reclaim_totals(now),
        seq: None,
        thrashing,
    }
}

/// Longest gap between two `memory.stat` reads that still makes one thrashing interval.
const FAULTS_MAX_GAP_NS: u64 = 3_000_000_000;

/// The interval since the previous `memory.stat` read of `w` (its refaults and major faults,
/// the tick's reclaim), and the new read as the next one's start. `None` for a first read, a
/// gap, or a counter that went back (the cgroup was made again).
fn observe_faults(
    w: &mut Watched,
    stat: &MemoryStat,
    now: u64,
    reclaim: Option<(u64, u64)>,
) -> Option<Observation> {
    let refaults = stat.refaults?;
    let prev = w.faults.replace((refaults, stat.major_faults, now));
    let (before, major_before, at) = prev?;
    if now.saturating_sub(at) > FAULTS_MAX_GAP_NS || refaults < before {
        w.thrashing.interrupt();
        return None;
    }
    Some(Observation {
        from_ns: at,
        to_ns: now,
        working_set_bytes: w.working_set?,
        limit_bytes: w.limit_bytes,
        refaults: refaults - before,
        major_faults: stat
            .major_faults
            .zip(major_before)
            .map(|(m, b)| m.saturating_sub(b)),
        reclaim,
    })
}

/// The last `memory.stat` before the kill when it is at most [`STAT_BEFORE_MAX_NS`] old (a read
/// after the kill sees the victim's memory already freed once it has exited), else the one read
/// after it.
fn chosen_stat(
    before: Option<StatRead>,
    after: Option<StatRead>,
    kill_ns: u64,
) -> Option<StatRead> {
    let recent = before.filter(|s| kill_ns.saturating_sub(s.ktime_ns) <= STAT_BEFORE_MAX_NS);
    recent.or(after).or(before)
}

/// Kernel counter growth summed over a cgroup's subtree: charges by slot (raw units) and
/// (reclaim passes, stall ns).
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    charged: [i64; stat_slot::COUNT],
    reclaim: (u64, u64),
}

impl Acc {
    fn add(&mut self, d: &MemcgStats) {
        for (a, v) in self.charged.iter_mut().zip(d.charged) {
            *a += v;
        }
        self.reclaim.0 += d.reclaims;
        self.reclaim.1 += d.reclaim_ns;
    }

    fn charged_bytes(&self, page_size: u64) -> [i64; stat_slot::COUNT] {
        let mut c = self.charged;
        for (slot, v) in c.iter_mut().enumerate() {
            *v = slot_bytes(slot, *v, page_size);
        }
        c
    }
}

/// Converts a counter of `slot` to bytes (slab is counted in bytes already, the rest in pages).
fn slot_bytes(slot: usize, v: i64, page_size: u64) -> i64 {
    if slot == stat_slot::SLAB {
        v
    } else {
        v.saturating_mul(page_size as i64)
    }
}

/// Whether the cgroup's directory was made at or after `t` (cgroupfs sets a directory's
/// change time when it is made).
fn made_since(w: &Watched, t: std::time::SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(w.files.dir()).is_ok_and(|m| {
        let made = std::time::UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, 0);
        made + Duration::from_secs(1) >= t
    })
}

/// Counter growth from `prev` to `cur`; a counter that went down was recreated (LRU eviction),
/// so all of `cur` is new.
fn delta(prev: Option<&MemcgStats>, cur: &MemcgStats) -> MemcgStats {
    let Some(p) = prev else {
        return *cur;
    };
    if cur.updates < p.updates || cur.reclaims < p.reclaims {
        return *cur;
    }
    let mut d = *cur;
    for (o, pv) in d.charged.iter_mut().zip(p.charged) {
        *o -= pv;
    }
    d.updates -= p.updates;
    d.reclaims -= p.reclaims;
    d.reclaim_ns = cur.reclaim_ns.saturating_sub(p.reclaim_ns);
    d
}

/// `/a/b/c`, `/a/b`, `/a`, `/`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(path);
    std::iter::from_fn(move || {
        let p = cur?;
        cur = match p.rfind('/') {
            Some(0) if p.len() > 1 => Some("/"),
            Some(0) | None => None,
            Some(i) => Some(&p[..i]),
        };
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_stat_before_the_kill_wins_over_one_after() {
        let stat = |anon| MemoryStat {
            anon: Some(anon),
            ..MemoryStat::default()
        };
        let kill = 10_000_000_000;
        // 400 ms before, against 5 ms after (when the victim may have freed its memory).
        let read = |ktime_ns, anon| StatRead {
            ktime_ns,
            stat: stat(anon),
        };
        let v = chosen_stat(
            Some(read(kill - 400_000_000, 50)),
            Some(read(kill + 5_000_000, 0)),
            kill,
        );
        assert_eq!(v, Some(read(kill - 400_000_000, 50)));
        // 3 s before is too old: the read after stands.
        let v = chosen_stat(
            Some(read(kill - 3_000_000_000, 50)),
            Some(read(kill + 107_000_000, 0)),
            kill,
        );
        assert_eq!(v, Some(read(kill + 107_000_000, 0)));
        assert!(chosen_stat(None, None, kill).is_none());
    }

    #[test]
    fn ancestors_walk_up_to_the_root() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn deltas_restart_when_an_entry_was_recreated() {
        let mut a = MemcgStats {
            updates: 10,
            reclaims: 2,
            reclaim_ns: 500,
            ..Default::default()
        };
        a.charged[0] = 100;
        let mut b = a;
        b.updates = 15;
        b.charged[0] = 160;
        b.reclaim_ns = 900;
        let d = delta(Some(&a), &b);
        assert_eq!((d.charged[0], d.updates, d.reclaim_ns), (60, 5, 400));
        let mut fresh = MemcgStats {
            updates: 3,
            ..Default::default()
        };
        fresh.charged[0] = 7;
        assert_eq!(delta(Some(&b), &fresh).charged[0], 7);
    }
}
