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

impl Watched {
    /// Whether this cgroup's usage is sampled at this tick.
    pub(super) fn due(&self, now: u64) -> bool {
        now >= self.next_sample_ns
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
        let sparse = self.limit_bytes > 0
            && (usage as f64) < SPARSE_BELOW_RATIO * limit
            && now.saturating_sub(self.steady_since_ns) >= ns(STEADY_FOR);
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
            if let Some(path) = resolver.path(id) {
                let dir = self.hierarchy.dir(&path);
                self.add_tree(&dir, resolver);
                return;
            }
        }
        self.rescan(resolver);
    }

    /// The end of a tick: every watched cgroup's event counters every [`EVENTS_EVERY`];
    /// otherwise those of the cgroups that reclaimed in this tick or the last one (a charge hit
    /// the limit: `failcnt`, an OOM kill may follow), were sampled at or above
    /// [`STAT_FROM_RATIO`] of their limit now, or whose `memory.events` the kernel notified.
    pub(super) fn count_due_events(&mut self, acc: &HashMap<u64, Acc>, now: u64) {
        let every = if self.sources.reclaim {
            EVENTS_EVERY
        } else {
            RESCAN_EVERY
        };
        if self.last_events.is_none_or(|t| t.elapsed() >= every) {
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
