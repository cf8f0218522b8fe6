//! The pressure monitor: which cgroups to watch (those with a memory limit), a sample a second
//! for each, near-limit detection where the kernel cannot do it, and the `pressure` section of
//! each kill.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use oomtrace_common::{pressure_source, stat_slot, MemcgStats, MemoryPressureRecord};
use serde_json::{json, Map, Value};

use super::{
    timeline::{ns_to_ms, sample_json, Sample, Timeline},
    PressureSettings,
};
use crate::{
    cgroup::{is_under, CgroupResolver, MemoryHierarchy},
    cgroup_memory::{scan_limited, MemoryFiles, MemoryStat},
    event::OomMemcg,
    probes,
    record::c_str,
    tracer::Tracer,
};

/// How often the hierarchy is walked again for new or removed limited cgroups.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// Which sources feed the timelines on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// memcg stat tracepoints (charge deltas, in-kernel near-limit detection).
    pub memcg_stat: bool,
    /// memcg reclaim tracepoints (reclaim passes and stalls).
    pub reclaim: bool,
}

impl Sources {
    pub fn of(tracer: &Tracer) -> Self {
        Self {
            memcg_stat: tracer.probe_attached(probes::MEMCG_LRUVEC_STAT.name),
            reclaim: tracer.probe_attached(probes::RECLAIM_END.name)
                && tracer.probe_attached(probes::RECLAIM_BEGIN.name),
        }
    }

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

/// A cgroup at or above the near-limit threshold, before enrichment.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub usage_bytes: u64,
    pub limit_bytes: u64,
    pub threshold: f64,
    /// `kernel_stat`, `kernel_reclaim` or `cgroup_files`.
    pub source: &'static str,
    /// The thread whose charge or reclaim saw it (kernel sources).
    pub task: Option<(u32, String)>,
    pub growth_bytes_per_s: Option<f64>,
    /// Reclaim passes and stall ns over the last minute.
    pub reclaim: Option<(u64, u64)>,
}

impl Reading {
    pub fn ratio(&self) -> f64 {
        if self.limit_bytes == 0 {
            0.0
        } else {
            self.usage_bytes as f64 / self.limit_bytes as f64
        }
    }
}

struct Watched {
    path: String,
    files: MemoryFiles,
    limit_bytes: u64,
    timeline: Timeline,
    /// The last `memory.stat` read (ktime ns), taken every second while usage is at least
    /// [`STAT_FROM_RATIO`] of the limit: the breakdown before a kill, which a read after it can
    /// no longer see once the OOM reaper has freed the victim's memory.
    last_stat: Option<(u64, MemoryStat)>,
}

/// How old a `memory.stat` read before a kill may be and still stand for it.
pub const STAT_BEFORE_MAX_NS: u64 = 2_000_000_000;

/// Usage / limit from which a cgroup's `memory.stat` is read every second.
pub const STAT_FROM_RATIO: f64 = 0.5;

/// Per-cgroup timelines and near-limit detection.
pub struct PressureMonitor {
    settings: PressureSettings,
    sources: Sources,
    page_size: u64,
    hierarchy: MemoryHierarchy,
    resolver: CgroupResolver,
    watched: HashMap<u64, Watched>,
    by_path: HashMap<String, u64>,
    last_scan: Option<Instant>,
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
            resolver: CgroupResolver::new(hierarchy.clone()),
            hierarchy,
            watched: HashMap::new(),
            by_path: HashMap::new(),
            last_scan: None,
            kernel_last: HashMap::new(),
            last_reading: HashMap::new(),
            reclaim_total: (0, 0),
            events_last: HashMap::new(),
            events_total: Default::default(),
            started: std::time::SystemTime::now(),
            now: crate::timefmt::monotonic_now_ns,
        }
    }

    /// The same monitor reading time from `now` instead of `CLOCK_MONOTONIC`, for tests whose
    /// samples and `memory.stat` reads must have fixed times.
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: fn() -> u64) -> Self {
        self.now = now;
        self
    }

    /// The monitor for a started tracer; `None` with `--no-pressure` or without a memory
    /// hierarchy (said once in the log).
    pub fn for_tracer(tracer: &Tracer, settings: Option<PressureSettings>) -> Option<Self> {
        let settings = settings?;
        match MemoryHierarchy::detect() {
            Ok(h) => {
                let sources = Sources::of(tracer);
                log::info!("pressure sources: {}", sources.names().join(", "));
                Some(Self::new(settings, sources, h, tracer.layout.page_shift))
            }
            Err(e) => {
                log::warn!("{e}; no memory-pressure timelines");
                None
            }
        }
    }

    /// Paths read in the kernel (they stay valid after the cgroup is removed).
    pub fn learn_paths(&mut self, paths: &[(u64, String)]) {
        self.resolver.learn(paths.iter().cloned());
    }

    fn rescan(&mut self) {
        self.resolver.rescan();
        let found = scan_limited(&self.hierarchy, self.settings.max_cgroups);
        let mut keep = HashMap::with_capacity(found.len());
        for c in found {
            let w = self.watched.remove(&c.id).unwrap_or_else(|| Watched {
                path: c.path.clone(),
                files: MemoryFiles::new(c.dir.clone(), self.hierarchy.version),
                limit_bytes: c.limit_bytes,
                timeline: Timeline::default(),
                last_stat: None,
            });
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
        self.count_events();
        self.last_scan = Some(Instant::now());
    }

    /// Adds the increase of each watched cgroup's own memory event counters to the totals. A
    /// cgroup seen for the first time counts from zero when it was made after the monitor
    /// started, else it only sets its baseline (its past is not ours to count).
    fn count_events(&mut self) {
        let mut now = HashMap::with_capacity(self.watched.len());
        let empty = HashMap::new();
        for (id, w) in &self.watched {
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
            now.insert(*id, counters);
        }
        self.events_last = now;
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
    pub fn tick(&mut self, kernel: &[(u64, MemcgStats)]) -> Vec<Reading> {
        if self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY) {
            self.rescan();
        }
        let now = (self.now)();
        let mut acc: HashMap<u64, Acc> = HashMap::new();
        let mut seen = HashMap::with_capacity(kernel.len());
        for (id, cur) in kernel {
            let d = delta(self.kernel_last.get(id), cur);
            seen.insert(*id, *cur);
            self.reclaim_total.0 += d.reclaims;
            self.reclaim_total.1 += d.reclaim_ns;
            let Some(path) = self.resolver.known(*id) else {
                continue;
            };
            for anc in ancestors(path) {
                if let Some(w) = self.by_path.get(anc) {
                    acc.entry(*w).or_default().add(&d);
                }
            }
        }
        self.kernel_last = seen;

        let interval = self.settings.interval_ns();
        let mut readings = Vec::new();
        let mut gone = Vec::new();
        for (id, w) in self.watched.iter_mut() {
            let usage = match w.files.usage_bytes() {
                Ok(u) => u,
                Err(_) => {
                    gone.push(*id);
                    continue;
                }
            };
            let a = acc.get(id).copied().unwrap_or_default();
            if usage as f64 >= STAT_FROM_RATIO * w.limit_bytes as f64 {
                w.last_stat = w.files.stat().ok().map(|s| (now, s));
            }
            w.timeline.push(Sample {
                ktime_ns: now,
                usage_bytes: usage,
                charged: self
                    .sources
                    .memcg_stat
                    .then(|| a.charged_bytes(self.page_size)),
                reclaim: self.sources.reclaim.then_some(a.reclaim),
            });
            if self.sources.memcg_stat || w.limit_bytes == 0 {
                continue;
            }
            if (usage as f64) < self.settings.threshold * w.limit_bytes as f64 {
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
            readings.push(Reading {
                ktime_ns: now,
                cgroup_id: *id,
                path: Some(w.path.clone()),
                usage_bytes: usage,
                limit_bytes: w.limit_bytes,
                threshold: self.settings.threshold,
                source: "cgroup_files",
                task: None,
                growth_bytes_per_s: w.timeline.growth_bytes_per_s(now, usage),
                reclaim: w.timeline.reclaim_totals(now),
            });
        }
        for id in gone {
            if let Some(w) = self.watched.remove(&id) {
                self.by_path.remove(&w.path);
            }
        }
        readings
    }

    /// A near-limit record from the kernel, with the figures of its cgroup's timeline.
    pub fn kernel_reading(&mut self, r: &MemoryPressureRecord) -> Reading {
        // A cgroup new since the last walk: walk now, so its timeline (and the `memory.stat`
        // reads a kill will want) start at once rather than up to 2 s later.
        if !self.watched.contains_key(&r.cgroup_id) {
            self.rescan();
        }
        // The 1 s samples (which look where the kernel cannot) stay quiet for this cgroup too.
        self.last_reading.insert(r.cgroup_id, r.ktime_ns);
        let usage = r.usage_pages.saturating_mul(self.page_size);
        let path = self.resolver.path(r.cgroup_id);
        let w = self.watched.get(&r.cgroup_id);
        Reading {
            ktime_ns: r.ktime_ns,
            cgroup_id: r.cgroup_id,
            path,
            usage_bytes: usage,
            limit_bytes: r.limit_pages.saturating_mul(self.page_size),
            threshold: f64::from(r.threshold_per_10k) / 10_000.0,
            source: if r.source == pressure_source::RECLAIM {
                "kernel_reclaim"
            } else {
                "kernel_stat"
            },
            task: Some((r.pid, c_str(&r.comm))),
            growth_bytes_per_s: w.and_then(|w| w.timeline.growth_bytes_per_s(r.ktime_ns, usage)),
            reclaim: w.and_then(|w| w.timeline.reclaim_totals(r.ktime_ns)),
        }
    }

    /// The `pressure` section of a kill whose limit was hit in `oom` (with the kernel's usage
    /// and limit at the kill). `kernel` (the counters read now) gives the kill
    /// point what happened since the last sample: the charges and reclaim right before the kill.
    pub fn kill_section(
        &mut self,
        oom: &OomMemcg,
        kill_ns: u64,
        kernel: &[(u64, MemcgStats)],
    ) -> Value {
        let (id, path) = (oom.cgroup.id, oom.cgroup.path.as_deref());
        let (usage_bytes, limit_bytes) = (oom.usage_bytes, oom.limit_bytes);
        let mut last = Acc::default();
        if let Some(p) = path {
            for (kid, cur) in kernel {
                if self.resolver.known(*kid).is_some_and(|kp| is_under(kp, p)) {
                    last.add(&delta(self.kernel_last.get(kid), cur));
                }
            }
        }
        let mut m = Map::new();
        m.insert("sources".into(), json!(self.sources.names()));
        m.insert("interval_ms".into(), json!(1000));
        m.insert("usage_bytes".into(), usage_bytes.into());
        m.insert("limit_bytes".into(), limit_bytes.into());
        let w = self.watched.get(&id);
        let mut timeline = w.map(|w| w.timeline.to_json(kill_ns)).unwrap_or_default();
        // The kill itself: the kernel's page counter at that moment, and the charges and
        // reclaim since the last sample.
        let kill_point = Sample {
            ktime_ns: kill_ns,
            usage_bytes,
            charged: self
                .sources
                .memcg_stat
                .then(|| last.charged_bytes(self.page_size)),
            reclaim: self.sources.reclaim.then_some(last.reclaim),
        };
        timeline.push(sample_json(&kill_point, kill_ns));
        if let Some(g) = w.and_then(|w| w.timeline.growth_bytes_per_s(kill_ns, usage_bytes)) {
            m.insert("growth_bytes_per_s".into(), json!(g.round() as i64));
        }
        if self.sources.reclaim {
            let (n, ns) = w
                .and_then(|w| w.timeline.reclaim_totals(kill_ns))
                .unwrap_or_default();
            let (n, ns) = (n + last.reclaim.0, ns + last.reclaim.1);
            m.insert(
                "reclaim".into(),
                json!({ "count": n, "stall_ms": ns_to_ms(ns) }),
            );
        }
        let files = w.map(|w| w.files.clone()).or_else(|| {
            path.map(|p| MemoryFiles::new(self.hierarchy.dir(p), self.hierarchy.version))
        });
        let before = w.and_then(|w| w.last_stat).filter(|(t, _)| *t <= kill_ns);
        if let Some(files) = files {
            let after = files.stat().ok().map(|s| ((self.now)(), s));
            if let Some(stat) = chosen_stat(before, after, kill_ns) {
                m.insert("stat".into(), stat);
            }
            if let Ok(events) = files.events() {
                m.insert("events".into(), events.to_json());
            }
            if let Ok(Some(psi)) = files.psi() {
                m.insert("psi".into(), psi.to_json());
            }
        }
        m.insert("timeline".into(), Value::Array(timeline));
        Value::Object(m)
    }

    /// Usage/limit of each watched cgroup as of its last sample, with its path: what the agent
    /// exports.
    pub fn usage_ratios(&self) -> impl Iterator<Item = (&str, f64)> {
        self.watched.values().filter_map(|w| {
            let s = w.timeline.last()?;
            (w.limit_bytes > 0)
                .then(|| (w.path.as_str(), s.usage_bytes as f64 / w.limit_bytes as f64))
        })
    }
}

/// The last `memory.stat` before the kill when it is at most [`STAT_BEFORE_MAX_NS`] old (a read
/// after the kill sees the victim's memory already freed once it has exited), else the one read
/// after it; with `offset_ms` (negative: before the kill) and `age_ms` (its distance from it).
fn chosen_stat(
    before: Option<(u64, MemoryStat)>,
    after: Option<(u64, MemoryStat)>,
    kill_ns: u64,
) -> Option<Value> {
    let recent = before.filter(|(t, _)| kill_ns.saturating_sub(*t) <= STAT_BEFORE_MAX_NS);
    let (t, stat) = recent.or(after).or(before)?;
    let mut out = match stat.to_json() {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let offset_ms = (t as i128 - kill_ns as i128) as f64 / 1e6;
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    out.insert("offset_ms".into(), json!(round(offset_ms)));
    out.insert("age_ms".into(), json!(round(offset_ms.abs())));
    Some(Value::Object(out))
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
        let v = chosen_stat(
            Some((kill - 400_000_000, stat(50))),
            Some((kill + 5_000_000, stat(0))),
            kill,
        )
        .expect("a stat");
        assert_eq!(v["anon_bytes"], 50);
        assert_eq!(v["offset_ms"], -400.0);
        assert_eq!(v["age_ms"], 400.0);
        // 3 s before is too old: the read after stands.
        let v = chosen_stat(
            Some((kill - 3_000_000_000, stat(50))),
            Some((kill + 107_000_000, stat(0))),
            kill,
        )
        .expect("a stat");
        assert_eq!(v["anon_bytes"], 0);
        assert_eq!(v["offset_ms"], 107.0);
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
