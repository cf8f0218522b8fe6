//! A JSON Lines file rotated by size: `oomtrace.jsonl`, then `oomtrace.jsonl.1` (newest) …
//! `oomtrace.jsonl.N` (oldest). Every line is written whole and flushed before the next, and a
//! rotation only renames files, so no line is lost or split; `reopen` (SIGHUP) picks up a file
//! that an external logrotate moved away.
//!
//! Failures leave the file whole and the history in place: a short write (ENOSPC, EDQUOT) is cut
//! back to the last whole line, and a rotation or reopen that fails keeps writing to the file
//! already open (retrying the rotation after [`ROTATE_RETRY`]) instead of shifting the rotated
//! files again. Each failure counts in [`RotatingFile::errors`].
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Most rotated files kept (`--max-files`); more is clamped to it.
pub const MAX_KEEP: u32 = 100;

/// After a failed rotation, lines go to the current file for this long before trying again.
pub const ROTATE_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path} ({source}), and cannot cut the partial line back: {cut}")]
    Partial {
        path: String,
        source: std::io::Error,
        cut: std::io::Error,
    },
    #[error("cannot rotate {from} to {to}: {source}")]
    Rename {
        from: String,
        to: String,
        source: std::io::Error,
    },
}

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    /// Rotated files kept besides the current one.
    keep: u32,
    file: File,
    size: u64,
    /// Failed writes, rotations and reopens since open.
    errors: u64,
    /// No rotation is tried before this (after one failed).
    rotate_after: Option<Instant>,
}

fn open(path: &Path) -> Result<(File, u64), RotateError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| RotateError::Open {
            path: path.display().to_string(),
            source,
        })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

/// `keep` within `0..=MAX_KEEP`, saying so when it was not.
pub fn clamp_keep(keep: u32) -> u32 {
    if keep > MAX_KEEP {
        log::warn!("--max-files {keep} is more than {MAX_KEEP}: keeping {MAX_KEEP} rotated files");
    }
    keep.min(MAX_KEEP)
}

impl RotatingFile {
    /// Opens `path` for appending. A file reaching `max_bytes` is rotated; `keep` rotated files
    /// are kept (0: the file is truncated instead; more than [`MAX_KEEP`] is clamped to it).
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Result<Self, RotateError> {
        let path = path.into();
        let (file, size) = open(&path)?;
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            keep: clamp_keep(keep),
            file,
            size,
            errors: 0,
            rotate_after: None,
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Failed writes, rotations and reopens since open (`oomtrace_output_errors_total`).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Rotated files kept (after clamping).
    pub fn keep(&self) -> u32 {
        self.keep
    }

    /// Appends one line (a newline is added) and flushes it. An error means the line is not in
    /// the file (and no part of it is); a failed rotation is counted and logged, and the line
    /// goes to the current file.
    pub fn write_line(&mut self, line: &str) -> Result<(), RotateError> {
        let len = line.len() as u64 + 1;
        let due = self.rotate_after.is_none_or(|t| Instant::now() >= t);
        if self.size > 0 && self.size + len > self.max_bytes && due {
            match self.rotate() {
                Ok(()) => self.rotate_after = None,
                Err(e) => {
                    self.errors += 1;
                    self.rotate_after = Some(Instant::now() + ROTATE_RETRY);
                    log::warn!(
                        "{e}; writing on to {} (next try in {}s)",
                        self.path.display(),
                        ROTATE_RETRY.as_secs()
                    );
                }
            }
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // The file's real length, not `size`: something else may have truncated it.
        let before = self.file.metadata().map(|m| m.len()).ok();
        if let Err(source) = self.file.write_all(&buf).and_then(|()| self.file.flush()) {
            self.errors += 1;
            let path = self.path.display().to_string();
            // A short write left part of the line: cut it off so every line stays whole.
            if let Some(before) = before {
                if let Err(cut) = self.file.set_len(before) {
                    return Err(RotateError::Partial { path, source, cut });
                }
                self.size = before;
            }
            return Err(RotateError::Write { path, source });
        }
        self.size = before.map_or(self.size, |b| b) + len;
        Ok(())
    }

    /// Shifts `.1`…`.keep-1` up by one (the oldest falls off), moves the current file to `.1`
    /// and starts a new one. When the new one cannot be opened, the current file is moved back
    /// (and written to on), so a failure never shifts the history again.
    fn rotate(&mut self) -> Result<(), RotateError> {
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|source| RotateError::Rename {
                from: from.display().to_string(),
                to: to.display().to_string(),
                source,
            })
        };
        if self.keep == 0 {
            let (file, _) = open(&self.path)?;
            file.set_len(0).map_err(|source| RotateError::Write {
                path: self.path.display().to_string(),
                source,
            })?;
            self.file = file;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.keep).rev() {
            let from = self.numbered(n);
            if from.exists() {
                rename(&from, &self.numbered(n + 1))?;
            }
        }
        let first = self.numbered(1);
        rename(&self.path, &first)?;
        match open(&self.path) {
            Ok((file, size)) => {
                self.file = file;
                self.size = size;
                Ok(())
            }
            Err(e) => {
                // Back where it was: the next try shifts nothing that is not history.
                if let Err(back) = rename(&first, &self.path) {
                    log::warn!("{back}");
                }
                Err(e)
            }
        }
    }

    /// Reopens the path (after SIGHUP, when something else moved the file). On failure the
    /// file already open stays in use, and the failure counts.
    pub fn reopen(&mut self) -> Result<(), RotateError> {
        let (file, size) = open(&self.path).inspect_err(|_| self.errors += 1)?;
        self.file = file;
        self.size = size;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp_dir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("oomtrace-rotate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .map(|s| s.lines().map(String::from).collect())
            .unwrap_or_default()
    }

    #[test]
    fn rotation_keeps_every_line_whole_and_in_order() {
        let dir = temp_dir("order");
        let path = dir.0.join("oom.jsonl");
        // 10-byte lines (9 + newline), 35-byte files: three lines per file.
        let mut f = RotatingFile::open(&path, 35, 3).expect("open");
        let all: Vec<String> = (0..11).map(|i| format!("line-{i:04}")).collect();
        for l in &all {
            f.write_line(l).expect("write");
        }
        // Three rotations so far, all kept: .3 (oldest) .2 .1 and the current file.
        let mut seen = Vec::new();
        for n in (1..=3).rev() {
            seen.extend(lines(&dir.0.join(format!("oom.jsonl.{n}"))));
        }
        seen.extend(lines(&path));
        assert_eq!(seen, all[..].to_vec(), "11 lines over 4 files, none lost");
        for l in all.iter().take(3) {
            assert!(lines(&dir.0.join("oom.jsonl.3")).contains(l));
        }
        // One more file's worth: the oldest file falls off, the rest shift.
        for l in ["line-0011", "line-0012", "line-0013"] {
            f.write_line(l).expect("write");
        }
        assert_eq!(lines(&dir.0.join("oom.jsonl.3")), all[3..6].to_vec());
        assert!(!dir.0.join("oom.jsonl.4").exists());
    }

    #[test]
    fn reopen_follows_an_external_move() {
        let dir = temp_dir("reopen");
        let path = dir.0.join("oom.jsonl");
        let mut f = RotatingFile::open(&path, 1 << 20, 2).expect("open");
        f.write_line("before").expect("write");
        std::fs::rename(&path, dir.0.join("moved")).expect("move");
        f.reopen().expect("reopen");
        f.write_line("after").expect("write");
        assert_eq!(lines(&dir.0.join("moved")), ["before"]);
        assert_eq!(lines(&path), ["after"]);
    }

    #[test]
    fn a_failed_rotation_keeps_the_history_and_writes_on() {
        let dir = temp_dir("stuck");
        let path = dir.0.join("oom.jsonl");
        let mut f = RotatingFile::open(&path, 20, 3).expect("open");
        for l in ["a-000000", "a-000001", "a-000002", "a-000003"] {
            f.write_line(l).expect("write");
        }
        assert_eq!(lines(&dir.0.join("oom.jsonl.1")), ["a-000000", "a-000001"]);
        // `.2` cannot be moved onto: a rotation fails at its first rename, every time.
        std::fs::create_dir_all(dir.0.join("oom.jsonl.3").join("x")).expect("dir");
        std::fs::rename(dir.0.join("oom.jsonl.1"), dir.0.join("oom.jsonl.2")).expect("mv");
        let more: Vec<String> = (4..40).map(|i| format!("a-{i:06}")).collect();
        for l in &more {
            f.write_line(l)
                .expect("the line is written despite the failed rotation");
        }
        // One failure, retried only after ROTATE_RETRY; the history is where it was.
        assert_eq!(f.errors(), 1);
        assert_eq!(lines(&dir.0.join("oom.jsonl.2")), ["a-000000", "a-000001"]);
        assert!(!dir.0.join("oom.jsonl.1").exists());
        let mut current = vec!["a-000002".to_string(), "a-000003".to_string()];
        current.extend(more);
        assert_eq!(lines(&path), current);
        // Once it can, it rotates again.
        std::fs::remove_dir_all(dir.0.join("oom.jsonl.3")).expect("rm");
        f.rotate_after = None;
        f.write_line("b-000000").expect("write");
        assert_eq!(lines(&dir.0.join("oom.jsonl.1")), current);
        assert_eq!(lines(&dir.0.join("oom.jsonl.3")), ["a-000000", "a-000001"]);
        assert_eq!(lines(&path), ["b-000000"]);
        assert_eq!(f.errors(), 1);
    }

    #[test]
    fn max_files_is_clamped() {
        let dir = temp_dir("clamp");
        let f = RotatingFile::open(dir.0.join("oom.jsonl"), 1 << 20, 5000).expect("open");
        assert_eq!(f.keep(), MAX_KEEP);
        let f = RotatingFile::open(dir.0.join("oom.jsonl"), 1 << 20, 0).expect("open");
        assert_eq!(f.keep(), 0);
    }

    /// A 16 KiB tmpfs, mounted for the test and unmounted after.
    struct SmallFs(TempDir);
    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(&self.0 .0)
                .status();
        }
    }

    #[test]
    fn a_short_write_is_cut_back_to_whole_lines() {
        let dir = temp_dir("enospc");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
            .arg(&dir.0)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return;
        }
        let fs = SmallFs(dir);
        let path = fs.0 .0.join("oom.jsonl");
        let mut f = RotatingFile::open(&path, 1 << 30, 2).expect("open");
        // 1000-byte lines: the 17th cannot fit whole in 16 KiB.
        let line = |i: usize| format!("{i:04}{}", "x".repeat(995));
        let mut written = Vec::new();
        let mut failures = 0;
        for i in 0..40 {
            match f.write_line(&line(i)) {
                Ok(()) => written.push(line(i)),
                Err(RotateError::Write { source, .. }) => {
                    assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {source}");
                    failures += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(written.len(), 16);
        assert_eq!(failures, 24);
        assert_eq!(f.errors(), 24);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 16 * 1000, "no partial line");
        assert_eq!(lines(&path), written);
    }
}
