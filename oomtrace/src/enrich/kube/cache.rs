//! The pods of this node, by UID and by container id, shared between the watcher task (which
//! writes) and the agent (which reads, synchronously).
//!
//! A deleted pod stays for a grace period so that an OOM record read late (the kill that made
//! the pod fail, a burst drained after the pod was gone) still gets its names. Container ids
//! accumulate per pod (up to [`MAX_IDS_PER_POD`]): after a restart the status names the new
//! container, but the record names the killed one. The cache holds at most `max_entries` pods:
//! past that it forgets the oldest deleted pod first, then the least recently updated one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::pod::{strip_runtime_prefix, ParsedPod, PodMeta};

/// Container ids remembered per pod (current and previous instances).
pub const MAX_IDS_PER_POD: usize = 64;

/// Counters of the watcher's work, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Complete lists (initial, and each relist after `410 Gone`).
    pub lists: u64,
    /// Watch events applied (ADDED, MODIFIED, DELETED). Bookmarks only move kube's watcher's
    /// resume point: it does not hand them over, so they are not counted.
    pub events: u64,
    /// Watch lines or pods that could not be understood, skipped.
    pub malformed: u64,
    /// Failed list or watch requests (connection, TLS, HTTP status, protocol).
    pub failures: u64,
    /// Pods forgotten early because the cache was full.
    pub evicted: u64,
}

/// A handle on the shared cache; clones share it.
#[derive(Debug, Clone)]
pub struct PodCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    grace: Duration,
    max_entries: usize,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Entry>,
    /// Container id → (pod UID, container name).
    by_id: HashMap<String, (String, String)>,
    /// Deletion times in order; an item is stale when its pod's `deleted_at` differs.
    deleted: VecDeque<(Instant, String)>,
    synced: bool,
    stats: WatchStats,
    /// Increases with every update; orders live pods for eviction.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    meta: PodMeta,
    ids: VecDeque<String>,
    deleted_at: Option<Instant>,
    updated: u64,
}

impl PodCache {
    /// An empty cache keeping deleted pods for `grace` and at most `max_entries` pods
    /// (at least 1).
    pub fn new(grace: Duration, max_entries: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                grace,
                max_entries: max_entries.max(1),
            }),
        }
    }

    /// The pod with this UID, live or deleted within the grace period.
    pub fn by_uid(&self, uid: &str) -> Option<PodMeta> {
        let s = self.lock_purged(Instant::now());
        s.pods.get(uid).map(|e| e.meta.clone())
    }

    /// The pod one of whose containers has this id (with or without a `<runtime>://` prefix),
    /// current or a previous instance of a restarted container.
    pub fn by_container_id(&self, id: &str) -> Option<PodMeta> {
        self.container_by_id(id).map(|(meta, _)| meta)
    }

    /// Like [`Self::by_container_id`], with the container's name.
    pub fn container_by_id(&self, id: &str) -> Option<(PodMeta, String)> {
        let id = strip_runtime_prefix(id)?;
        let s = self.lock_purged(Instant::now());
        let (uid, name) = s.by_id.get(&id)?;
        let meta = s.pods.get(uid)?.meta.clone();
        Some((meta, name.clone()))
    }

    /// Pods held, live and deleted within the grace period.
    pub fn len(&self) -> usize {
        self.lock_purged(Instant::now()).pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once a first complete list has been applied.
    pub fn is_synced(&self) -> bool {
        self.lock().synced
    }

    pub fn stats(&self) -> WatchStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent-enough maps: keep going.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_purged(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut s = self.lock();
        s.purge(now, self.shared.grace);
        s
    }

    pub(crate) fn update_stats(&self, f: impl FnOnce(&mut WatchStats)) {
        f(&mut self.lock().stats);
    }

    /// A pod was added or changed (it is live).
    pub(crate) fn upsert(&self, pod: ParsedPod, now: Instant) {
        let mut s = self.lock_purged(now);
        s.upsert(pod, self.shared.max_entries);
    }

    /// A pod was deleted; `last` is its final state when known.
    pub(crate) fn delete(&self, uid: &str, last: Option<ParsedPod>, now: Instant) {
        let mut s = self.lock_purged(now);
        if let Some(pod) = last {
            s.upsert(pod, self.shared.max_entries);
        }
        s.mark_deleted(uid, now);
    }

    /// A complete list: these are the live pods; any other live pod was deleted meanwhile.
    pub(crate) fn replace_all(&self, pods: Vec<ParsedPod>, now: Instant) {
        let mut s = self.lock_purged(now);
        let mut seen = HashSet::with_capacity(pods.len());
        for pod in pods {
            seen.insert(pod.meta.uid.clone());
            s.upsert(pod, self.shared.max_entries);
        }
        let gone: Vec<String> = s
            .pods
            .iter()
            .filter(|(uid, e)| e.deleted_at.is_none() && !seen.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            s.mark_deleted(&uid, now);
        }
        s.synced = true;
        s.stats.lists += 1;
    }

    /// Adds a Pod object (API JSON) as the watch would, for tests outside this module.
    #[cfg(test)]
    pub(crate) fn upsert_pod_json(&self, pod: &serde_json::Value) -> bool {
        let Ok(pod) = serde_json::from_value::<super::slim::SlimPod>(pod.clone()) else {
            return false;
        };
        let Some(parsed) = super::pod::parse_pod(&pod) else {
            return false;
        };
        self.upsert(parsed, Instant::now());
        true
    }

    #[cfg(test)]
    fn by_uid_at(&self, uid: &str, now: Instant) -> Option<PodMeta> {
        self.lock_purged(now).pods.get(uid).map(|e| e.meta.clone())
    }
}

impl State {
    /// Forgets pods deleted `grace` or more ago.
    fn purge(&mut self, now: Instant, grace: Duration) {
        while let Some((at, uid)) = self.deleted.front() {
            if now.saturating_duration_since(*at) < grace {
                break;
            }
            let (at, uid) = (*at, uid.clone());
            self.deleted.pop_front();
            if self.pods.get(&uid).and_then(|e| e.deleted_at) == Some(at) {
                self.remove(&uid);
            }
        }
    }

    fn remove(&mut self, uid: &str) {
        if let Some(entry) = self.pods.remove(uid) {
            for id in entry.ids {
                self.unindex(&id, uid);
            }
        }
    }

    fn unindex(&mut self, id: &str, uid: &str) {
        if self.by_id.get(id).is_some_and(|(u, _)| u == uid) {
            self.by_id.remove(id);
        }
    }

    fn upsert(&mut self, pod: ParsedPod, max_entries: usize) {
        self.clock += 1;
        let uid = pod.meta.uid.clone();
        if !self.pods.contains_key(&uid) {
            while self.pods.len() >= max_entries && self.evict_one() {}
        }
        let clock = self.clock;
        let entry = self.pods.entry(uid.clone()).or_insert_with(|| Entry {
            meta: PodMeta::default(),
            ids: VecDeque::new(),
            deleted_at: None,
            updated: clock,
        });
        entry.meta = pod.meta;
        entry.deleted_at = None;
        entry.updated = clock;
        let mut dropped = Vec::new();
        for (id, _) in &pod.ids {
            if !entry.ids.contains(id) {
                entry.ids.push_back(id.clone());
                if entry.ids.len() > MAX_IDS_PER_POD {
                    dropped.extend(entry.ids.pop_front());
                }
            }
        }
        for id in dropped {
            self.unindex(&id, &uid);
        }
        for (id, name) in pod.ids {
            self.by_id.insert(id, (uid.clone(), name));
        }
    }

    fn mark_deleted(&mut self, uid: &str, now: Instant) {
        let Some(entry) = self.pods.get_mut(uid) else {
            return;
        };
        if entry.deleted_at.is_some() {
            return;
        }
        entry.deleted_at = Some(now);
        self.deleted.push_back((now, uid.to_string()));
        if self.deleted.len() > 4 * self.pods.len() + 64 {
            let pods = &self.pods;
            self.deleted
                .retain(|(at, uid)| pods.get(uid).and_then(|e| e.deleted_at) == Some(*at));
        }
    }

    /// Forgets the oldest deleted pod, else the least recently updated one. False if empty.
    fn evict_one(&mut self) -> bool {
        while let Some((at, uid)) = self.deleted.pop_front() {
            if self.pods.get(&uid).and_then(|e| e.deleted_at) == Some(at) {
                self.remove(&uid);
                self.stats.evicted += 1;
                return true;
            }
        }
        let oldest = self
            .pods
            .iter()
            .min_by_key(|(_, e)| e.updated)
            .map(|(uid, _)| uid.clone());
        match oldest {
            Some(uid) => {
                self.remove(&uid);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ids: &[(&str, &str)]) -> ParsedPod {
        ParsedPod {
            meta: PodMeta {
                namespace: "ns".to_string(),
                name: format!("pod-{uid}"),
                uid: uid.to_string(),
                containers: ids
                    .iter()
                    .map(|(id, name)| (name.to_string(), Some(id.to_string())))
                    .collect(),
                ..PodMeta::default()
            },
            ids: ids
                .iter()
                .map(|(id, name)| (id.to_string(), name.to_string()))
                .collect(),
        }
    }

    #[test]
    fn finds_pods_by_uid_and_container_id() {
        let c = PodCache::new(Duration::from_secs(600), 100);
        let t = Instant::now();
        c.upsert(pod("a", &[("id1", "app")]), t);
        assert_eq!(c.by_uid("a").map(|m| m.name), Some("pod-a".to_string()));
        assert_eq!(
            c.by_container_id("containerd://id1").map(|m| m.uid),
            Some("a".to_string())
        );
        // A restart: the new id is added, the old one still finds the pod.
        c.upsert(pod("a", &[("id1", "app"), ("id2", "app")]), t);
        c.upsert(pod("a", &[("id2", "app")]), t);
        let (meta, name) = c.container_by_id("id1").expect("old id kept");
        assert_eq!((meta.uid.as_str(), name.as_str()), ("a", "app"));
        assert!(c.by_container_id("id2").is_some());
        assert!(c.by_container_id("nope").is_none());
        assert!(c.by_container_id("containerd://").is_none());
        assert_eq!(c.len(), 1);
        assert!(!c.is_synced());
    }

    #[test]
    fn deleted_pods_stay_for_the_grace_period() {
        let grace = Duration::from_secs(600);
        let c = PodCache::new(grace, 100);
        let t = Instant::now();
        c.upsert(pod("a", &[("id1", "app")]), t);
        c.delete("a", None, t + Duration::from_secs(1));
        assert!(c.by_uid_at("a", t + Duration::from_secs(600)).is_some());
        assert!(c.by_uid_at("a", t + Duration::from_secs(601)).is_none());
        assert!(c.by_container_id("id1").is_none(), "its ids go with it");
        assert_eq!(c.len(), 0);
        // Deleting an unknown pod with its last state keeps it for the grace period too.
        c.delete("b", Some(pod("b", &[])), t + Duration::from_secs(602));
        assert!(c.by_uid_at("b", t + Duration::from_secs(700)).is_some());
    }

    #[test]
    fn a_relist_marks_missing_pods_deleted() {
        let c = PodCache::new(Duration::from_secs(10), 100);
        let t = Instant::now();
        c.upsert(pod("a", &[]), t);
        c.upsert(pod("b", &[]), t);
        c.replace_all(vec![pod("b", &[]), pod("c", &[])], t);
        assert!(c.is_synced());
        assert_eq!(c.stats().lists, 1);
        assert!(c.by_uid_at("a", t + Duration::from_secs(9)).is_some());
        assert!(c.by_uid_at("a", t + Duration::from_secs(10)).is_none());
        assert!(c.by_uid_at("b", t + Duration::from_secs(3600)).is_some());
        assert!(c.by_uid_at("c", t + Duration::from_secs(3600)).is_some());
    }

    #[test]
    fn bounded_oldest_deleted_first_then_least_recently_updated() {
        let c = PodCache::new(Duration::from_secs(600), 3);
        let t = Instant::now();
        c.upsert(pod("a", &[("ia", "x")]), t);
        c.upsert(pod("b", &[]), t);
        c.upsert(pod("c", &[]), t);
        c.delete("b", None, t);
        c.upsert(pod("d", &[]), t);
        assert!(c.by_uid("b").is_none(), "the deleted pod goes first");
        assert!(c.by_uid("a").is_some());
        c.upsert(pod("c", &[]), t); // c is now more recent than a
        c.upsert(pod("e", &[]), t);
        assert!(c.by_uid("a").is_none(), "then the least recently updated");
        assert!(c.by_container_id("ia").is_none());
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().evicted, 2);
    }

    #[test]
    fn container_ids_per_pod_are_bounded() {
        let c = PodCache::new(Duration::from_secs(600), 10);
        let t = Instant::now();
        for i in 0..MAX_IDS_PER_POD + 5 {
            let id = format!("id{i}");
            c.upsert(pod("a", &[(id.as_str(), "app")]), t);
        }
        assert!(c.by_container_id("id0").is_none());
        assert!(c.by_container_id("id5").is_some());
        assert!(c.lock().by_id.len() == MAX_IDS_PER_POD);
    }

    #[test]
    fn undeleted_then_deleted_again_uses_the_new_time() {
        let c = PodCache::new(Duration::from_secs(10), 10);
        let t = Instant::now();
        c.upsert(pod("a", &[]), t);
        c.delete("a", None, t);
        c.upsert(pod("a", &[]), t + Duration::from_secs(5));
        c.delete("a", None, t + Duration::from_secs(8));
        assert!(c.by_uid_at("a", t + Duration::from_secs(12)).is_some());
        assert!(c.by_uid_at("a", t + Duration::from_secs(18)).is_none());
    }
}
