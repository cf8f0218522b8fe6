//! Who a victim was: its executable, command line (redacted, truncated), the runtime memory
//! settings of its environment and whether it was its container's init.
//!
//! A dying process has no command line or environment left to read, so identities are taken
//! while processes live and kept in a [`ProcessCache`] by process id: at start-up for every
//! process ([`ProcessCache::seed`]), at each exec the kernel reports
//! ([`ProcessCache::on_exec`]), and for processes that appeared since without an exec seen
//! (forked children) at each [`ProcessCache::sweep`]. A kill looks its victim up there, else
//! reads `/proc` at once, else takes the identity of the parent it was forked from.
mod procfs;
mod redact;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use procfs::{ProcDir, ProcError, Stat};
pub use redact::{RedactError, Redactor, DEFAULT_PATTERN as DEFAULT_REDACT_PATTERN, REDACTED};

/// Bytes of the space-joined arguments kept.
pub const COMMAND_LINE_MAX: usize = 1024;

/// Processes remembered at most; beyond, the oldest entry makes room.
const MAX_ENTRIES: usize = 65536;

/// How long an entry outlives its process: the kill record of a victim arrives a few ms after
/// the kernel chose it, and a sweep may run in between.
const GONE_GRACE: Duration = Duration::from_secs(10);

/// Where an identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// Read from `/proc` when the kernel reported the process's exec.
    Exec,
    /// Read from `/proc` by the scan at start-up.
    Seed,
    /// Read from `/proc` by a periodic scan: the process appeared without an exec seen (a
    /// forked child), or its exec record was lost.
    Scan,
    /// Read from `/proc` when its kill was recorded (not cached before).
    Kill,
    /// The identity of the process it was forked from (it never exec'd, and its own could not
    /// be read any more).
    Parent,
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Exec => "exec",
            IdentitySource::Seed => "seed",
            IdentitySource::Scan => "scan",
            IdentitySource::Kill => "kill",
            IdentitySource::Parent => "parent",
        }
    }
}

/// Who a process was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Where `/proc/PID/exe` pointed (absent without CAP_SYS_PTRACE for another user's process).
    pub executable: Option<String>,
    /// `argv`, secret values redacted, cut so that the space-joined length is at most
    /// [`COMMAND_LINE_MAX`] bytes.
    pub args: Vec<String>,
    /// The whole length of `/proc/PID/cmdline` (each argument and its NUL), before any cut.
    pub command_line_bytes: u64,
    /// Whether `args` lost arguments (or the end of one) to the cut.
    pub truncated: bool,
    /// The allowlisted variables that were set (`procfs::ENV_ALLOWLIST`), values redacted as
    /// option strings. Empty also when `environ` could not be read: see `env_read`.
    pub env: BTreeMap<String, String>,
    /// Whether `environ` was read (`env` is then every allowlisted variable that was set).
    pub env_read: bool,
    /// PID 1 of its PID namespace (a container's init).
    pub container_init: Option<bool>,
    pub source: IdentitySource,
}

impl ProcessIdentity {
    /// The arguments joined by spaces.
    pub fn command_line(&self) -> String {
        self.args.join(" ")
    }
}

/// One remembered process.
#[derive(Debug, Clone)]
struct Entry {
    /// `None`: nothing to read (a kernel thread, or gone before it could be read).
    identity: Option<ProcessIdentity>,
    start_time: u64,
    /// When a sweep first found the process gone (or its pid taken by another process).
    gone_since: Option<Instant>,
    /// Insertion order, to evict the oldest entry when full.
    seq: u64,
}

/// What [`ProcessCache::remember`] kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remembered {
    Identity,
    /// A process with nothing to read (a kernel thread).
    NoIdentity,
    Nothing,
}

/// Identities of live processes by process id, bounded, with dead entries swept.
#[derive(Debug)]
pub struct ProcessCache {
    proc_root: PathBuf,
    redactor: Redactor,
    entries: HashMap<u32, Entry>,
    next_seq: u64,
    /// Kill lookups that found no identity.
    misses: u64,
    /// How long an entry outlives its process ([`GONE_GRACE`]).
    grace: Duration,
}

impl ProcessCache {
    pub fn new(proc_root: PathBuf, redactor: Redactor) -> Self {
        Self {
            proc_root,
            redactor,
            entries: HashMap::new(),
            next_seq: 0,
            misses: 0,
            grace: GONE_GRACE,
        }
    }

    #[cfg(test)]
    fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Reads every live process; returns how many identities were taken. A procfs that cannot
    /// be listed leaves the cache empty (logged).
    pub fn seed(&mut self) -> usize {
        let pids = match procfs::list_pids(&self.proc_root) {
            Ok(p) => p,
            Err(e) => {
                log::warn!(
                    "cannot list {}: {e}; victim.process only from execs and kills",
                    self.proc_root.display()
                );
                return 0;
            }
        };
        pids.into_iter()
            .filter(|pid| self.remember(*pid, IdentitySource::Seed) == Remembered::Identity)
            .count()
    }

    /// The kernel reported that `tgid` started a new program: reads it now, replacing what was
    /// known of its previous program.
    pub fn on_exec(&mut self, tgid: u32) {
        if self.remember(tgid, IdentitySource::Exec) == Remembered::Nothing {
            // Gone already (most short-lived commands are): its old image says nothing of it.
            self.entries.remove(&tgid);
        }
    }

    /// The identity of the victim `tgid`: remembered, else read from `/proc` now, else its
    /// parent's.
    pub fn identity_at_kill(&mut self, tgid: u32) -> Option<ProcessIdentity> {
        // A process the cache knows and no sweep has found gone is the victim: a pid is not
        // reused within a sweep interval (pids wrap at pid_max, millions on 64-bit). Reading
        // `/proc/PID` of a victim the OOM killer is still holding spins on its task lock, which
        // in a storm of kills cost the agent most of its time.
        if let Some(id) = self
            .entries
            .get(&tgid)
            .filter(|e| e.gone_since.is_none())
            .and_then(|e| e.identity.clone())
        {
            return Some(id);
        }
        let dir = ProcDir::new(&self.proc_root, tgid);
        // Readable while the victim is a zombie: its start time tells a reused pid apart.
        let now = dir.stat().ok();
        if let Some(e) = self.entries.get(&tgid) {
            match now {
                Some(s) if s.start_time != e.start_time => {
                    self.entries.remove(&tgid);
                }
                _ => {
                    if let Some(id) = &e.identity {
                        return Some(id.clone());
                    }
                }
            }
        }
        match self.read(tgid, IdentitySource::Kill) {
            Ok((id, _)) => return Some(id),
            Err(e) => log_read_error(tgid, &e),
        }
        let found = now
            .and_then(|child| self.parent_identity(child))
            .map(|mut id| {
                // Its own, not inherited: a forked child may be the init of a new PID namespace.
                id.container_init = dir.container_init();
                id
            });
        if found.is_none() {
            self.misses += 1;
            log::debug!("no identity for victim {tgid}");
        }
        found
    }

    /// Drops entries whose process has been gone for a while ([`GONE_GRACE`]), and reads
    /// processes that appeared without an exec seen (forked children).
    pub fn sweep(&mut self) {
        let now = Instant::now();
        let live: HashSet<u32> = match procfs::list_pids(&self.proc_root) {
            Ok(p) => p.into_iter().collect(),
            Err(e) => {
                log::debug!("cannot list {}: {e}", self.proc_root.display());
                return;
            }
        };
        let root = self.proc_root.clone();
        for (pid, e) in self.entries.iter_mut() {
            if e.gone_since.is_some() {
                continue;
            }
            let same = live.contains(pid)
                && ProcDir::new(&root, *pid)
                    .stat()
                    .is_ok_and(|s| s.start_time == e.start_time);
            if !same {
                e.gone_since = Some(now);
            }
        }
        let grace = self.grace;
        self.entries
            .retain(|_, e| e.gone_since.is_none_or(|t| now.duration_since(t) < grace));
        let new: Vec<u32> = live
            .into_iter()
            .filter(|p| !self.entries.contains_key(p))
            .collect();
        for pid in new {
            self.remember(pid, IdentitySource::Scan);
        }
    }

    /// Processes remembered (identities, kernel threads and recently gone ones).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Victims for which no identity could be found, since start.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Reads `pid` and remembers what was read (an entry without identity for a kernel
    /// thread); nothing when the process is gone or unreadable.
    fn remember(&mut self, pid: u32, source: IdentitySource) -> Remembered {
        let (identity, start_time) = match self.read(pid, source) {
            Ok((id, stat)) => (Some(id), stat.start_time),
            Err(ProcError::NoCommandLine) => match ProcDir::new(&self.proc_root, pid).stat() {
                Ok(s) => (None, s.start_time),
                Err(_) => return Remembered::Nothing,
            },
            Err(e) => {
                log_read_error(pid, &e);
                return Remembered::Nothing;
            }
        };
        let remembered = if identity.is_some() {
            Remembered::Identity
        } else {
            Remembered::NoIdentity
        };
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&pid) {
            self.evict_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            pid,
            Entry {
                identity,
                start_time,
                gone_since: None,
                seq,
            },
        );
        remembered
    }

    fn evict_oldest(&mut self) {
        // Gone entries first, then the oldest; only when full, so the scan is rare.
        let victim = self
            .entries
            .iter()
            .min_by_key(|(_, e)| (e.gone_since.is_none(), e.seq))
            .map(|(pid, _)| *pid);
        if let Some(pid) = victim {
            self.entries.remove(&pid);
        }
    }

    /// The identity of the process `child` was forked from, if that process is known and
    /// older than it. Init (1) and kthreadd (2) adopt orphans and start no victims: skipped.
    fn parent_identity(&mut self, child: Stat) -> Option<ProcessIdentity> {
        let ppid = child.ppid;
        if ppid <= 2 {
            return None;
        }
        let now = ProcDir::new(&self.proc_root, ppid).stat().ok();
        let start = now.map(|s| s.start_time);
        let cached = self.entries.get(&ppid).filter(|e| {
            start.is_none_or(|s| s == e.start_time) && e.start_time <= child.start_time
        });
        let mut id = match cached {
            Some(e) => e.identity.clone()?,
            None if start.is_some_and(|s| s <= child.start_time) => {
                self.read(ppid, IdentitySource::Parent).ok()?.0
            }
            None => return None,
        };
        id.source = IdentitySource::Parent;
        Some(id)
    }

    /// Reads one process's identity, checking that its start time did not change meanwhile
    /// (the pid taken by another process).
    fn read(&self, pid: u32, source: IdentitySource) -> Result<(ProcessIdentity, Stat), ProcError> {
        let dir = ProcDir::new(&self.proc_root, pid);
        let stat = dir.stat()?;
        // The parts that vanish with the process's memory first: a command line read after
        // them shows the memory was still there while they were read (an exiting victim
        // loses it at once, and an empty environ would pass for one without the variables).
        let executable = dir.executable();
        let env = dir.allowlisted_env();
        let container_init = dir.container_init();
        let (bytes, command_line_bytes) = dir.cmdline()?;
        let mut args = procfs::parse_cmdline(&bytes);
        if args.is_empty() {
            return Err(ProcError::NoCommandLine);
        }
        self.redactor.args(&mut args);
        let truncated = redact::truncate_joined(&mut args, COMMAND_LINE_MAX);
        let identity = ProcessIdentity {
            executable,
            args,
            command_line_bytes,
            truncated,
            env_read: env.is_some(),
            env: env
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let v = self.redactor.options(&v);
                    (k, v)
                })
                .collect(),
            container_init,
            source,
        };
        match dir.stat() {
            Ok(again) if again.start_time == stat.start_time => Ok((identity, stat)),
            _ => Err(ProcError::Gone),
        }
    }
}

fn log_read_error(pid: u32, e: &ProcError) {
    match e {
        ProcError::Gone | ProcError::NoCommandLine => {}
        e => log::debug!("process {pid}: {e}"),
    }
}

#[cfg(test)]
mod tests;
