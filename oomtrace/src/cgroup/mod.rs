//! The memory-cgroup hierarchy: where it is mounted, which version it is, and cgroup id → path.
//!
//! The kernel reports a cgroup as its kernfs node id, which is the cgroup directory's inode
//! number. Paths are relative to the hierarchy's root, as the kernel's own OOM report prints
//! them (`/`, `/system.slice/x.service`).
pub mod memory;
pub mod watch;

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no memory cgroup hierarchy is mounted (looked in /proc/self/mountinfo for a cgroup v1 `memory` mount or a cgroup2 mount with the memory controller)")]
    NoMemoryHierarchy,
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A mounted memory hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryHierarchy {
    pub root: PathBuf,
    pub version: CgroupVersion,
}

impl MemoryHierarchy {
    /// Finds the memory hierarchy of this system.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_mountinfo(&text, |root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .map(|c| c.split_whitespace().any(|w| w == "memory"))
                .unwrap_or(false)
        })
        .ok_or(CgroupError::NoMemoryHierarchy)
    }

    /// Picks the hierarchy from a mountinfo text. A v1 `memory` mount wins; otherwise a cgroup2
    /// mount whose controllers (asked through `v2_has_memory`) include memory.
    pub fn from_mountinfo(text: &str, v2_has_memory: impl Fn(&Path) -> bool) -> Option<Self> {
        let mut v2 = None;
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mountpoint = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let superopts = r.nth(1).unwrap_or("");
            let mountpoint = unescape_mountinfo(mountpoint);
            match fstype {
                "cgroup" if superopts.split(',').any(|o| o == "memory") => {
                    return Some(Self {
                        root: PathBuf::from(mountpoint),
                        version: CgroupVersion::V1,
                    });
                }
                "cgroup2" if v2.is_none() && v2_has_memory(Path::new(&mountpoint)) => {
                    v2 = Some(Self {
                        root: PathBuf::from(mountpoint),
                        version: CgroupVersion::V2,
                    });
                }
                _ => {}
            }
        }
        v2
    }

    /// The kernel-style path (`/a/b`) of a directory inside this hierarchy.
    pub fn relative(&self, dir: &Path) -> Option<String> {
        let rel = dir.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// The directory of a kernel-style path (`/a/b`): the inverse of [`Self::relative`].
    pub fn dir(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // An octal escape is at most \377; anything else is taken literally.
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| &b[i + 1..i + 4])
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                u8::try_from(v).ok()
            });
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether cgroup `path` is `prefix` or lies below it (`/a/b` is under `/a`, `/ab` is not).
pub fn is_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A cgroup as an event names it: its id (the directory's inode), and its path when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    pub id: u64,
    /// `None` when the cgroup was gone before it could be resolved.
    pub path: Option<String>,
}

/// How long a removed cgroup's path is remembered after its directory was last seen: long
/// enough for the records of its last moments (a kill, then the runtime removing the cgroup)
/// to be named, short enough that a node creating and removing cgroups all day keeps only the
/// live ones.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Known {
    path: String,
    /// When the directory was last seen (or the path learned).
    seen: Instant,
}

/// Maps cgroup ids to paths, walking the hierarchy again on a miss. Each walk forgets the
/// cgroups gone for more than [`FORGET_AFTER`], so the map holds the live cgroups and those
/// removed recently.
#[derive(Debug)]
pub struct CgroupResolver {
    hierarchy: MemoryHierarchy,
    by_id: HashMap<u64, Known>,
}

impl CgroupResolver {
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        let mut r = Self {
            hierarchy,
            by_id: HashMap::new(),
        };
        r.rescan();
        r
    }

    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hierarchy
    }

    /// The path of cgroup `id`, or `None` when no such cgroup exists (any more).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(k) = self.by_id.get(&id) {
            return Some(k.path.clone());
        }
        self.rescan();
        self.by_id.get(&id).map(|k| k.path.clone())
    }

    /// The path of cgroup `id` as of the last walk, without walking again on a miss.
    pub fn known(&self, id: u64) -> Option<&str> {
        self.by_id.get(&id).map(|k| k.path.as_str())
    }

    /// Cgroups remembered (live and recently removed).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Remembers paths read in the kernel at a kill (valid even if the cgroup is gone since),
    /// for [`FORGET_AFTER`] unless the directory is seen again.
    pub fn learn(&mut self, paths: impl IntoIterator<Item = (u64, String)>) {
        let seen = Instant::now();
        for (id, path) in paths {
            if id != 0 {
                self.by_id.insert(id, Known { path, seen });
            }
        }
    }

    /// Records the current tree, and forgets cgroups not seen for [`FORGET_AFTER`] (ids are
    /// not reused while the system is up: kernfs ids are 64-bit and increase, so a removed
    /// cgroup's entry is only ever wanted for records about its last moments).
    pub fn rescan(&mut self) {
        self.rescan_at(Instant::now());
    }

    fn rescan_at(&mut self, now: Instant) {
        let mut stack = vec![self.hierarchy.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            if let Some(path) = self.hierarchy.relative(&dir) {
                self.by_id.insert(meta.ino(), Known { path, seen: now });
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        self.by_id
            .retain(|_, k| now.saturating_duration_since(k.seen) < FORGET_AFTER);
    }
}

/// The inode number (= cgroup id) of a cgroup directory.
pub fn id_of(dir: &Path) -> Result<u64, CgroupError> {
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Io {
            path: dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
24 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 24 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 30 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
38 30 0:34 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
43 30 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const MOUNTINFO_V2: &str = "\
24 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 24 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn v1_memory_mount_wins_over_cgroup2() {
        let h = MemoryHierarchy::from_mountinfo(MOUNTINFO_V1, |_| true).expect("found");
        assert_eq!(h.root, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(h.version, CgroupVersion::V1);
    }

    #[test]
    fn cgroup2_with_memory_controller() {
        let h = MemoryHierarchy::from_mountinfo(MOUNTINFO_V2, |p| p == Path::new("/sys/fs/cgroup"))
            .expect("found");
        assert_eq!(h.version, CgroupVersion::V2);
        assert_eq!(
            h.relative(Path::new("/sys/fs/cgroup/a/b")).as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            h.relative(Path::new("/sys/fs/cgroup")).as_deref(),
            Some("/")
        );
        assert!(MemoryHierarchy::from_mountinfo(MOUNTINFO_V2, |_| false).is_none());
    }

    #[test]
    fn mountinfo_octal_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }

    /// Found by the `cgroup_path` fuzz target: `\440` is no byte (it overflowed a u8).
    #[test]
    fn mountinfo_escape_beyond_a_byte_is_literal() {
        assert_eq!(unescape_mountinfo("a\\440b\\377"), "a\\440b\u{fffd}");
        assert_eq!(unescape_mountinfo("\\04"), "\\04");
    }

    #[test]
    fn resolves_this_hosts_root_and_a_new_cgroup() {
        let Ok(h) = MemoryHierarchy::detect() else {
            eprintln!("skipped: no memory cgroup hierarchy on this machine");
            return;
        };
        let mut r = CgroupResolver::new(h.clone());
        let root_id = id_of(&h.root).expect("root id");
        assert_eq!(r.path(root_id).as_deref(), Some("/"));
        assert_eq!(r.path(0), None);
    }

    #[test]
    fn removed_cgroups_are_forgotten_after_the_grace_period() {
        let root = std::env::temp_dir().join(format!("oomtrace-resolver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b")).expect("dirs");
        std::fs::create_dir_all(root.join("c")).expect("dirs");
        let h = MemoryHierarchy {
            root: root.clone(),
            version: CgroupVersion::V2,
        };
        let (a, b, c) = (
            id_of(&root.join("a")).expect("a"),
            id_of(&root.join("a/b")).expect("b"),
            id_of(&root.join("c")).expect("c"),
        );
        let mut r = CgroupResolver::new(h);
        assert_eq!(r.len(), 4, "root, a, a/b, c");
        let t0 = Instant::now();
        // A path learned at a kill, of a cgroup never seen in the tree.
        r.learn([(99, "/gone-before-the-walk".to_string())]);
        std::fs::remove_dir(root.join("a/b")).expect("rmdir");
        r.rescan_at(t0 + Duration::from_secs(60));
        assert_eq!(r.known(b), Some("/a/b"), "removed 1 min ago: kept");
        assert_eq!(r.known(99), Some("/gone-before-the-walk"));
        r.rescan_at(t0 + FORGET_AFTER + Duration::from_secs(1));
        assert_eq!(r.known(b), None, "removed more than 5 min ago: forgotten");
        assert_eq!(r.known(99), None);
        // Live ones stay however old.
        assert_eq!(r.known(a), Some("/a"));
        assert_eq!(r.known(c), Some("/c"));
        assert_eq!(r.len(), 3);
        let _ = std::fs::remove_dir_all(&root);
    }
}
