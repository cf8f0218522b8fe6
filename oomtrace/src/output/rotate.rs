//! A JSON Lines file rotated by size: `oomtrace.jsonl`, then `oomtrace.jsonl.1` (newest) …
//! `oomtrace.jsonl.N` (oldest). Every line is written whole and flushed before the next, and a
//! rotation only renames files, so no line is lost or split; `reopen` (SIGHUP) picks up a file
//! that an external logrotate moved away.
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

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

impl RotatingFile {
    /// Opens `path` for appending. A file reaching `max_bytes` is rotated; `keep` rotated files
    /// are kept (0: the file is truncated instead).
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Result<Self, RotateError> {
        let path = path.into();
        let (file, size) = open(&path)?;
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends one line (a newline is added) and flushes it.
    pub fn write_line(&mut self, line: &str) -> Result<(), RotateError> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.flush())
            .map_err(|source| RotateError::Write {
                path: self.path.display().to_string(),
                source,
            })?;
        self.size += len;
        Ok(())
    }

    /// Shifts `.1`…`.keep-1` up by one (the oldest falls off), moves the current file to `.1`
    /// and starts a new one.
    fn rotate(&mut self) -> Result<(), RotateError> {
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|source| RotateError::Rename {
                from: from.display().to_string(),
                to: to.display().to_string(),
                source,
            })
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    rename(&from, &self.numbered(n + 1))?;
                }
            }
            rename(&self.path, &self.numbered(1))?;
        }
        self.reopen()
    }

    /// Reopens the path (after SIGHUP, when something else moved the file).
    pub fn reopen(&mut self) -> Result<(), RotateError> {
        let (file, size) = open(&self.path)?;
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
}
