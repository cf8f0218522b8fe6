//! A memory cgroup's own files, for cgroup v1 and v2: usage, limit, `memory.stat`, the OOM
//! event counters and PSI (`memory.pressure`), plus a cheap walk that finds every cgroup with a
//! memory limit.
//!
//! Values the kernel does not report are `None`, never a made-up 0 (DESIGN §5). The directory
//! is the cgroup's own (`<hierarchy root>/<path>`); see [`crate::cgroup`] for the hierarchy and
//! for cgroup ids.
use std::{
    collections::{HashMap, VecDeque},
    io,
    path::{Path, PathBuf},
};

use crate::cgroup::{id_of, CgroupVersion, MemoryHierarchy};

/// cgroup v1 prints "no limit" as the largest page-aligned `LONG_MAX`
/// (`9223372036854771712` with 4 KiB pages, less with larger pages); any limit at or above 2^62
/// bytes is treated as none.
const V1_NO_LIMIT_FROM: u64 = 1 << 62;

/// How deep below the hierarchy root [`scan_limited`] looks.
const MAX_SCAN_DEPTH: usize = 16;

/// A cgroup file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum CgroupFileError {
    /// Reading the file failed (for a vanished cgroup: `NotFound`, see
    /// [`CgroupFileError::is_not_found`]).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the read returned.
        source: io::Error,
    },
    /// The file's contents are not in the expected format.
    #[error("cannot parse {}: {reason} (in {text:?})", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line or value that did not parse.
        text: String,
        /// What was expected.
        reason: String,
    },
}

impl CgroupFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Parse { path, .. } => path,
        }
    }

    /// Whether the file does not exist: the cgroup is gone, or this kernel lacks the file.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

fn read(path: &Path) -> Result<String, CgroupFileError> {
    std::fs::read_to_string(path).map_err(|source| CgroupFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_error(path: &Path, text: &str, reason: impl Into<String>) -> CgroupFileError {
    CgroupFileError::Parse {
        path: path.to_path_buf(),
        text: text.to_string(),
        reason: reason.into(),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupFileError> {
    let value = text.trim();
    value
        .parse()
        .map_err(|_| parse_error(path, value, "expected an unsigned integer"))
}

/// A limit file's value: v2 `memory.max` (`max` = none), v1 `memory.limit_in_bytes` (at or
/// above 2^62 = none).
fn parse_limit(
    path: &Path,
    text: &str,
    version: CgroupVersion,
) -> Result<Option<u64>, CgroupFileError> {
    if version == CgroupVersion::V2 && text.trim() == "max" {
        return Ok(None);
    }
    let bytes = parse_u64(path, text)?;
    Ok(match version {
        CgroupVersion::V1 if bytes >= V1_NO_LIMIT_FROM => None,
        _ => Some(bytes),
    })
}

fn limit_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    }
}

/// A flat keyed file (`name value` per line, as `memory.stat`, `memory.events` and
/// `memory.oom_control`). Only the values asked for are parsed; the first of duplicate names
/// wins.
struct Keyed<'a> {
    path: &'a Path,
    values: HashMap<&'a str, &'a str>,
}

impl<'a> Keyed<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let mut values = HashMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some(name), Some(value)) = (words.next(), words.next()) {
                values.entry(name).or_insert(value);
            }
        }
        Self { path, values }
    }

    fn get(&self, name: &str) -> Result<Option<u64>, CgroupFileError> {
        self.values
            .get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    parse_error(
                        self.path,
                        &format!("{name} {v}"),
                        "expected an unsigned integer",
                    )
                })
            })
            .transpose()
    }

    /// Every line whose value is a number, by name.
    fn counters(&self) -> HashMap<String, u64> {
        self.values
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    }

    /// v1 `memory.stat`: the hierarchical `total_<name>` (this cgroup and its descendants, as
    /// `memory.usage_in_bytes` counts) when present, else the plain `<name>`.
    fn hierarchical(&self, name: &str) -> Result<Option<u64>, CgroupFileError> {
        match self.get(&format!("total_{name}"))? {
            Some(v) => Ok(Some(v)),
            None => self.get(name),
        }
    }
}

/// The files of one memory cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFiles {
    dir: PathBuf,
    version: CgroupVersion,
}

impl MemoryFiles {
    /// The cgroup at `dir` (a directory of a `version` memory hierarchy).
    pub fn new(dir: impl Into<PathBuf>, version: CgroupVersion) -> Self {
        Self {
            dir: dir.into(),
            version,
        }
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hierarchy's version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A one-number file, `None` when it does not exist.
    fn optional_u64(&self, name: &str) -> Result<Option<u64>, CgroupFileError> {
        let path = self.file(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_u64(&path, &text).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CgroupFileError::Read { path, source }),
        }
    }

    /// Memory charged to the cgroup and its descendants, in bytes: v2 `memory.current`, v1
    /// `memory.usage_in_bytes`. (Neither file exists in the v2 root; in the v1 root the kernel
    /// computes the value from statistics: page cache + anon (+ swap), no kernel memory.)
    pub fn usage_bytes(&self) -> Result<u64, CgroupFileError> {
        let path = self.file(match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        });
        parse_u64(&path, &read(&path)?)
    }

    /// The hard limit in bytes, `None` when there is none: v2 `memory.max` (`max`), v1
    /// `memory.limit_in_bytes` (values at or above 2^62, as the page-rounded `LONG_MAX`
    /// `9223372036854771712` the kernel prints for "unlimited"). A v1 limit inherited from an
    /// ancestor is not this cgroup's limit (see `hierarchical_memory_limit` in v1 `memory.stat`).
    pub fn limit_bytes(&self) -> Result<Option<u64>, CgroupFileError> {
        let path = self.file(limit_file(self.version));
        parse_limit(&path, &read(&path)?, self.version)
    }

    /// The breakdown of the cgroup's memory, from `memory.stat` (see [`MemoryStat`] for which
    /// lines and files each field comes from).
    pub fn stat(&self) -> Result<MemoryStat, CgroupFileError> {
        let path = self.file("memory.stat");
        let text = read(&path)?;
        let stat = Keyed::new(&path, &text);
        Ok(match self.version {
            CgroupVersion::V2 => MemoryStat {
                anon: stat.get("anon")?,
                file: stat.get("file")?,
                shmem: stat.get("shmem")?,
                kernel: stat.get("kernel")?,
                kernel_stack: stat.get("kernel_stack")?,
                slab: stat.get("slab")?,
                sock: stat.get("sock")?,
                pagetables: stat.get("pagetables")?,
                swap: self.optional_u64("memory.swap.current")?,
                inactive_file: stat.get("inactive_file")?,
                active_file: stat.get("active_file")?,
                refaults: refaults(
                    stat.get("workingset_refault_anon")?,
                    stat.get("workingset_refault_file")?,
                    stat.get("workingset_refault")?,
                ),
                major_faults: stat.get("pgmajfault")?,
            },
            CgroupVersion::V1 => MemoryStat {
                anon: stat.hierarchical("rss")?,
                file: stat.hierarchical("cache")?,
                shmem: stat.hierarchical("shmem")?,
                kernel: self.v1_kmem_usage()?,
                kernel_stack: stat.hierarchical("kernel_stack")?,
                slab: stat.hierarchical("slab")?,
                sock: stat.hierarchical("sock")?,
                pagetables: stat.hierarchical("pagetables")?,
                swap: stat.hierarchical("swap")?,
                inactive_file: stat.hierarchical("inactive_file")?,
                active_file: stat.hierarchical("active_file")?,
                refaults: refaults(
                    stat.hierarchical("workingset_refault_anon")?,
                    stat.hierarchical("workingset_refault_file")?,
                    stat.hierarchical("workingset_refault")?,
                ),
                major_faults: stat.hierarchical("pgmajfault")?,
            },
        })
    }

    /// v1 `memory.kmem.usage_in_bytes` if it can be read at all (kernels may lack or refuse
    /// it); a value that reads but does not parse is an error.
    fn v1_kmem_usage(&self) -> Result<Option<u64>, CgroupFileError> {
        let path = self.file("memory.kmem.usage_in_bytes");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_u64(&path, &text).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The OOM-related event counters: v2 `memory.events` (this cgroup and its descendants);
    /// v1 `memory.failcnt` and `memory.oom_control` (`oom_kill`, kernel 4.13+, and
    /// `under_oom`).
    pub fn events(&self) -> Result<MemoryEvents, CgroupFileError> {
        match self.version {
            CgroupVersion::V2 => {
                let path = self.file("memory.events");
                let text = read(&path)?;
                let ev = Keyed::new(&path, &text);
                Ok(MemoryEvents {
                    low: ev.get("low")?,
                    high: ev.get("high")?,
                    max: ev.get("max")?,
                    oom: ev.get("oom")?,
                    oom_kill: ev.get("oom_kill")?,
                    oom_group_kill: ev.get("oom_group_kill")?,
                    ..MemoryEvents::default()
                })
            }
            CgroupVersion::V1 => {
                let failcnt_path = self.file("memory.failcnt");
                let failcnt = parse_u64(&failcnt_path, &read(&failcnt_path)?)?;
                let path = self.file("memory.oom_control");
                let text = read(&path)?;
                let oc = Keyed::new(&path, &text);
                Ok(MemoryEvents {
                    oom_kill: oc.get("oom_kill")?,
                    failcnt: Some(failcnt),
                    under_oom: oc.get("under_oom")?.map(|v| v != 0),
                    ..MemoryEvents::default()
                })
            }
        }
    }

    /// The cgroup's own memory event counters, by name: every counter of v2
    /// `memory.events.local` (not its descendants'), or v1 `failcnt` and `oom_kill`.
    pub fn own_event_counters(&self) -> Result<HashMap<String, u64>, CgroupFileError> {
        let path = self.file("memory.events.local");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(Keyed::new(&path, &text).counters());
        }
        let e = self.events()?;
        Ok([("failcnt", e.failcnt), ("oom_kill", e.oom_kill)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect())
    }

    /// Memory pressure stall information from `memory.pressure` (v2; v1 only where the kernel
    /// exposes PSI there). `Ok(None)` when the file does not exist (v1, the v2 root on older
    /// kernels, a kernel built without PSI) or reads `EOPNOTSUPP` (PSI disabled at boot or
    /// through `cgroup.pressure`).
    pub fn psi(&self) -> Result<Option<Psi>, CgroupFileError> {
        let path = self.file("memory.pressure");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                return Ok(None)
            }
            Err(source) => return Err(CgroupFileError::Read { path, source }),
        };
        Psi::parse(&path, &text).map(Some)
    }
}

/// Where a cgroup's memory went, in bytes. `None`: this kernel or hierarchy does not report it.
///
/// | field | cgroup v2 | cgroup v1 (`total_<x>` when present, else `<x>`) |
/// |---|---|---|
/// | `anon` | `memory.stat` `anon` | `memory.stat` `rss` (anon incl. THP) |
/// | `file` | `file` (page cache incl. shmem) | `cache` (incl. shmem) |
/// | `shmem` | `shmem` | `shmem` |
/// | `kernel` | `kernel` (5.18+; absent before) | `memory.kmem.usage_in_bytes` if readable |
/// | `kernel_stack` | `kernel_stack` | `kernel_stack` line if any (mainline has none) |
/// | `slab` | `slab` | `slab` line if any (mainline has none) |
/// | `sock` | `sock` | `sock` line if any (mainline has none) |
/// | `pagetables` | `pagetables` | `pagetables` line if any (mainline has none) |
/// | `swap` | `memory.swap.current` (absent: `None`) | `swap` (only with swap accounting) |
///
/// v2 values and v1 `total_*` lines cover the cgroup and its descendants, as its usage does; v1
/// plain lines count the cgroup's own pages only and are used only when `total_*` is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// Anonymous memory (heap, stacks, private mappings), THP included.
    pub anon: Option<u64>,
    /// Page cache, shared memory (tmpfs, shm) included.
    pub file: Option<u64>,
    /// Shared memory and tmpfs pages (also counted in `file`).
    pub shmem: Option<u64>,
    /// All kernel memory charged to the cgroup.
    pub kernel: Option<u64>,
    /// Kernel stacks of the cgroup's tasks.
    pub kernel_stack: Option<u64>,
    /// Slab objects (reclaimable and unreclaimable).
    pub slab: Option<u64>,
    /// Network socket buffers.
    pub sock: Option<u64>,
    /// Page tables.
    pub pagetables: Option<u64>,
    /// Swap used by the cgroup.
    pub swap: Option<u64>,
    /// Page cache on the inactive list: what reclaim frees first. Usage minus this is the
    /// working set, as the kubelet, cAdvisor and the VPA count it.
    pub inactive_file: Option<u64>,
    /// Page cache on the active list.
    pub active_file: Option<u64>,
    /// Pages refaulted soon after reclaim evicted them (`workingset_refault_anon` +
    /// `workingset_refault_file`; `workingset_refault` before 5.9), since the cgroup was made:
    /// a count, not bytes.
    pub refaults: Option<u64>,
    /// Major page faults (read from disk) of the cgroup's tasks since it was made: a count.
    pub major_faults: Option<u64>,
}

impl MemoryStat {
    /// Usage minus inactive page cache (the kubelet's working set), when the stat has the
    /// inactive file line.
    pub fn working_set(&self, usage_bytes: u64) -> Option<u64> {
        self.inactive_file
            .map(|inactive| usage_bytes.saturating_sub(inactive))
    }
}

/// Refaults from the split counters (5.9+), else the single old one.
fn refaults(anon: Option<u64>, file: Option<u64>, old: Option<u64>) -> Option<u64> {
    match (anon, file) {
        (None, None) => old,
        (a, f) => Some(a.unwrap_or(0).saturating_add(f.unwrap_or(0))),
    }
}

/// The cgroup's memory event counters. v2 fills `low` … `oom_group_kill`; v1 fills `failcnt`,
/// `oom_kill` and `under_oom`. `None`: not reported by this kernel or hierarchy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    /// v2: times usage fell under `memory.low` protection and was reclaimed anyway.
    pub low: Option<u64>,
    /// v2: times usage went over `memory.high` (throttled and reclaimed).
    pub high: Option<u64>,
    /// v2: times usage was about to go over `memory.max`.
    pub max: Option<u64>,
    /// v2: times the cgroup hit its limit and an OOM was invoked.
    pub oom: Option<u64>,
    /// Processes of the cgroup killed by any OOM killer (v2 `memory.events`, v1
    /// `memory.oom_control` 4.13+).
    pub oom_kill: Option<u64>,
    /// v2 (5.17+): times a `memory.oom.group` cgroup was killed as a whole.
    pub oom_group_kill: Option<u64>,
    /// v1 `memory.failcnt`: times a charge hit the limit.
    pub failcnt: Option<u64>,
    /// v1 `memory.oom_control` `under_oom`: the cgroup is in OOM right now (only stays set
    /// while the OOM killer is disabled for it).
    pub under_oom: Option<bool>,
}

/// One PSI line: the share of wall time (percent) stalled on memory over the last 10, 60 and
/// 300 seconds, and the total stall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiLine {
    /// Percent of the last 10 s.
    pub avg10: f64,
    /// Percent of the last 60 s.
    pub avg60: f64,
    /// Percent of the last 300 s.
    pub avg300: f64,
    /// Total stall time since the cgroup was created, in microseconds.
    pub total_us: u64,
}

impl PsiLine {
    /// Parses the fields after `some`/`full`: `avg10=0.00 avg60=0.00 avg300=0.00 total=0`.
    fn parse(path: &Path, line: &str, fields: &str) -> Result<Self, CgroupFileError> {
        let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
        for field in fields.split_whitespace() {
            let Some((name, value)) = field.split_once('=') else {
                return Err(parse_error(path, line, "expected name=value fields"));
            };
            let avg = || -> Result<f64, CgroupFileError> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| parse_error(path, line, format!("bad {name} value")))
            };
            match name {
                "avg10" => avg10 = Some(avg()?),
                "avg60" => avg60 = Some(avg()?),
                "avg300" => avg300 = Some(avg()?),
                "total" => {
                    total_us =
                        Some(value.parse::<u64>().map_err(|_| {
                            parse_error(path, line, "total is not an unsigned integer")
                        })?)
                }
                _ => {}
            }
        }
        match (avg10, avg60, avg300, total_us) {
            (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) => Ok(Self {
                avg10,
                avg60,
                avg300,
                total_us,
            }),
            _ => Err(parse_error(
                path,
                line,
                "expected avg10=, avg60=, avg300= and total=",
            )),
        }
    }
}

/// Memory pressure stall information (`memory.pressure`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psi {
    /// Time at least one task of the cgroup was stalled on memory.
    pub some: PsiLine,
    /// Time all non-idle tasks of the cgroup were stalled on memory at once (`None` if the
    /// file has no `full` line).
    pub full: Option<PsiLine>,
}

impl Psi {
    /// Parses a pressure file: a `some` line and, usually, a `full` line.
    fn parse(path: &Path, text: &str) -> Result<Self, CgroupFileError> {
        let (mut some, mut full) = (None, None);
        for line in text.lines() {
            let Some((kind, fields)) = line.trim().split_once(' ') else {
                continue;
            };
            match kind {
                "some" => some = Some(PsiLine::parse(path, line, fields)?),
                "full" => full = Some(PsiLine::parse(path, line, fields)?),
                _ => {}
            }
        }
        let some = some.ok_or_else(|| parse_error(path, text, "no `some` line"))?;
        Ok(Self { some, full })
    }
}

/// A cgroup with a finite memory limit, found by [`scan_limited`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedCgroup {
    /// The cgroup id (the directory's inode number).
    pub id: u64,
    /// The path relative to the hierarchy root, with a leading `/` (the root itself is `/`).
    pub path: String,
    /// The cgroup directory.
    pub dir: PathBuf,
    /// The limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub limit_bytes: u64,
}

/// Every cgroup of the hierarchy whose own limit is finite, at most `max` of them, shallowest
/// first (siblings by name). Walks breadth-first up to 16 levels below the root, does not
/// follow symlinks, reads only the limit file of each directory (and `stat`s the limited ones
/// for their id); directories that cannot be read, limits that do not parse and cgroups that
/// vanish during the walk are skipped silently.
pub fn scan_limited(h: &MemoryHierarchy, max: usize) -> Vec<LimitedCgroup> {
    let mut found = Vec::new();
    if max == 0 {
        return found;
    }
    let limit_name = limit_file(h.version);
    let mut queue = VecDeque::from([(h.root.clone(), 0usize)]);
    while let Some((dir, depth)) = queue.pop_front() {
        let limit_path = dir.join(limit_name);
        let limit = std::fs::read_to_string(&limit_path)
            .ok()
            .and_then(|text| parse_limit(&limit_path, &text, h.version).ok().flatten());
        if let Some(limit_bytes) = limit {
            if let (Ok(id), Some(path)) = (id_of(&dir), h.relative(&dir)) {
                found.push(LimitedCgroup {
                    id,
                    path,
                    dir: dir.clone(),
                    limit_bytes,
                });
                if found.len() >= max {
                    break;
                }
            }
        }
        if depth >= MAX_SCAN_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut children: Vec<PathBuf> = entries
            .flatten()
            // DirEntry::file_type does not follow symlinks.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        children.sort();
        queue.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temporary directory, removed (with its contents) on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "oomtrace-cgmem-{}-{tag}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, rel: &str, contents: &str) -> &Self {
            let path = self.0.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create fixture dir");
            }
            std::fs::write(&path, contents).expect("write fixture");
            self
        }

        fn files(&self, version: CgroupVersion) -> MemoryFiles {
            MemoryFiles::new(&self.0, version)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // Copied from this machine's cgroup v1 root (/sys/fs/cgroup/memory, kernel 6.18).
    const V1_ROOT_STAT: &str = "\
cache 9142272
rss 5013504
rss_huge 0
shmem 8998912
mapped_file 7495680
dirty 12288
writeback 0
workingset_refault_anon 0
workingset_refault_file 3502
swap 0
swapcached 0
pgpgin 102997
pgpgout 99541
pgfault 155947
pgmajfault 0
inactive_anon 0
active_anon 1531904
inactive_file 8192
active_file 135168
unevictable 12480512
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 56967168
total_rss 8884224
total_rss_huge 0
total_shmem 8998912
total_mapped_file 10817536
total_dirty 102400
total_writeback 0
total_workingset_refault_anon 0
total_workingset_refault_file 7980126
total_swap 0
total_swapcached 0
total_pgpgin 165008619
total_pgpgout 164993193
total_pgfault 181984396
total_pgmajfault 48892
total_inactive_anon 3731456
total_active_anon 1560576
total_inactive_file 26099712
total_active_file 21868544
total_unevictable 12480512
";
    const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
    const V1_NO_LIMIT: &str = "9223372036854771712\n";

    // cgroup v2 files as a 6.x kernel writes them (memory.stat in 6.8's order and names).
    const V2_STAT_6X: &str = "\
anon 104857600
file 52428800
kernel 9437184
kernel_stack 393216
pagetables 1048576
sec_pagetables 0
percpu 72960
sock 8192
vmalloc 20480
shmem 4194304
zswap 0
zswapped 0
file_mapped 20971520
file_dirty 135168
file_writeback 0
swapcached 0
anon_thp 62914560
file_thp 0
shmem_thp 0
inactive_anon 100663296
active_anon 8388608
inactive_file 31457280
active_file 16777216
unevictable 0
slab_reclaimable 5242880
slab_unreclaimable 2097152
slab 7340032
workingset_refault_anon 0
workingset_refault_file 1520
workingset_activate_anon 0
workingset_activate_file 310
workingset_restore_anon 0
workingset_restore_file 12
workingset_nodereclaim 0
pgscan 48213
pgsteal 40007
pgscan_kswapd 0
pgscan_direct 48213
pgscan_khugepaged 0
pgsteal_kswapd 0
pgsteal_direct 40007
pgsteal_khugepaged 0
pgfault 912345
pgmajfault 87
pgrefill 1024
pgactivate 2048
pgdeactivate 512
pglazyfree 0
pglazyfreed 0
zswpin 0
zswpout 0
zswpwb 0
thp_fault_alloc 30
thp_collapse_alloc 0
thp_swpout 0
thp_swpout_fallback 0
";
    // The head of a 5.15 memory.stat: no `kernel` line yet (added in 5.18).
    const V2_STAT_515: &str = "\
anon 2199552
file 1073152
kernel_stack 49152
pagetables 139264
percpu 0
sock 0
shmem 0
file_mapped 888832
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 2158592
active_anon 40960
inactive_file 581632
active_file 491520
unevictable 0
slab_reclaimable 170064
slab_unreclaimable 178344
slab 348408
";
    const V2_EVENTS: &str =
        "low 0\nhigh 17\nmax 1274\noom 3\noom_kill 3\noom_group_kill 1\nsock_throttled 0\n";
    const V2_PRESSURE: &str = "\
some avg10=2.04 avg60=0.75 avg300=0.18 total=4381207
full avg10=1.52 avg60=0.55 avg300=0.13 total=3187420
";

    #[test]
    fn v1_root_stat_prefers_hierarchical_totals() {
        let t = TempDir::new("v1stat");
        t.write("memory.stat", V1_ROOT_STAT)
            .write("memory.kmem.usage_in_bytes", "165146624\n");
        let s = t.files(CgroupVersion::V1).stat().expect("stat");
        assert_eq!(
            s,
            MemoryStat {
                anon: Some(8884224),
                file: Some(56967168),
                shmem: Some(8998912),
                kernel: Some(165146624),
                kernel_stack: None,
                slab: None,
                sock: None,
                pagetables: None,
                swap: Some(0),
                inactive_file: Some(26099712),
                active_file: Some(21868544),
                refaults: Some(7980126),
                major_faults: Some(48892),
            }
        );
    }

    #[test]
    fn v1_stat_without_totals_kmem_or_swap_accounting() {
        let t = TempDir::new("v1plain");
        // The plain lines of the fixture only, without `swap` (no swap accounting).
        let plain: String = V1_ROOT_STAT
            .lines()
            .take_while(|l| !l.starts_with("total_"))
            .filter(|l| !l.starts_with("swap "))
            .map(|l| format!("{l}\n"))
            .collect();
        t.write("memory.stat", &plain);
        let s = t.files(CgroupVersion::V1).stat().expect("stat");
        assert_eq!(
            s,
            MemoryStat {
                anon: Some(5013504),
                file: Some(9142272),
                shmem: Some(8998912),
                inactive_file: Some(8192),
                active_file: Some(135168),
                refaults: Some(3502),
                major_faults: Some(0),
                ..MemoryStat::default()
            }
        );
    }

    #[test]
    fn v1_limit_usage_and_events() {
        let t = TempDir::new("v1files");
        t.write("memory.limit_in_bytes", V1_NO_LIMIT)
            .write("memory.usage_in_bytes", "65728512\n")
            .write("memory.failcnt", "0\n")
            .write("memory.oom_control", V1_OOM_CONTROL);
        let f = t.files(CgroupVersion::V1);
        assert_eq!(f.limit_bytes().expect("limit"), None);
        assert_eq!(f.usage_bytes().expect("usage"), 65728512);
        let ev = f.events().expect("events");
        assert_eq!(
            ev,
            MemoryEvents {
                oom_kill: Some(0),
                failcnt: Some(0),
                under_oom: Some(false),
                ..MemoryEvents::default()
            }
        );
        // No PSI on this v1 hierarchy.
        assert_eq!(f.psi().expect("psi"), None);

        t.write("memory.limit_in_bytes", "33554432\n")
            .write("memory.failcnt", "412\n")
            .write(
                "memory.oom_control",
                "oom_kill_disable 1\nunder_oom 1\noom_kill 2\n",
            );
        assert_eq!(f.limit_bytes().expect("limit"), Some(33554432));
        let ev = f.events().expect("events");
        assert_eq!(
            (ev.failcnt, ev.oom_kill, ev.under_oom),
            (Some(412), Some(2), Some(true))
        );
        // 64 KiB pages round LONG_MAX down further; still no limit.
        t.write("memory.limit_in_bytes", "9223372036854710272\n");
        assert_eq!(f.limit_bytes().expect("limit"), None);
        // Before 4.13 there is no oom_kill line.
        t.write("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
        assert_eq!(f.events().expect("events").oom_kill, None);
    }

    #[test]
    fn own_event_counters_local_on_v2_failcnt_and_oom_kill_on_v1() {
        let t = TempDir::new("ownevents");
        t.write(
            "memory.events.local",
            "low 0\nhigh 3\nmax 7\noom 1\noom_kill 1\nsock_throttled 2\n",
        );
        let own = t
            .files(CgroupVersion::V2)
            .own_event_counters()
            .expect("own");
        assert_eq!(own.len(), 6);
        assert_eq!(
            (own["max"], own["oom_kill"], own["sock_throttled"]),
            (7, 1, 2)
        );
        let t = TempDir::new("ownevents-v1");
        t.write("memory.failcnt", "412\n").write(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        let own = t
            .files(CgroupVersion::V1)
            .own_event_counters()
            .expect("own");
        assert_eq!(own.len(), 2);
        assert_eq!((own["failcnt"], own["oom_kill"]), (412, 3));
    }

    #[test]
    fn v2_stat_events_pressure() {
        let t = TempDir::new("v2files");
        t.write("memory.stat", V2_STAT_6X)
            .write("memory.swap.current", "1835008\n")
            .write("memory.current", "163577856\n")
            .write("memory.max", "max\n")
            .write("memory.events", V2_EVENTS)
            .write("memory.pressure", V2_PRESSURE);
        let f = t.files(CgroupVersion::V2);
        assert_eq!(f.usage_bytes().expect("usage"), 163577856);
        assert_eq!(f.limit_bytes().expect("limit"), None);
        let s = f.stat().expect("stat");
        assert_eq!(
            s,
            MemoryStat {
                anon: Some(104857600),
                file: Some(52428800),
                shmem: Some(4194304),
                kernel: Some(9437184),
                kernel_stack: Some(393216),
                slab: Some(7340032),
                sock: Some(8192),
                pagetables: Some(1048576),
                swap: Some(1835008),
                inactive_file: Some(31457280),
                active_file: Some(16777216),
                refaults: Some(1520),
                major_faults: Some(87),
            }
        );

        let ev = f.events().expect("events");
        assert_eq!(
            ev,
            MemoryEvents {
                low: Some(0),
                high: Some(17),
                max: Some(1274),
                oom: Some(3),
                oom_kill: Some(3),
                oom_group_kill: Some(1),
                failcnt: None,
                under_oom: None,
            }
        );

        let psi = f.psi().expect("psi").expect("present");
        assert_eq!(
            psi,
            Psi {
                some: PsiLine {
                    avg10: 2.04,
                    avg60: 0.75,
                    avg300: 0.18,
                    total_us: 4381207
                },
                full: Some(PsiLine {
                    avg10: 1.52,
                    avg60: 0.55,
                    avg300: 0.13,
                    total_us: 3187420
                }),
            }
        );

        t.write("memory.max", "67108864\n");
        assert_eq!(f.limit_bytes().expect("limit"), Some(67108864));
    }

    #[test]
    fn v2_old_kernel_no_kernel_line_no_swap_file_no_group_kill() {
        let t = TempDir::new("v2old");
        t.write("memory.stat", V2_STAT_515)
            .write("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
            .write(
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            );
        let f = t.files(CgroupVersion::V2);
        let s = f.stat().expect("stat");
        assert_eq!(
            s,
            MemoryStat {
                anon: Some(2199552),
                file: Some(1073152),
                shmem: Some(0),
                kernel: None,
                kernel_stack: Some(49152),
                slab: Some(348408),
                sock: Some(0),
                pagetables: Some(139264),
                swap: None,
                inactive_file: Some(581632),
                active_file: Some(491520),
                refaults: None,
                major_faults: None,
            }
        );
        assert_eq!(f.events().expect("events").oom_group_kill, None);
        let psi = f.psi().expect("psi").expect("present");
        assert_eq!(psi.full, None);
    }

    #[test]
    fn malformed_contents_are_errors_with_the_path() {
        let t = TempDir::new("bad");
        t.write("memory.current", "lots\n")
            .write("memory.max", "-1\n")
            .write("memory.stat", "anon 12\nfile twelve\n")
            .write(
                "memory.pressure",
                "some avg10=x avg60=0.00 avg300=0.00 total=0\n",
            );
        let f = t.files(CgroupVersion::V2);
        let e = f.usage_bytes().expect_err("not a number");
        assert_eq!(e.path(), t.0.join("memory.current"));
        assert!(e.to_string().contains("\"lots\""), "{e}");
        assert!(f.limit_bytes().is_err());
        let e = f.stat().expect_err("bad file line");
        assert!(e.to_string().contains("\"file twelve\""), "{e}");
        assert!(f.psi().is_err());
        t.write(
            "memory.pressure",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        assert!(f.psi().is_err(), "no some line");
        t.write(
            "memory.pressure",
            "some avg10=nan avg60=0.00 avg300=0.00 total=0\n",
        );
        assert!(f.psi().is_err(), "NaN is not a percentage");
        let e = f.events().expect_err("absent");
        assert!(e.is_not_found());
    }

    #[test]
    fn scan_limited_fake_v2_tree() {
        let t = TempDir::new("scan");
        // The v2 root has no memory.max.
        t.write("a/memory.max", "max\n")
            .write("a/b/memory.max", "67108864\n")
            .write("c/memory.max", "67108864\n")
            .write("c/d/memory.current", "0\n")
            .write("e/memory.max", "garbage\n");
        // 17 levels; the limits at depth 16 and 17 (only the first is within reach).
        let deep: Vec<String> = (1..=17).map(|i| format!("l{i}")).collect();
        let depth16 = deep[..16].join("/");
        let depth17 = deep.join("/");
        t.write(&format!("{depth16}/memory.max"), "1048576\n")
            .write(&format!("{depth17}/memory.max"), "2097152\n");
        // A symlink to a limited cgroup is not followed.
        std::os::unix::fs::symlink(t.0.join("a/b"), t.0.join("link")).expect("symlink");

        let h = MemoryHierarchy {
            root: t.0.clone(),
            version: CgroupVersion::V2,
        };
        let ino = |rel: &str| id_of(&t.0.join(rel)).expect("inode");
        let want = vec![
            LimitedCgroup {
                id: ino("c"),
                path: "/c".into(),
                dir: t.0.join("c"),
                limit_bytes: 67108864,
            },
            LimitedCgroup {
                id: ino("a/b"),
                path: "/a/b".into(),
                dir: t.0.join("a/b"),
                limit_bytes: 67108864,
            },
            LimitedCgroup {
                id: ino(&depth16),
                path: format!("/{depth16}"),
                dir: t.0.join(&depth16),
                limit_bytes: 1048576,
            },
        ];
        assert_eq!(scan_limited(&h, 100), want);
        assert_eq!(scan_limited(&h, 2), want[..2]);
        assert_eq!(scan_limited(&h, 0), []);
        assert_ne!(ino("c"), ino("a/b"));
    }

    #[test]
    fn scan_limited_v1_root_limit_is_found_as_slash() {
        let t = TempDir::new("scanv1");
        t.write("memory.limit_in_bytes", "33554432\n")
            .write("x/memory.limit_in_bytes", V1_NO_LIMIT);
        let h = MemoryHierarchy {
            root: t.0.clone(),
            version: CgroupVersion::V1,
        };
        let found = scan_limited(&h, 10);
        assert_eq!(
            found,
            [LimitedCgroup {
                id: id_of(&t.0).expect("inode"),
                path: "/".into(),
                dir: t.0.clone(),
                limit_bytes: 33554432,
            }]
        );
    }

    /// Removes a cgroup directory on drop, also when the test fails.
    struct RemoveCgroup(PathBuf);

    impl Drop for RemoveCgroup {
        fn drop(&mut self) {
            if let Err(e) = std::fs::remove_dir(&self.0) {
                eprintln!("cannot remove {}: {e}", self.0.display());
            }
        }
    }

    #[test]
    fn real_cgroup_with_a_32_mib_limit() {
        let skip = |why: &str| {
            assert!(
                std::env::var_os("OOMTRACE_TEST_NO_SKIP").is_none_or(|v| v.is_empty()),
                "cannot run here ({why}), and OOMTRACE_TEST_NO_SKIP forbids skipping"
            );
            eprintln!("skipped: {why}");
        };
        if !crate::capture::tracer::is_root() {
            return skip("needs root to create a memory cgroup");
        }
        let h = match MemoryHierarchy::detect() {
            Ok(h) => h,
            Err(e) => return skip(&e.to_string()),
        };
        if h.version == CgroupVersion::V2 {
            let _ = std::fs::write(h.root.join("cgroup.subtree_control"), "+memory");
        }
        let name = format!("oomtrace-cgmem-test-{}", std::process::id());
        let dir = h.root.join(&name);
        std::fs::create_dir(&dir).expect("create the test cgroup");
        let _remove = RemoveCgroup(dir.clone());
        std::fs::write(dir.join(limit_file(h.version)), "33554432").expect("set the limit");

        let f = MemoryFiles::new(&dir, h.version);
        assert_eq!(f.limit_bytes().expect("limit"), Some(33554432));
        f.usage_bytes().expect("usage");
        let s = f.stat().expect("stat");
        // No task has ever run in it.
        assert_eq!(s.anon, Some(0), "{s:?}");
        let ev = f.events().expect("events");
        assert_eq!(ev.oom_kill, Some(0), "{ev:?}");
        match h.version {
            CgroupVersion::V1 => assert_eq!(ev.failcnt, Some(0), "{ev:?}"),
            CgroupVersion::V2 => assert_eq!(ev.max, Some(0), "{ev:?}"),
        }
        f.psi().expect("psi");

        let found = scan_limited(&h, usize::MAX);
        let mine: Vec<_> = found.iter().filter(|c| c.dir == dir).collect();
        assert_eq!(
            mine,
            [&LimitedCgroup {
                id: id_of(&dir).expect("inode"),
                path: format!("/{name}"),
                dir: dir.clone(),
                limit_bytes: 33554432,
            }]
        );
    }
}
