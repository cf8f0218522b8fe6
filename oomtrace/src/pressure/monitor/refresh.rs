//! Keeping the set of watched cgroups current without walking the tree every tick: inotify's
//! changes (mkdir, rmdir, limit writes) applied one cgroup at a time, a full walk as a safety
//! net (every [`FULL_RESCAN_EVERY`], or every [`RESCAN_EVERY`] when inotify cannot cover the
//! tree), which cgroups are sampled this tick, and whose event counters are read.
use std::{
    collections::HashMap,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use super::{
    Acc, PressureMonitor, Watched, EVENTS_EVERY, FULL_RESCAN_EVERY, RESCAN_EVERY,
    SPARSE_BELOW_RATIO, SPARSE_EVERY, STAT_FROM_RATIO, STEADY_FOR, STEADY_WITHIN_RATIO,
};
use crate::{
    cgroup::{
        id_of,
        memory::{limit_file, scan_limited, scan_limited_visiting, LimitedCgroup, MemoryFiles},
        watch::{Change, WatchError},
        CgroupResolver, CgroupVersion,
    },
    pressure::SAMPLE_EVERY,
};

/// Logs the first directory inotify could not watch, once per process.
fn warn_unwatched(e: &WatchError) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!("{e}; the cgroup tree is walked every {RESCAN_EVERY:?} instead");
    }
}

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Acc {
    /// No charge and no reclaim in the tick.
    fn is_quiet(&self) -> bool {
        self.reclaim.0 == 0 && self.charged.iter().all(|c| *c == 0)
    }
}

impl Watched {
    /// Whether this cgroup's usage is sampled at this tick: when its next sample is due, or
    /// when the kernel counted charges or reclaim in it (or under it) since the last tick (so
    /// no sample's charge and reclaim figures leave out a skipped tick's).
    pub(super) fn due(&self, now: u64, kernel: Option<&Acc>) -> bool {
        now >= self.next_sample_ns || kernel.is_some_and(|a| !a.is_quiet())
    }

    /// 0 to 4 from the path: how many ticks beyond [`STEADY_FOR`] this cgroup waits before
    /// it is sampled sparsely.
    fn phase(&self) -> u64 {
        let h = self
            .path
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        h % (SPARSE_EVERY.as_secs() / SAMPLE_EVERY.as_secs()).max(1)
    }

    /// After a sample of `usage` at `now` (before it joins the timeline): when the next is due.
    /// Every tick, except for a cgroup below [`SPARSE_BELOW_RATIO`] of its limit whose usage has
    /// stayed steady for [`STEADY_FOR`]: every [`SPARSE_EVERY`] (a jump shows at the next
    /// sample, and the kernel's reclaim and near-limit records do not wait for samples).
    pub(super) fn schedule(&mut self, now: u64, usage: u64) {
        let limit = self.limit_bytes as f64;
        let moved = self.timeline.last().is_none_or(|s| {
            (usage as f64 - s.usage_bytes as f64).abs() > STEADY_WITHIN_RATIO * limit
        });
        if moved {
            self.steady_since_ns = now;
        }
        // Cgroups made together (and steady together) start sparse sampling on different ticks,
        // a fifth of them each: no tick samples all of them.
        let sparse = self.limit_bytes > 0
            && (usage as f64) < SPARSE_BELOW_RATIO * limit
            && now.saturating_sub(self.steady_since_ns)
                >= ns(STEADY_FOR) + self.phase() * ns(SAMPLE_EVERY);
        let every = if sparse { SPARSE_EVERY } else { SAMPLE_EVERY };
        // Half a tick early: the tick that comes `every` later finds it due despite jitter.
        self.next_sample_ns = now.saturating_add(ns(every) - ns(SAMPLE_EVERY) / 2);
    }
}

impl PressureMonitor {
    /// The start of a tick: a full walk when due, else the changes inotify reported.
    pub(super) fn refresh(&mut self, resolver: &mut CgroupResolver) {
        let every = if self.watch.as_ref().is_some_and(|w| w.is_complete()) {
            FULL_RESCAN_EVERY
        } else {
            RESCAN_EVERY
        };
        if self.last_scan.is_none_or(|t| t.elapsed() >= every) {
            self.rescan(resolver);
            return;
        }
        self.apply_changes(resolver);
    }

    /// The changes inotify reported since the last call, applied (a walk after lost events).
    fn apply_changes(&mut self, resolver: &mut CgroupResolver) {
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        let changes = watch.changes();
        if changes.contains(&Change::Rewalk) {
            self.rescan(resolver);
            return;
        }
        let limit_name = limit_file(self.hierarchy.version);
        for change in changes {
            match change {
                Change::Made(dir) => self.add_tree(&dir, resolver),
                Change::Removed(dir) => self.forget_dir(&dir),
                Change::Modified(dir, name) if name == limit_name => {
                    if let (Ok(id), Some(path)) = (id_of(&dir), self.hierarchy.relative(&dir)) {
                        self.limit_seen(id, path, &dir);
                    }
                }
                // cgroup v2: the kernel notifies memory.events when a counter moves.
                Change::Modified(dir, name)
                    if name == "memory.events" && self.hierarchy.version == CgroupVersion::V2 =>
                {
                    let id = self
                        .hierarchy
                        .relative(&dir)
                        .and_then(|p| self.by_path.get(&p).copied());
                    if let Some(id) = id {
                        self.events_due.insert(id);
                    }
                }
                Change::Modified(..) | Change::Rewalk => {}
            }
        }
    }

    /// The limited cgroups of a full walk, with an inotify watch added on every directory.
    pub(super) fn walk(&mut self) -> Vec<LimitedCgroup> {
        let max = self.settings.max_cgroups;
        let Some(watch) = self.watch.as_mut() else {
            return scan_limited(&self.hierarchy, max);
        };
        watch.set_complete();
        let mut failed = None;
        let found = scan_limited_visiting(&self.hierarchy, max, |dir| {
            if let Err(e) = watch.add(dir) {
                failed.get_or_insert(e);
            }
        });
        if let Some(e) = failed {
            warn_unwatched(&e);
        }
        found
    }

    /// A directory made since the last walk: watch it and what is under it, tell the resolver
    /// their paths, and watch those with a limit.
    pub(super) fn add_tree(&mut self, dir: &Path, resolver: &mut CgroupResolver) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Some(path) = self.hierarchy.relative(&d) else {
                continue;
            };
            if path.split('/').filter(|c| !c.is_empty()).count()
                > crate::cgroup::memory::MAX_SCAN_DEPTH
            {
                continue;
            }
            // Watched before it is listed: a child made meanwhile is reported or listed.
            if let Some(Err(e)) = self.watch.as_mut().map(|w| w.add(&d)) {
                warn_unwatched(&e);
            }
            let Ok(id) = id_of(&d) else {
                continue;
            };
            resolver.learn([(id, path.clone())]);
            self.limit_seen(id, path, &d);
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }

    /// Reads cgroup `id`'s limit: watched with it (sampled at this tick), or forgotten when it
    /// has none (or is gone).
    fn limit_seen(&mut self, id: u64, path: String, dir: &Path) {
        let limit = MemoryFiles::new(dir, self.hierarchy.version)
            .limit_bytes()
            .ok()
            .flatten();
        let room = self.watched.len() < self.settings.max_cgroups;
        match (limit, self.watched.get_mut(&id)) {
            (Some(limit), Some(w)) => {
                w.limit_bytes = limit;
                w.next_sample_ns = 0;
            }
            (Some(limit), None) if room => {
                let w = self.new_watched(path.clone(), dir.to_path_buf(), limit);
                self.watched.insert(id, w);
                self.by_path.insert(path, id);
                // Its baseline (or, made since start, its counts from zero).
                self.count_events_of(&[id]);
            }
            (Some(_), None) => {}
            (None, _) => self.forget(id),
        }
    }

    /// A removed directory: its cgroup is no longer watched.
    fn forget_dir(&mut self, dir: &Path) {
        let id = self
            .hierarchy
            .relative(dir)
            .and_then(|p| self.by_path.get(&p).copied());
        if let Some(id) = id {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(w) = self.watched.remove(&id) {
            self.by_path.remove(&w.path);
        }
        self.last_reading.remove(&id);
        self.events_last.remove(&id);
        self.events_due.remove(&id);
    }

    /// A cgroup a kernel record names that is not watched: with inotify covering the tree, that
    /// cgroup alone is looked at; otherwise the tree is walked.
    pub(super) fn watch_now(&mut self, id: u64, resolver: &mut CgroupResolver) {
        if self.watch.as_ref().is_some_and(|w| w.is_complete()) {
            // Most likely made since the last tick: inotify has told, and the resolver then
            // knows its path without walking.
            self.apply_changes(resolver);
            if self.watched.contains_key(&id) {
                return;
            }
            if let Some(path) = resolver.path(id) {
                let dir = self.hierarchy.dir(&path);
                self.add_tree(&dir, resolver);
                return;
            }
        }
        self.rescan(resolver);
    }

    /// The end of a tick: without the reclaim tracepoints, every watched cgroup's event
    /// counters every [`EVENTS_EVERY`]; with them (and between full walks, which read all),
    /// those of the cgroups that reclaimed in this tick or the last one (a charge hit the
    /// limit: `failcnt`, an OOM kill may follow), were sampled at or above [`STAT_FROM_RATIO`]
    /// of their limit now, or whose `memory.events` the kernel notified.
    pub(super) fn count_due_events(&mut self, acc: &HashMap<u64, Acc>, now: u64) {
        if !self.sources.reclaim && self.last_events.is_none_or(|t| t.elapsed() >= EVENTS_EVERY) {
            self.count_events();
            return;
        }
        let reclaimed: Vec<u64> = acc
            .iter()
            .filter(|(id, a)| a.reclaim.0 > 0 && self.watched.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        let mut due = std::mem::take(&mut self.events_due);
        due.extend(reclaimed.iter().copied());
        due.extend(self.watched.iter().filter_map(|(id, w)| {
            let s = w.timeline.last()?;
            (w.limit_bytes > 0
                && s.ktime_ns == now
                && s.usage_bytes as f64 >= STAT_FROM_RATIO * w.limit_bytes as f64)
                .then_some(*id)
        }));
        let due: Vec<u64> = due.into_iter().collect();
        self.count_events_of(&due);
        // Read again at the next tick: the kill may come after this read.
        self.events_due.extend(reclaimed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cgroup::{memory::UsageFile, MemoryHierarchy},
        pressure::{monitor::Sources, PressureSettings, StatHooksMode},
    };
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn settings() -> PressureSettings {
        PressureSettings {
            threshold: 0.9,
            interval: Duration::from_secs(30),
            max_cgroups: 100_000,
            stat_hooks: StatHooksMode::Never,
            hooks_threshold: 0.75,
            hooks_quiet: Duration::from_secs(60),
        }
    }

    /// Removes a cgroup directory on drop, also when the test fails.
    struct RemoveCgroup(std::path::PathBuf);

    impl Drop for RemoveCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn skip(why: &str) {
        assert!(
            std::env::var_os("OOMTRACE_TEST_NO_SKIP").is_none_or(|v| v.is_empty()),
            "cannot run here ({why}), and OOMTRACE_TEST_NO_SKIP forbids skipping"
        );
        eprintln!("skipped: {why}");
    }

    /// A cgroup made after the first walk is watched at the next tick (without another walk),
    /// a limit set or changed later is seen at the tick after the write, and a removed cgroup
    /// is forgotten at the tick after the rmdir: against the host's real memory hierarchy.
    #[test]
    fn mkdir_limit_writes_and_rmdir_are_seen_at_the_next_tick() {
        if !crate::capture::tracer::is_root() {
            return skip("needs root to create memory cgroups");
        }
        let h = match MemoryHierarchy::detect() {
            Ok(h) => h,
            Err(e) => return skip(&e.to_string()),
        };
        if h.version == CgroupVersion::V2 {
            let _ = std::fs::write(h.root.join("cgroup.subtree_control"), "+memory");
        }
        let limit_name = limit_file(h.version);
        let mut res = CgroupResolver::new(h.clone());
        let mut m = PressureMonitor::new(
            settings(),
            Sources {
                memcg_stat: false,
                reclaim: false,
            },
            h.clone(),
            12,
        );
        if m.watch.is_none() {
            return skip("no inotify");
        }
        m.tick(&[], &mut res);
        let walked = m.last_scan;
        assert!(walked.is_some());
        assert!(m.watch.as_ref().is_some_and(|w| w.is_complete()));

        let name = format!("oomtrace-refresh-test-{}", std::process::id());
        let dir = h.root.join(&name);
        std::fs::create_dir(&dir).expect("mkdir");
        let _rm = RemoveCgroup(dir.clone());
        let id = id_of(&dir).expect("id");
        let path = format!("/{name}");
        std::fs::write(dir.join(limit_name), (32 * MIB).to_string()).expect("limit");
        // A child made at once, before the monitor could watch its parent.
        let child = dir.join("child");
        std::fs::create_dir(&child).expect("mkdir child");
        let _rm_child = RemoveCgroup(child.clone());
        std::fs::write(child.join(limit_name), (16 * MIB).to_string()).expect("limit");
        let child_id = id_of(&child).expect("id");

        m.tick(&[], &mut res);
        assert_eq!(m.last_scan, walked, "no walk: inotify told");
        let usage = MemoryFiles::new(&dir, h.version)
            .usage_bytes()
            .expect("usage");
        let w = m.watched.get(&id).expect("watched at the next tick");
        assert_eq!((w.path.as_str(), w.limit_bytes), (path.as_str(), 32 * MIB));
        let s = w.timeline.last().expect("sampled at that tick");
        assert_eq!(s.usage_bytes, usage);
        assert_eq!(m.by_path.get(&path), Some(&id));
        assert_eq!(res.known(id), Some(path.as_str()));
        assert_eq!(
            m.watched.get(&child_id).map(|w| w.limit_bytes),
            Some(16 * MIB)
        );

        // A limit changed.
        std::fs::write(dir.join(limit_name), (48 * MIB).to_string()).expect("limit");
        m.tick(&[], &mut res);
        assert_eq!(m.watched.get(&id).map(|w| w.limit_bytes), Some(48 * MIB));

        // The limit lifted: no longer watched; set again: watched again.
        let none = match h.version {
            CgroupVersion::V1 => "-1",
            CgroupVersion::V2 => "max",
        };
        std::fs::write(child.join(limit_name), none).expect("no limit");
        m.tick(&[], &mut res);
        assert!(!m.watched.contains_key(&child_id));
        std::fs::write(child.join(limit_name), (8 * MIB).to_string()).expect("limit");
        m.tick(&[], &mut res);
        assert_eq!(
            m.watched.get(&child_id).map(|w| w.limit_bytes),
            Some(8 * MIB)
        );

        // Removed: forgotten.
        std::fs::remove_dir(&child).expect("rmdir child");
        std::fs::remove_dir(&dir).expect("rmdir");
        m.tick(&[], &mut res);
        assert!(!m.watched.contains_key(&id));
        assert!(!m.watched.contains_key(&child_id));
        assert_eq!(m.by_path.get(&path), None);
        assert_eq!(m.last_scan, walked, "still no walk");
    }

    /// An unwatched cgroup named by a kernel record is watched at once, without a walk.
    #[test]
    fn a_kernel_record_watches_its_cgroup_at_once() {
        if !crate::capture::tracer::is_root() {
            return skip("needs root to create memory cgroups");
        }
        let h = match MemoryHierarchy::detect() {
            Ok(h) => h,
            Err(e) => return skip(&e.to_string()),
        };
        let mut res = CgroupResolver::new(h.clone());
        let mut m = PressureMonitor::new(
            settings(),
            Sources {
                memcg_stat: true,
                reclaim: true,
            },
            h.clone(),
            12,
        );
        if m.watch.is_none() {
            return skip("no inotify");
        }
        m.tick(&[], &mut res);
        let walked = m.last_scan;
        let name = format!("oomtrace-refresh-record-{}", std::process::id());
        let dir = h.root.join(&name);
        std::fs::create_dir(&dir).expect("mkdir");
        let _rm = RemoveCgroup(dir.clone());
        std::fs::write(dir.join(limit_file(h.version)), (16 * MIB).to_string()).expect("limit");
        let id = id_of(&dir).expect("id");
        m.watch_now(id, &mut res);
        assert_eq!(m.watched.get(&id).map(|w| w.limit_bytes), Some(16 * MIB));
        assert_eq!(m.last_scan, walked, "no walk");
    }

    /// A watched cgroup like `w`, with no samples and nothing open.
    fn w_like(w: &Watched) -> Watched {
        Watched {
            path: w.path.clone(),
            usage: UsageFile::new(&w.files),
            files: w.files.clone(),
            next_sample_ns: 0,
            steady_since_ns: 0,
            limit_bytes: w.limit_bytes,
            timeline: Default::default(),
            last_stat: None,
            kernel_ids: Vec::new(),
            working_set: None,
            working_set_read_ns: None,
            faults: None,
            thrashing: Default::default(),
        }
    }

    #[test]
    fn steady_small_cgroups_are_sampled_every_5_s() {
        let files = MemoryFiles::new("/nonexistent", CgroupVersion::V1);
        let mut w = Watched {
            path: "/x".into(),
            usage: UsageFile::new(&files),
            files,
            next_sample_ns: 0,
            steady_since_ns: 0,
            limit_bytes: 100 * MIB,
            timeline: Default::default(),
            last_stat: None,
            kernel_ids: Vec::new(),
            working_set: None,
            working_set_read_ns: None,
            faults: None,
            thrashing: Default::default(),
        };
        let s = 1_000_000_000u64;
        let mut sampled = Vec::new();
        // Phases spread over 0..5.
        let phases: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| {
                let mut c = Watched {
                    path: format!("/bench-idle-{i}"),
                    ..w_like(&w)
                };
                c.steady_since_ns = 0;
                c.phase()
            })
            .collect();
        assert_eq!(phases.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        // 30 ticks at 1 MiB (1% of the limit): steady from the first.
        for t in 0..30 {
            let now = t * s;
            if w.due(now, None) {
                w.schedule(now, MIB);
                w.timeline.push(crate::pressure::timeline::Sample {
                    ktime_ns: now,
                    usage_bytes: MIB,
                    working_set_bytes: None,
                    charged: None,
                    reclaim: None,
                });
                sampled.push(t);
            }
        }
        // Every second for 10 s and the path's phase, then every 5 s.
        let phase = w.phase();
        assert!(phase < 5);
        let sparse_from = 10 + phase;
        let want: Vec<u64> = (0..=sparse_from)
            .chain((sparse_from + 5..30).step_by(5))
            .collect();
        assert_eq!(sampled, want);
        // Between sparse samples, a tick where the kernel saw reclaim (or charges) samples it.
        let between = sampled.last().copied().unwrap_or(0) + 1;
        assert!(!w.due(between * s, None));
        assert!(!w.due(between * s, Some(&Acc::default())));
        let reclaimed = Acc {
            reclaim: (1, 1000),
            ..Acc::default()
        };
        assert!(w.due(between * s, Some(&reclaimed)));
        // A move of more than 1% of the limit: every second again, for 10 s.
        let now = (between + 4) * s;
        assert!(w.due(now, None));
        w.schedule(now, 3 * MIB);
        assert!(w.due(now + s, None));
        // At a quarter of the limit or above: every second however steady.
        w.timeline.push(crate::pressure::timeline::Sample {
            ktime_ns: 40 * s,
            usage_bytes: 30 * MIB,
            working_set_bytes: None,
            charged: None,
            reclaim: None,
        });
        w.steady_since_ns = 0;
        w.schedule(60 * s, 30 * MIB);
        assert_eq!(w.steady_since_ns, 0, "steady for 60 s");
        assert!(w.due(61 * s, None));
    }
}
