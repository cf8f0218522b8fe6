//! Changes to the cgroup tree as they happen, through inotify: a directory watch on every cgroup
//! reports `mkdir` (`IN_CREATE`), `rmdir` (`IN_DELETE`) and writes to the cgroup's files
//! (`IN_MODIFY`, with the file's name: a limit set or changed; on cgroup v2 also the kernel's
//! own notifications of `memory.events`), so the tree need not be walked every few seconds to
//! find them.
//!
//! The watch is only as good as its coverage: a directory it could not watch (the
//! `fs.inotify.max_user_watches` limit) or a lost event (`IN_Q_OVERFLOW`) makes it incomplete,
//! and the caller walks the tree as before. Renames (`IN_MOVED_*`) are rare in cgroupfs and
//! are reported as [`Change::Rewalk`] rather than followed.
use std::{
    collections::HashMap,
    ffi::{CString, OsStr},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

/// The inotify instance could not be made or a directory could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `inotify_init1` failed (`fs.inotify.max_user_instances` reached, no inotify).
    #[error("cannot start inotify: {0}")]
    Init(io::Error),
    /// `inotify_add_watch` failed for a directory (`ENOSPC`: `fs.inotify.max_user_watches`).
    #[error("cannot watch {}: {source}", dir.display())]
    Add {
        /// The directory.
        dir: PathBuf,
        /// What the kernel returned.
        source: io::Error,
    },
}

/// One change to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A directory (a cgroup) was made here.
    Made(PathBuf),
    /// A directory was removed.
    Removed(PathBuf),
    /// A file of this directory was written or notified, by name.
    Modified(PathBuf, String),
    /// Events were lost or the tree was renamed: walk it again.
    Rewalk,
}

/// What is watched in each directory.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

/// An inotify instance with a watch on each directory of a tree.
#[derive(Debug)]
pub struct TreeWatch {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    /// A directory could not be watched since the last [`Self::set_complete`].
    incomplete: bool,
}

impl TreeWatch {
    /// A watch with no directories yet (non-blocking: [`Self::changes`] never waits).
    pub fn new() -> Result<Self, WatchError> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(WatchError::Init(io::Error::last_os_error()));
        }
        Ok(Self {
            // SAFETY: a new descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            dirs: HashMap::new(),
            incomplete: false,
        })
    }

    /// Watches `dir` (again: the same watch, with its path updated). A failure marks the watch
    /// incomplete.
    pub fn add(&mut self, dir: &Path) -> Result<(), WatchError> {
        let added = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
            .and_then(|c| {
                // SAFETY: a valid NUL-terminated path and our own descriptor.
                let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
                if wd < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(wd)
                }
            });
        match added {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_path_buf());
                Ok(())
            }
            // Gone before it could be watched: its removal needs no report.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => {
                self.incomplete = true;
                Err(WatchError::Add {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }

    /// Whether every directory given to [`Self::add`] since the last [`Self::set_complete`] is
    /// watched and no event was lost.
    pub fn is_complete(&self) -> bool {
        !self.incomplete
    }

    /// Marks the watch complete again (before a walk that adds every directory).
    pub fn set_complete(&mut self) {
        self.incomplete = false;
    }

    /// Directories watched now.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether no directory is watched.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The changes since the last call, in order, without waiting.
    pub fn changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        // Room for many events per read (each is 16 bytes and a padded name).
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads at most buf.len() bytes into our buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN (nothing more), or an error that reading again would not cure.
                break;
            }
            self.parse(&buf[..n as usize], &mut out);
        }
        out
    }

    fn parse(&mut self, mut buf: &[u8], out: &mut Vec<Change>) {
        const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
        while buf.len() >= HEAD {
            let word = |at: usize| -> [u8; 4] {
                let mut w = [0; 4];
                w.copy_from_slice(&buf[at..at + 4]);
                w
            };
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let len = u32::from_ne_bytes(word(12)) as usize;
            let Some(name) = buf.get(HEAD..HEAD + len) else {
                break;
            };
            let name = name.split(|b| *b == 0).next().unwrap_or_default();
            buf = &buf[HEAD + len..];
            if mask & libc::IN_Q_OVERFLOW != 0 {
                self.incomplete = true;
                out.push(Change::Rewalk);
                continue;
            }
            if mask & libc::IN_IGNORED != 0 {
                self.dirs.remove(&wd);
                continue;
            }
            let Some(dir) = self.dirs.get(&wd) else {
                continue;
            };
            let is_dir = mask & libc::IN_ISDIR != 0;
            let path = || dir.join(OsStr::from_bytes(name));
            if mask & (libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 && is_dir {
                out.push(Change::Rewalk);
            } else if mask & libc::IN_CREATE != 0 && is_dir {
                out.push(Change::Made(path()));
            } else if mask & libc::IN_DELETE != 0 && is_dir {
                out.push(Change::Removed(path()));
            } else if mask & libc::IN_MODIFY != 0 && !is_dir {
                out.push(Change::Modified(
                    dir.clone(),
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_mkdir_rmdir_and_writes_in_a_watched_tree() {
        let root = std::env::temp_dir().join(format!("oomtrace-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a")).expect("dirs");
        let mut w = TreeWatch::new().expect("inotify");
        w.add(&root).expect("watch root");
        w.add(&root.join("a")).expect("watch a");
        assert_eq!(w.len(), 2);
        assert!(w.changes().is_empty());

        std::fs::create_dir(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/limit"), "1").expect("write");
        std::fs::remove_dir(root.join("a/b")).expect("rmdir");
        assert_eq!(
            w.changes(),
            [
                Change::Made(root.join("a/b")),
                Change::Modified(root.join("a"), "limit".into()),
                Change::Removed(root.join("a/b")),
            ]
        );
        // Removing a watched directory drops its watch.
        std::fs::remove_file(root.join("a/limit")).expect("rm");
        std::fs::remove_dir(root.join("a")).expect("rmdir a");
        assert_eq!(w.changes(), [Change::Removed(root.join("a"))]);
        assert_eq!(w.len(), 1);
        std::fs::create_dir(root.join("c")).expect("mkdir");
        std::fs::rename(root.join("c"), root.join("d")).expect("rename");
        assert_eq!(
            w.changes(),
            [Change::Made(root.join("c")), Change::Rewalk, Change::Rewalk]
        );
        assert!(w.is_complete(), "a rename is no lost event");
        let _ = std::fs::remove_dir_all(&root);
    }
}
