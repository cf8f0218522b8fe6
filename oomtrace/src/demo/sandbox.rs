//! Throwaway memory cgroups with a small limit, and children started inside them: used by
//! `tail --demo` and by the tests to provoke real OOM kills safely. A cgroup removes itself on
//! drop, killing only the processes inside it (which its owner started).
use std::{
    ffi::CString,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::cgroup::{self, CgroupError, CgroupVersion, MemoryHierarchy};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot create memory cgroup {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: String,
        value: String,
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("path contains a NUL byte: {0}")]
    Nul(String),
}

/// A memory cgroup created by this process, removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    path: String,
    version: CgroupVersion,
    children: Vec<MemoryCgroup>,
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    std::fs::write(path, value).map_err(|source| SandboxError::Write {
        path: path.display().to_string(),
        value: value.to_string(),
        source,
    })
}

impl MemoryCgroup {
    /// Creates `<root>/<name>` with a memory limit of `limit_bytes` (and no swap).
    pub fn create(
        h: &MemoryHierarchy,
        name: &str,
        limit_bytes: Option<u64>,
    ) -> Result<Self, SandboxError> {
        if h.version == CgroupVersion::V2 {
            // Make the memory controller available to the root's children.
            let _ = std::fs::write(h.root.join("cgroup.subtree_control"), "+memory");
        }
        Self::create_in(&h.root, h, name, limit_bytes)
    }

    fn create_in(
        parent: &Path,
        h: &MemoryHierarchy,
        name: &str,
        limit_bytes: Option<u64>,
    ) -> Result<Self, SandboxError> {
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|source| SandboxError::Create {
            path: dir.display().to_string(),
            source,
        })?;
        let cg = Self {
            path: h.relative(&dir).unwrap_or_default(),
            dir,
            version: h.version,
            children: Vec::new(),
        };
        if let Some(limit) = limit_bytes {
            cg.set_limit(limit)?;
        }
        Ok(cg)
    }

    /// A child cgroup, removed with this one.
    pub fn child(
        &mut self,
        h: &MemoryHierarchy,
        name: &str,
        limit_bytes: Option<u64>,
    ) -> Result<&mut MemoryCgroup, SandboxError> {
        if self.version == CgroupVersion::V2 {
            write(&self.dir.join("cgroup.subtree_control"), "+memory")?;
        }
        let c = Self::create_in(&self.dir, h, name, limit_bytes)?;
        self.children.push(c);
        let last = self.children.len() - 1;
        Ok(&mut self.children[last])
    }

    pub fn set_limit(&self, bytes: u64) -> Result<(), SandboxError> {
        match self.version {
            CgroupVersion::V1 => write(&self.dir.join("memory.limit_in_bytes"), &bytes.to_string()),
            CgroupVersion::V2 => {
                write(&self.dir.join("memory.max"), &bytes.to_string())?;
                let swap = self.dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                Ok(())
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel-style path relative to the hierarchy root (`/oomtrace-demo-1`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cgroup id (inode number of the directory).
    pub fn id(&self) -> Result<u64, SandboxError> {
        Ok(cgroup::id_of(&self.dir)?)
    }

    /// Starts `cmd` inside this cgroup: the child joins it before `exec`, so everything it
    /// allocates is charged here. Optionally sets its `oom_score_adj` and drops to `uid`/`gid`.
    pub fn spawn(&self, mut cmd: Command, opts: &SpawnOptions) -> Result<Child, SandboxError> {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
            .map_err(|_| SandboxError::Nul(self.dir.display().to_string()))?;
        let adj = opts.oom_score_adj.map(|a| a.to_string().into_bytes());
        let ids = opts.uid;
        let what = format!("{cmd:?}");
        // SAFETY: the closure runs between fork and exec and only makes raw syscalls on memory
        // prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                join_cgroup(&procs)?;
                if let Some(adj) = &adj {
                    write_raw(c"/proc/self/oom_score_adj", adj)?;
                }
                if let Some((uid, gid)) = ids {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(|source| SandboxError::Spawn { what, source })
    }

    /// Pids currently in this cgroup (not its children).
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn remove(&mut self) {
        for mut c in self.children.drain(..) {
            c.remove();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Only processes this cgroup's owner put here can be inside it.
            for pid in self.pids() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() >= deadline => {
                    log::warn!("could not remove cgroup {}: {e}", self.dir.display());
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// How to start a child in a sandbox cgroup.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    pub oom_score_adj: Option<i32>,
    /// (uid, gid) to run as.
    pub uid: Option<(u32, u32)>,
}

fn write_raw(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: path is NUL-terminated; data is a valid slice.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` ("0" = self).
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    write_raw(procs, b"0")
}

/// Waits for a child with a deadline; kills it when the deadline passes.
pub fn wait_or_kill(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
