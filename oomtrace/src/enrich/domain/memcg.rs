//! What the cgroup files say about an OOM domain: the processes of the OOM memcg and its
//! descendants, its children's usage, `memory.oom.group`, the size of the domain, and for a
//! global OOM how much the limits on the node add up to.
use std::path::{Path, PathBuf};

use crate::cgroup::{
    is_under,
    memory::{scan_limited, MemoryFiles},
    CgroupVersion, MemoryHierarchy,
};

/// How deep below the OOM memcg the walk for processes goes.
const MAX_DEPTH: usize = 16;

/// The pids in `dir`'s `cgroup.procs` (v1 and v2 both list processes there).
fn procs(dir: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Child cgroup directories of `dir` (symlinks are not followed).
fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Every process of the OOM memcg at `path` and its descendants, with the cgroup each sits
/// in; `None` when the OOM memcg's own `cgroup.procs` cannot be read (it is gone).
pub(super) fn domain_procs(h: &MemoryHierarchy, path: &str) -> Option<Vec<(u32, String)>> {
    let top = h.dir(path);
    let mut out: Vec<(u32, String)> = procs(&top)?
        .into_iter()
        .map(|pid| (pid, path.to_string()))
        .collect();
    let mut stack: Vec<(PathBuf, usize)> = child_dirs(&top).into_iter().map(|d| (d, 1)).collect();
    while let Some((dir, depth)) = stack.pop() {
        let Some(rel) = h.relative(&dir) else {
            continue;
        };
        // A cgroup removed during the walk has no procs: skip it.
        out.extend(
            procs(&dir)
                .into_iter()
                .flatten()
                .map(|pid| (pid, rel.clone())),
        );
        if depth < MAX_DEPTH {
            stack.extend(child_dirs(&dir).into_iter().map(|d| (d, depth + 1)));
        }
    }
    Some(out)
}

/// A child of the OOM memcg: (path, usage, own limit).
pub(super) type Child = (String, u64, Option<u64>);

/// The OOM memcg's direct children with their usage and own limit; `None` when its directory
/// cannot be read. A child gone during the read is left out.
pub(super) fn children(h: &MemoryHierarchy, path: &str) -> Option<Vec<Child>> {
    let top = h.dir(path);
    std::fs::metadata(&top).ok()?;
    Some(
        child_dirs(&top)
            .into_iter()
            .filter_map(|dir| {
                let files = MemoryFiles::new(&dir, h.version);
                let usage = files.usage_bytes().ok()?;
                let limit = files.limit_bytes().ok()?;
                Some((h.relative(&dir)?, usage, limit))
            })
            .collect(),
    )
}

/// v2 `memory.oom.group` of the OOM memcg (v1 has none).
pub(super) fn group_kill(h: &MemoryHierarchy, path: &str) -> Option<bool> {
    if h.version != CgroupVersion::V2 {
        return None;
    }
    let text = std::fs::read_to_string(h.dir(path).join("memory.oom.group")).ok()?;
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// The swap a memcg may use on top of its memory limit, in bytes (`None`: no limit on it):
/// v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes` minus the memory limit.
fn swap_allowance(h: &MemoryHierarchy, path: &str, limit_bytes: u64) -> Option<u64> {
    let dir = h.dir(path);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    match h.version {
        CgroupVersion::V2 => {
            let text = read("memory.swap.max")?;
            text.trim().parse().ok()
        }
        CgroupVersion::V1 => {
            let memsw: u64 = read("memory.memsw.limit_in_bytes")?.trim().parse().ok()?;
            // v1 prints "unlimited" as a huge page-rounded LONG_MAX.
            (memsw < 1 << 62).then(|| memsw.saturating_sub(limit_bytes))
        }
    }
}

/// The size of a memcg OOM's domain in pages as `mem_cgroup_get_max()` computes it: the limit,
/// plus the swap the memcg may use, at most all of it (swappiness left aside).
pub(super) fn memcg_totalpages(
    h: &MemoryHierarchy,
    path: &str,
    limit_bytes: u64,
    swap_total_bytes: u64,
    page_size: u64,
) -> u64 {
    let swap = if swap_total_bytes == 0 {
        0
    } else {
        swap_allowance(h, path, limit_bytes)
            .unwrap_or(swap_total_bytes)
            .min(swap_total_bytes)
    };
    (limit_bytes + swap) / page_size
}

/// The limits of the top-most limited cgroups (so nested limits count once): their sum and
/// how many.
pub(super) fn top_limits(h: &MemoryHierarchy) -> (u64, usize) {
    // Shallowest first: an ancestor is always seen before its descendants.
    let limited = scan_limited(h, usize::MAX);
    let mut tops: Vec<(&str, u64)> = Vec::new();
    for c in &limited {
        if !tops.iter().any(|(p, _)| is_under(&c.path, p)) {
            tops.push((&c.path, c.limit_bytes));
        }
    }
    let sum = tops.iter().fold(0u64, |s, (_, l)| s.saturating_add(*l));
    (sum, tops.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake v2 hierarchy in a temp dir, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "oomtrace-domain-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }

        fn file(&self, rel: &str, text: &str) -> &Self {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
            std::fs::write(p, text).expect("write");
            self
        }

        fn hierarchy(&self, version: CgroupVersion) -> MemoryHierarchy {
            MemoryHierarchy {
                root: self.0.clone(),
                version,
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn procs_of_the_domain_and_its_children() {
        let t = Tree::new();
        t.file("pod/cgroup.procs", "")
            .file("pod/memory.max", "67108864\n")
            .file("pod/memory.oom.group", "1\n")
            .file("pod/app/cgroup.procs", "11\n12\n")
            .file("pod/app/memory.current", "1048576\n")
            .file("pod/app/memory.max", "max\n")
            .file("pod/sidecar/cgroup.procs", "21\n")
            .file("pod/sidecar/memory.current", "50331648\n")
            .file("pod/sidecar/memory.max", "58720256\n")
            .file("pod/sidecar/inner/cgroup.procs", "22\n")
            .file("other/cgroup.procs", "31\n")
            .file("other/memory.max", "1048576\n");
        let h = t.hierarchy(CgroupVersion::V2);
        let mut got = domain_procs(&h, "/pod").expect("domain");
        got.sort();
        assert_eq!(
            got,
            [
                (11, "/pod/app".to_string()),
                (12, "/pod/app".to_string()),
                (21, "/pod/sidecar".to_string()),
                (22, "/pod/sidecar/inner".to_string()),
            ]
        );
        assert_eq!(domain_procs(&h, "/gone"), None);
        assert_eq!(
            children(&h, "/pod").expect("children"),
            [
                ("/pod/app".to_string(), 1 << 20, None),
                ("/pod/sidecar".to_string(), 48 << 20, Some(56 << 20)),
            ]
        );
        assert_eq!(group_kill(&h, "/pod"), Some(true));
        assert_eq!(group_kill(&h, "/other"), None, "no file");
        assert_eq!(group_kill(&t.hierarchy(CgroupVersion::V1), "/pod"), None);
        // Nested limits count once: /pod (64 MiB) covers its sidecar's.
        assert_eq!(top_limits(&h), ((64 << 20) + (1 << 20), 2));
    }

    #[test]
    fn totalpages_with_and_without_swap() {
        let t = Tree::new();
        t.file("a/memory.swap.max", "8388608\n")
            .file("b/memory.swap.max", "max\n");
        let h = t.hierarchy(CgroupVersion::V2);
        assert_eq!(memcg_totalpages(&h, "/a", 64 << 20, 0, 4096), 16384);
        assert_eq!(
            memcg_totalpages(&h, "/a", 64 << 20, 1 << 30, 4096),
            16384 + 2048
        );
        assert_eq!(
            memcg_totalpages(&h, "/b", 64 << 20, 4 << 20, 4096),
            16384 + 1024
        );
        let t1 = Tree::new();
        t1.file("a/memory.memsw.limit_in_bytes", "9223372036854771712\n")
            .file("b/memory.memsw.limit_in_bytes", "71303168\n");
        let h1 = t1.hierarchy(CgroupVersion::V1);
        // memory+swap unlimited: all the swap there is.
        assert_eq!(
            memcg_totalpages(&h1, "/a", 64 << 20, 1 << 30, 4096),
            16384 + 262144
        );
        assert_eq!(
            memcg_totalpages(&h1, "/b", 64 << 20, 1 << 30, 4096),
            16384 + 1024
        );
    }
}
