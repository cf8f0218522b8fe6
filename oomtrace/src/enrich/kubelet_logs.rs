//! Kubernetes names (namespace, pod, container) from the kubelet's log tree, without API access.
//!
//! The kubelet keeps two layouts under the host's log directory (`/var/log` by default):
//!
//! - `pods/<namespace>_<pod>_<pod-uid>/<container>/<restart-count>.log`: one directory per pod
//!   and one per container in it, for example
//!   `/var/log/pods/shop_web-7d9f8b6c5-x2k4q_a0085058-fe7c-4a8d-b4aa-b2ff01f5bc5d/app/0.log`.
//!   Static pods have a 32-hex uid (a hash of their manifest) instead of a dashed UUID.
//! - `containers/<pod>_<namespace>_<container>-<container-id>.log`: one symlink per container
//!   instance, named with the full 64-hex container id and pointing (absolute target) into
//!   `pods/`, for example
//!   `/var/log/containers/web-7d9f8b6c5-x2k4q_shop_app-a013de9b…78e4.log` →
//!   `/var/log/pods/shop_web-7d9f8b6c5-x2k4q_a0085058-…-b2ff01f5bc5d/app/0.log`.
//!
//! The first maps a pod uid (as found in a cgroup path) to its namespace and pod name; the second
//! maps a container id to its container name, and through the link target to its pod uid.
//!
//! [`KubeletLogs`] caches both. A miss rescans the two directories, at most once per rescan
//! interval; entries whose directories have gone are kept (up to a capacity, oldest-gone evicted
//! first) so that a record processed after the kubelet cleaned up still gets its names.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The shortest time between two rescans caused by misses, unless set otherwise.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// How many pods, and separately how many containers, the cache keeps by default once their
/// directories are gone.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Kubernetes names for a victim, as far as the kubelet's log tree tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid, with dashes (as in `pods/`), not the underscores of systemd slice names.
    pub pod_uid: String,
    /// The container's name; known only when the container id matched a log symlink in
    /// `containers/` exactly (never guessed from the pod's container directories).
    pub container: Option<String>,
}

/// A pod directory seen in `pods/`.
#[derive(Debug, Clone)]
struct PodEntry {
    namespace: String,
    pod: String,
    /// The scan generation that last saw the directory.
    seen: u64,
}

/// A container log symlink seen in `containers/`.
#[derive(Debug, Clone)]
struct ContainerEntry {
    namespace: String,
    pod: String,
    container: String,
    /// From the link target, or from the pod directory with the same namespace and pod name.
    pod_uid: Option<String>,
    /// The scan generation that last saw the symlink.
    seen: u64,
}

impl ContainerEntry {
    /// Whether this container belongs to the pod with this uid and names.
    fn belongs_to(&self, uid: &str, pod: &PodEntry) -> bool {
        match &self.pod_uid {
            Some(own) => own == uid,
            None => self.namespace == pod.namespace && self.pod == pod.pod,
        }
    }
}

/// Looks names up in a host log directory, caching what it has read.
///
/// Entries for pods and containers whose log files have since been removed are kept, up to
/// [`DEFAULT_CAPACITY`] (or [`KubeletLogs::with_capacity`]) of each, so a late record still gets
/// its names; entries still present on disk are never evicted.
#[derive(Debug)]
pub struct KubeletLogs {
    root: PathBuf,
    rescan_interval: Duration,
    capacity: usize,
    pods: HashMap<String, PodEntry>,
    containers: HashMap<String, ContainerEntry>,
    last_scan: Option<Instant>,
    generation: u64,
    misses: u64,
    rescans: u64,
    reported_unreadable: bool,
}

impl KubeletLogs {
    /// `root` is the host's log dir (`/var/log`, or what --host-log-dir gives). Nothing is read
    /// until the first lookup (or [`KubeletLogs::rescan`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            capacity: DEFAULT_CAPACITY,
            pods: HashMap::new(),
            containers: HashMap::new(),
            last_scan: None,
            generation: 0,
            misses: 0,
            rescans: 0,
            reported_unreadable: false,
        }
    }

    /// Sets the shortest time between two rescans caused by misses (zero: rescan on every miss).
    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = interval;
        self
    }

    /// Sets how many pods and how many containers are kept once their log files are gone.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The host log directory this reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names for a pod uid and, if known, a container id.
    ///
    /// The uid may use underscores (as in systemd slice names) or dashes. On a cache miss (pod
    /// unknown, or a container id given but unknown) it rescans `<root>/pods` and
    /// `<root>/containers`, at most once per rescan interval. Returns `None` when the pod is
    /// unknown; `container` is `None` unless the container id matched a log symlink of this pod.
    pub fn lookup(&mut self, pod_uid: &str, container_id: Option<&str>) -> Option<PodNames> {
        let uid = normalize_uid(pod_uid);
        let mut found = self.cached(&uid, container_id);
        let complete = match &found {
            Some(names) => container_id.is_none() || names.container.is_some(),
            None => false,
        };
        if !complete && self.rescan_if_due() {
            found = self.cached(&uid, container_id);
        }
        self.count(found)
    }

    /// Names for a container id alone (cgroup paths from the cgroupfs driver always have the pod
    /// uid too, but e.g. a bare `/docker/<id>` does not), from `<root>/containers`. Rescans on a
    /// miss like [`KubeletLogs::lookup`]. Returns `None` when the id is unknown or its pod uid
    /// cannot be found.
    pub fn lookup_container(&mut self, container_id: &str) -> Option<PodNames> {
        let mut found = self.cached_container(container_id);
        if found.is_none() && self.rescan_if_due() {
            found = self.cached_container(container_id);
        }
        self.count(found)
    }

    /// Lookups (of either kind) that returned `None`, for metrics.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Scans of the log tree done so far, for metrics.
    pub fn rescans(&self) -> u64 {
        self.rescans
    }

    /// Rescans now, whatever the interval (e.g. to fill the cache at startup). Restarts the
    /// interval.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.generation += 1;
        self.rescans += 1;
        if self.scan_pods() {
            self.scan_containers();
        }
    }

    /// Rescans if the interval has passed since the last scan; tells whether it did.
    fn rescan_if_due(&mut self) -> bool {
        if let Some(last) = self.last_scan {
            if last.elapsed() < self.rescan_interval {
                return false;
            }
        }
        self.rescan();
        true
    }

    /// Counts a `None` as a miss and passes the result through.
    fn count(&mut self, found: Option<PodNames>) -> Option<PodNames> {
        if found.is_none() {
            self.misses += 1;
        }
        found
    }

    /// Names for a (normalised) pod uid and a container id, from the cache only.
    fn cached(&self, uid: &str, container_id: Option<&str>) -> Option<PodNames> {
        let container = container_id.and_then(|id| self.containers.get(id));
        if let Some(pod) = self.pods.get(uid) {
            return Some(PodNames {
                namespace: pod.namespace.clone(),
                pod: pod.pod.clone(),
                pod_uid: uid.to_owned(),
                container: container
                    .filter(|c| c.belongs_to(uid, pod))
                    .map(|c| c.container.clone()),
            });
        }
        // The pod entry may have been evicted while its container's entry was not.
        let c = container.filter(|c| c.pod_uid.as_deref() == Some(uid))?;
        Some(PodNames {
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            pod_uid: uid.to_owned(),
            container: Some(c.container.clone()),
        })
    }

    /// Names for a container id alone, from the cache only.
    fn cached_container(&self, container_id: &str) -> Option<PodNames> {
        let c = self.containers.get(container_id)?;
        let uid = match &c.pod_uid {
            Some(uid) => uid.clone(),
            None => self.uid_for(&c.namespace, &c.pod)?,
        };
        Some(PodNames {
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            pod_uid: uid,
            container: Some(c.container.clone()),
        })
    }

    /// The uid of the pod with these names: among the cached pod directories, the one seen most
    /// recently, if only one was (a pod re-created with the same name has a new uid).
    fn uid_for(&self, namespace: &str, pod: &str) -> Option<String> {
        let candidates = self
            .pods
            .iter()
            .filter(|(_, p)| p.namespace == namespace && p.pod == pod);
        let newest = candidates.clone().map(|(_, p)| p.seen).max()?;
        let mut newest_uids = candidates.filter(|(_, p)| p.seen == newest);
        let (uid, _) = newest_uids.next()?;
        if newest_uids.next().is_some() {
            log::debug!("pod {namespace}/{pod} has several uids in the kubelet's log tree");
            return None;
        }
        Some(uid.clone())
    }

    /// Reads `<root>/pods`; tells whether it could.
    fn scan_pods(&mut self) -> bool {
        let Some(names) = self.read_dir_names(&self.root.join("pods")) else {
            return false;
        };
        let seen = self.generation;
        for name in names {
            let Some((namespace, pod, uid)) = parse_pod_dir(&name) else {
                continue;
            };
            self.pods
                .entry(uid)
                .and_modify(|e| e.seen = seen)
                .or_insert(PodEntry {
                    namespace,
                    pod,
                    seen,
                });
        }
        evict(&mut self.pods, self.capacity, seen, |e| e.seen);
        true
    }

    /// Reads `<root>/containers`, and the targets of symlinks not yet known.
    fn scan_containers(&mut self) {
        let dir = self.root.join("containers");
        let Some(names) = self.read_dir_names(&dir) else {
            return;
        };
        let seen = self.generation;
        for name in names {
            let Some((pod, namespace, container, id)) = parse_container_log(&name) else {
                continue;
            };
            if let Some(known) = self.containers.get_mut(&id) {
                known.seen = seen;
                if known.pod_uid.is_some() {
                    continue;
                }
            }
            let pod_uid = link_pod_uid(&dir.join(&name), &namespace, &pod, &container)
                .or_else(|| self.uid_for(&namespace, &pod));
            let entry = ContainerEntry {
                namespace,
                pod,
                container,
                pod_uid,
                seen,
            };
            self.containers.insert(id, entry);
        }
        evict(&mut self.containers, self.capacity, seen, |e| e.seen);
    }

    /// The UTF-8 names in a directory, or `None` if it cannot be read (logged once, at debug).
    fn read_dir_names(&mut self, dir: &Path) -> Option<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Some(
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
            ),
            Err(err) => {
                if !self.reported_unreadable {
                    self.reported_unreadable = true;
                    log::debug!(
                        "no Kubernetes names from the kubelet's log tree: cannot read {}: {err}",
                        dir.display()
                    );
                }
                None
            }
        }
    }
}

/// Removes the entries not seen in the current scan, oldest first, until at most `capacity`
/// remain (entries seen in the current scan always stay).
fn evict<V>(map: &mut HashMap<String, V>, capacity: usize, current: u64, seen: impl Fn(&V) -> u64) {
    let Some(excess) = map.len().checked_sub(capacity).filter(|&n| n > 0) else {
        return;
    };
    let mut stale: Vec<(u64, String)> = map
        .iter()
        .filter(|(_, v)| seen(v) < current)
        .map(|(k, v)| (seen(v), k.clone()))
        .collect();
    stale.sort_unstable();
    for (_, key) in stale.into_iter().take(excess) {
        map.remove(&key);
    }
}

/// The pod uid from a container log symlink's target, if the target is a kubelet pod log path
/// for the same namespace, pod and container.
fn link_pod_uid(link: &Path, namespace: &str, pod: &str, container: &str) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    let names = parse_log_target(&target)?;
    let same = names.namespace == namespace
        && names.pod == pod
        && names.container.as_deref() == Some(container);
    same.then_some(names.pod_uid)
}

/// A pod uid with dashes: systemd slice names carry it with underscores.
fn normalize_uid(uid: &str) -> String {
    uid.trim().replace('_', "-")
}

/// `<namespace>_<pod>_<uid>` → (namespace, pod, uid); `None` for anything else.
pub fn parse_pod_dir(name: &str) -> Option<(String, String, String)> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_dns_name(namespace) || !is_dns_name(pod) || !is_pod_uid(uid) {
        return None;
    }
    Some((namespace.to_owned(), pod.to_owned(), uid.to_owned()))
}

/// `<pod>_<namespace>_<container>-<64hex>.log` → (pod, namespace, container, id); `None` for
/// anything else.
pub fn parse_container_log(name: &str) -> Option<(String, String, String, String)> {
    let stem = name.strip_suffix(".log")?;
    let mut parts = stem.split('_');
    let (pod, namespace, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_dns_name(pod) || !is_dns_name(namespace) {
        return None;
    }
    let (container, id) = rest.rsplit_once('-')?;
    if !is_dns_label(container) || !is_container_id(id) {
        return None;
    }
    Some((
        pod.to_owned(),
        namespace.to_owned(),
        container.to_owned(),
        id.to_owned(),
    ))
}

/// A container log path in `pods/` (`…/<namespace>_<pod>_<uid>/<container>/<restart>.log`, as
/// the target of a `containers/` symlink, absolute or relative) → its names.
pub fn parse_log_target(target: &Path) -> Option<PodNames> {
    let file = target.file_name()?.to_str()?;
    let restart = file.strip_suffix(".log")?;
    if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let container_dir = target.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
    if !is_dns_label(container) {
        return None;
    }
    let (namespace, pod, pod_uid) = parse_pod_dir(pod_dir)?;
    Some(PodNames {
        namespace,
        pod,
        pod_uid,
        container: Some(container.to_owned()),
    })
}

/// A DNS label (container names): 1–63 of lowercase alnum and `-`.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_chars(s, false)
}

/// A DNS subdomain (pod names; namespaces are labels, but a dot is harmless here): 1–253 of
/// lowercase alnum, `-` and `.`.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && is_dns_chars(s, true)
}

/// Non-empty, lowercase alnum and `-` (and `.` if allowed), starting and ending with alnum.
fn is_dns_chars(s: &str, dots: bool) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) if alnum(first) && alnum(last) => bytes
            .iter()
            .all(|&b| alnum(b) || b == b'-' || (dots && b == b'.')),
        _ => false,
    }
}

/// A pod uid: a dashed UUID, or the 32-hex hash the kubelet gives static pods (lowercase).
fn is_pod_uid(s: &str) -> bool {
    let hex = |part: &str| part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if s.len() == 32 {
        return hex(s);
    }
    let lens: Vec<usize> = s.split('-').map(str::len).collect();
    lens == [8, 4, 4, 4, 12] && s.split('-').all(hex)
}

/// A full container id: 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        fs,
        sync::atomic::{AtomicU64, Ordering},
        time::{SystemTime, UNIX_EPOCH},
    };

    const WEB_UID: &str = "a0085058-fe7c-4a8d-b4aa-b2ff01f5bc5d";
    const WEB_POD: &str = "web-7d9f8b6c5-x2k4q";
    const APP_ID_0: &str = "a013de9b4fbe295084e4c6f1a097348e24b5514b158920d983020e604a6f78e4";
    const APP_ID_1: &str = "1f33c702134d0015441cb192e6d2449ecec465f8a16ce67b4b7066e4f8250f63";
    const SIDECAR_ID: &str = "dd93a249e9e3d495fa2e82987471f2b60d5461150268a43980e46b9cdb65eb62";
    const DNS_UID: &str = "bf7b80bd-3752-4893-8762-c684b7f89690";
    const DNS_POD: &str = "coredns-5d78c9869d-8wq2n";
    const DNS_ID: &str = "2e0665bf638f054758b158c28e81028f05361469421e2a31b709462ddc9a7c49";
    const ETCD_UID: &str = "bb8fe8ef3ac5343b63ea85d079bde060";
    const ETCD_ID: &str = "0cb2b64f38fbf89a7130ab8b5d5ff72ea92641b81a79c3798ae97ecc67d76fd6";
    const LATE_UID: &str = "4a9b5977-caf5-465b-a4c9-6edb51efc037";
    const LATE_ID: &str = "7f3258c20e11c289c1d36424aece5529301424cb57bad51129354275e237d49b";

    /// A temporary log root, removed when dropped (also when a test fails).
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "oomtrace-kubelet-logs-{tag}-{}-{n}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// How a `containers/` symlink points into `pods/`.
    #[derive(Clone, Copy)]
    enum Link {
        /// Absolute target inside the test root, as the kubelet makes them.
        Absolute,
        /// Relative target (`../pods/…`).
        Relative,
        /// Absolute target under the node's `/var/log`, dangling here (an agent reading the
        /// host's log dir mounted elsewhere sees exactly this).
        HostPath,
        /// A regular file instead of a symlink.
        Copy,
    }

    /// Makes `pods/<ns>_<pod>_<uid>/<container>/<restart>.log` and its `containers/` entry.
    fn add_container(
        root: &Path,
        (namespace, pod, uid): (&str, &str, &str),
        (container, restart, id): (&str, u32, &str),
        link: Link,
    ) {
        let pod_dir = format!("{namespace}_{pod}_{uid}");
        let rel = format!("{pod_dir}/{container}/{restart}.log");
        let log = root.join("pods").join(&rel);
        fs::create_dir_all(log.parent().expect("parent")).expect("create container dir");
        fs::write(&log, "2024-05-01T10:00:00.000000000Z stdout F hello\n").expect("write log");
        let containers = root.join("containers");
        fs::create_dir_all(&containers).expect("create containers dir");
        let name = containers.join(format!("{pod}_{namespace}_{container}-{id}.log"));
        match link {
            Link::Absolute => std::os::unix::fs::symlink(&log, &name),
            Link::Relative => std::os::unix::fs::symlink(format!("../pods/{rel}"), &name),
            Link::HostPath => std::os::unix::fs::symlink(format!("/var/log/pods/{rel}"), &name),
            Link::Copy => fs::write(&name, "").map(|_| ()),
        }
        .expect("create container log link");
    }

    /// Two namespaces: `shop/web` (app restarted once, plus a sidecar), `kube-system/coredns`
    /// and the static pod `kube-system/etcd-node-1`; plus noise the parser must skip.
    fn kubelet_tree(tag: &str) -> TempTree {
        let tree = TempTree::new(tag);
        let root = tree.path();
        let web = ("shop", WEB_POD, WEB_UID);
        add_container(root, web, ("app", 0, APP_ID_0), Link::Absolute);
        add_container(root, web, ("app", 1, APP_ID_1), Link::Absolute);
        add_container(root, web, ("sidecar", 0, SIDECAR_ID), Link::Relative);
        let dns = ("kube-system", DNS_POD, DNS_UID);
        add_container(root, dns, ("coredns", 0, DNS_ID), Link::HostPath);
        let etcd = ("kube-system", "etcd-node-1", ETCD_UID);
        add_container(root, etcd, ("etcd", 0, ETCD_ID), Link::Copy);
        fs::create_dir_all(root.join("pods/not-a-pod-dir")).expect("noise dir");
        fs::write(root.join("containers/README"), "").expect("noise file");
        tree
    }

    fn names(namespace: &str, pod: &str, uid: &str, container: Option<&str>) -> PodNames {
        PodNames {
            namespace: namespace.into(),
            pod: pod.into(),
            pod_uid: uid.into(),
            container: container.map(Into::into),
        }
    }

    fn logs(tree: &TempTree) -> KubeletLogs {
        KubeletLogs::new(tree.path()).with_rescan_interval(Duration::ZERO)
    }

    #[test]
    fn uid_and_container_id_give_all_four_names() {
        let tree = kubelet_tree("all-four");
        let mut k = logs(&tree);
        let want = names("shop", WEB_POD, WEB_UID, Some("sidecar"));
        assert_eq!(k.lookup(WEB_UID, Some(SIDECAR_ID)), Some(want));
        let want = names("kube-system", DNS_POD, DNS_UID, Some("coredns"));
        assert_eq!(k.lookup(DNS_UID, Some(DNS_ID)), Some(want));
        assert_eq!(k.misses(), 0);
    }

    #[test]
    fn both_instances_of_a_restarted_container_resolve() {
        let tree = kubelet_tree("restart");
        let mut k = logs(&tree);
        for id in [APP_ID_0, APP_ID_1] {
            let want = names("shop", WEB_POD, WEB_UID, Some("app"));
            assert_eq!(k.lookup(WEB_UID, Some(id)), Some(want));
        }
    }

    #[test]
    fn systemd_style_uid_is_accepted() {
        let tree = kubelet_tree("underscores");
        let mut k = logs(&tree);
        let uid = WEB_UID.replace('-', "_");
        let want = names("shop", WEB_POD, WEB_UID, Some("app"));
        assert_eq!(k.lookup(&uid, Some(APP_ID_0)), Some(want));
    }

    #[test]
    fn unknown_container_id_gives_pod_names_only() {
        let tree = kubelet_tree("unknown-container");
        let mut k = logs(&tree);
        let sandbox = "f".repeat(64);
        let want = names("shop", WEB_POD, WEB_UID, None);
        assert_eq!(k.lookup(WEB_UID, Some(&sandbox)), Some(want.clone()));
        assert_eq!(k.lookup(WEB_UID, None), Some(want));
        assert_eq!(k.misses(), 0);
    }

    #[test]
    fn container_of_another_pod_is_not_attached() {
        let tree = kubelet_tree("other-pod");
        let mut k = logs(&tree);
        let want = names("shop", WEB_POD, WEB_UID, None);
        assert_eq!(k.lookup(WEB_UID, Some(DNS_ID)), Some(want));
        // The static pod's entry is a plain file: its uid came from the pod directory.
        let want = names("kube-system", DNS_POD, DNS_UID, None);
        assert_eq!(k.lookup(DNS_UID, Some(ETCD_ID)), Some(want));
    }

    #[test]
    fn container_id_alone() {
        let tree = kubelet_tree("container-alone");
        let mut k = logs(&tree);
        let cases = [
            (APP_ID_1, names("shop", WEB_POD, WEB_UID, Some("app"))),
            (SIDECAR_ID, names("shop", WEB_POD, WEB_UID, Some("sidecar"))),
            (
                DNS_ID,
                names("kube-system", DNS_POD, DNS_UID, Some("coredns")),
            ),
            // Not a symlink: the uid comes from the pod directory with the same names.
            (
                ETCD_ID,
                names("kube-system", "etcd-node-1", ETCD_UID, Some("etcd")),
            ),
        ];
        for (id, want) in cases {
            assert_eq!(k.lookup_container(id), Some(want), "{id}");
        }
        assert_eq!(k.lookup_container(&"e".repeat(64)), None);
        assert_eq!(k.misses(), 1);
    }

    #[test]
    fn pod_created_later_is_found_after_a_rescan() {
        let tree = kubelet_tree("later");
        let mut k = logs(&tree);
        assert!(k.lookup(WEB_UID, None).is_some());
        assert_eq!(k.lookup(LATE_UID, Some(LATE_ID)), None);
        let late = ("shop", "worker-0", LATE_UID);
        add_container(tree.path(), late, ("worker", 0, LATE_ID), Link::Absolute);
        let want = names("shop", "worker-0", LATE_UID, Some("worker"));
        assert_eq!(k.lookup(LATE_UID, Some(LATE_ID)), Some(want.clone()));
        assert_eq!(k.lookup_container(LATE_ID), Some(want));
    }

    #[test]
    fn names_survive_removal_of_the_pod() {
        let tree = kubelet_tree("removed");
        let mut k = logs(&tree);
        assert!(k.lookup(WEB_UID, Some(APP_ID_0)).is_some());
        let pod_dir = format!("shop_{WEB_POD}_{WEB_UID}");
        fs::remove_dir_all(tree.path().join("pods").join(pod_dir)).expect("remove pod dir");
        for (container, id) in [
            ("app", APP_ID_0),
            ("app", APP_ID_1),
            ("sidecar", SIDECAR_ID),
        ] {
            let link = format!("{WEB_POD}_shop_{container}-{id}.log");
            fs::remove_file(tree.path().join("containers").join(link)).expect("remove link");
        }
        // Another miss rescans the tree without the pod.
        assert_eq!(k.lookup(LATE_UID, None), None);
        let want = names("shop", WEB_POD, WEB_UID, Some("app"));
        assert_eq!(k.lookup(WEB_UID, Some(APP_ID_1)), Some(want.clone()));
        assert_eq!(k.lookup_container(APP_ID_0), Some(want));
    }

    #[test]
    fn rescan_interval_is_honoured() {
        let tree = kubelet_tree("interval");
        let mut k = KubeletLogs::new(tree.path()).with_rescan_interval(Duration::from_secs(3600));
        assert!(k.lookup(WEB_UID, None).is_some());
        let late = ("shop", "worker-0", LATE_UID);
        add_container(tree.path(), late, ("worker", 0, LATE_ID), Link::Absolute);
        for _ in 0..100 {
            assert_eq!(k.lookup(LATE_UID, None), None);
            assert_eq!(k.lookup_container(LATE_ID), None);
        }
        assert_eq!(k.rescans(), 1);
        assert_eq!(k.misses(), 200);
        k.rescan();
        assert!(k.lookup(LATE_UID, None).is_some());
    }

    #[test]
    fn misses_are_counted() {
        let tree = kubelet_tree("misses");
        let mut k = logs(&tree);
        assert_eq!(k.lookup(LATE_UID, None), None);
        assert_eq!(k.lookup_container(LATE_ID), None);
        assert!(k.lookup(WEB_UID, Some(LATE_ID)).is_some());
        assert_eq!(k.misses(), 2);
    }

    #[test]
    fn root_without_pods_dir_gives_none() {
        let tree = TempTree::new("no-pods");
        let mut k = logs(&tree);
        assert_eq!(k.lookup(WEB_UID, Some(APP_ID_0)), None);
        assert_eq!(k.lookup_container(APP_ID_0), None);
        assert_eq!(k.misses(), 2);
        let mut k = KubeletLogs::new(tree.path().join("does-not-exist"));
        assert_eq!(k.lookup(WEB_UID, None), None);
    }

    #[test]
    fn capacity_evicts_oldest_gone_entries_only() {
        let tree = kubelet_tree("capacity");
        let root = tree.path();
        let mut k = logs(&tree).with_capacity(3);
        assert!(k.lookup(WEB_UID, None).is_some());
        let pods = root.join("pods");
        fs::remove_dir_all(pods.join(format!("kube-system_{DNS_POD}_{DNS_UID}"))).expect("rm");
        k.rescan();
        fs::remove_dir_all(pods.join(format!("shop_{WEB_POD}_{WEB_UID}"))).expect("rm");
        k.rescan();
        assert_eq!(k.pods.len(), 3, "gone pods are kept up to the capacity");
        let late = ("shop", "worker-0", LATE_UID);
        add_container(root, late, ("worker", 0, LATE_ID), Link::Absolute);
        k.rescan();
        // Four entries, capacity three: coredns went first, so it is the one evicted.
        assert_eq!(k.pods.len(), 3);
        assert!(k.lookup(WEB_UID, None).is_some());
        assert!(k.lookup(LATE_UID, None).is_some());
        assert!(k.lookup(ETCD_UID, None).is_some());
        assert_eq!(k.lookup(DNS_UID, None), None);
        // Entries present on disk are never evicted, even beyond the capacity.
        let mut k = logs(&tree).with_capacity(1);
        assert!(k.lookup(LATE_UID, None).is_some());
        assert!(k.lookup(ETCD_UID, None).is_some());
        assert_eq!(k.rescans(), 1);
    }

    #[test]
    fn pod_dir_parser() {
        let want = ("shop".into(), WEB_POD.into(), WEB_UID.into());
        assert_eq!(
            parse_pod_dir(&format!("shop_{WEB_POD}_{WEB_UID}")),
            Some(want)
        );
        let name = format!("kube-system_etcd-node-1.example.com_{ETCD_UID}");
        let got = parse_pod_dir(&name).map(|(_, pod, _)| pod);
        assert_eq!(got.as_deref(), Some("etcd-node-1.example.com"));
        for bad in [
            "",
            "shop",
            &format!("shop_{WEB_POD}"),
            &format!("shop_{WEB_POD}_{WEB_UID}_x"),
            &format!("shop_web_1_{WEB_UID}"),
            &format!("_{WEB_POD}_{WEB_UID}"),
            &format!("Shop_{WEB_POD}_{WEB_UID}"),
            &format!("shop_{WEB_POD}_{}", WEB_UID.to_uppercase()),
            &format!("shop_{WEB_POD}_{}", &WEB_UID[..35]),
            &format!("shop_{WEB_POD}_not-a-uid"),
            WEB_UID,
            "shop_-web_a0085058-fe7c-4a8d-b4aa-b2ff01f5bc5d",
        ] {
            assert_eq!(parse_pod_dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn container_log_parser() {
        let name = format!("{WEB_POD}_shop_app-{APP_ID_0}.log");
        let want = (WEB_POD.into(), "shop".into(), "app".into(), APP_ID_0.into());
        assert_eq!(parse_container_log(&name), Some(want));
        let name = format!("{WEB_POD}_shop_istio-proxy-{APP_ID_0}.log");
        let got = parse_container_log(&name).map(|(_, _, c, _)| c);
        assert_eq!(got.as_deref(), Some("istio-proxy"));
        for bad in [
            String::new(),
            ".log".into(),
            format!("{WEB_POD}_shop_app-{APP_ID_0}"),
            format!("{WEB_POD}_shop_app-{APP_ID_0}.log.1"),
            format!("{WEB_POD}_app-{APP_ID_0}.log"),
            format!("{WEB_POD}_shop_x_app-{APP_ID_0}.log"),
            format!("{WEB_POD}_shop_app-{}.log", &APP_ID_0[..12]),
            format!("{WEB_POD}_shop_app-{}.log", APP_ID_0.to_uppercase()),
            format!("{WEB_POD}_shop_app{APP_ID_0}.log"),
            format!("{WEB_POD}_shop_-{APP_ID_0}.log"),
            format!("{WEB_POD}_shop_app-{APP_ID_0}0.log"),
            format!("{WEB_POD}_Shop_app-{APP_ID_0}.log"),
            format!("{WEB_POD}_shop_side.car-{APP_ID_0}.log"),
            format!("_shop_app-{APP_ID_0}.log"),
            format!("{WEB_POD}_shop_app-{}é.log", &APP_ID_0[..63]),
        ] {
            assert_eq!(parse_container_log(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn log_target_parser() {
        let abs = format!("/var/log/pods/shop_{WEB_POD}_{WEB_UID}/app/12.log");
        let want = names("shop", WEB_POD, WEB_UID, Some("app"));
        assert_eq!(parse_log_target(Path::new(&abs)), Some(want.clone()));
        let rel = format!("../pods/shop_{WEB_POD}_{WEB_UID}/app/0.log");
        assert_eq!(parse_log_target(Path::new(&rel)), Some(want));
        for bad in [
            "",
            "/",
            "0.log",
            "app/0.log",
            &format!("/var/log/pods/shop_{WEB_POD}_{WEB_UID}/app/x.log"),
            &format!("/var/log/pods/shop_{WEB_POD}_{WEB_UID}/app/0.txt"),
            &format!("/var/log/pods/shop_{WEB_POD}_{WEB_UID}/App/0.log"),
            &format!("/var/log/pods/{WEB_UID}/app/0.log"),
        ] {
            assert_eq!(parse_log_target(Path::new(bad)), None, "{bad:?}");
        }
    }
}
