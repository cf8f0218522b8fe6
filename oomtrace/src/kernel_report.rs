//! The kernel's own OOM report in the kernel log (`/dev/kmsg`): the independent oracle the tests
//! compare oomtrace's records with.
//!
//! Lines parsed:
//! `oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=hog,pid=1234,uid=0`
//! `Memory cgroup out of memory: Killed process 1234 (hog) total-vm:70012kB, anon-rss:63512kB, file-rss:1280kB, shmem-rss:0kB, UID:0 pgtables:172kB oom_score_adj:0`
use std::{
    fs::File,
    io::{ErrorKind, Read},
    os::unix::fs::OpenOptionsExt,
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("cannot open /dev/kmsg: {0} (run as root)")]
    Open(std::io::Error),
    #[error("cannot read /dev/kmsg: {0}")]
    Read(std::io::Error),
}

/// `Killed process …` as the kernel prints it (sizes in kB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilledProcess {
    pub pid: u32,
    pub comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub uid: u32,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    /// `Out of memory:` (global) rather than `Memory cgroup out of memory:`.
    pub global: bool,
}

fn kb_after(s: &str, key: &str) -> Option<u64> {
    let rest = &s[s.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn int_after<T: std::str::FromStr>(s: &str, key: &str) -> Option<T> {
    let rest = &s[s.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parses a `Killed process PID (comm) total-vm:…` line.
pub fn parse_killed_process(line: &str) -> Option<KilledProcess> {
    let at = line.find("Killed process ")?;
    let head = &line[..at];
    let rest = &line[at + "Killed process ".len()..];
    let (pid, rest) = rest.split_once(" (")?;
    // comm may contain ") ": the sizes start after the last ") total-vm:".
    let (comm, tail) = rest.rsplit_once(") total-vm:")?;
    let tail = format!("total-vm:{tail}");
    Some(KilledProcess {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_string(),
        total_vm_kb: kb_after(&tail, "total-vm:")?,
        anon_rss_kb: kb_after(&tail, "anon-rss:")?,
        file_rss_kb: kb_after(&tail, "file-rss:")?,
        shmem_rss_kb: kb_after(&tail, "shmem-rss:")?,
        uid: int_after(&tail, "UID:")?,
        pgtables_kb: kb_after(&tail, "pgtables:")?,
        oom_score_adj: int_after(&tail, "oom_score_adj:")?,
        global: !head.contains("Memory cgroup"),
    })
}

/// The `oom-kill:` summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKillSummary {
    /// e.g. `CONSTRAINT_MEMCG`.
    pub constraint: String,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub task: String,
    pub pid: u32,
    pub uid: Option<u32>,
}

pub fn parse_oom_kill_summary(line: &str) -> Option<OomKillSummary> {
    let body = &line[line.find("oom-kill:")? + "oom-kill:".len()..];
    // task= may hold commas: take it as everything between ",task=" and the last ",pid=".
    let task_at = body.find(",task=")?;
    let pid_at = body.rfind(",pid=")?;
    let task = body.get(task_at + ",task=".len()..pid_at)?.to_string();
    let tail = &body[pid_at + 1..];
    let mut pid = None;
    let mut uid = None;
    for kv in tail.split(',') {
        match kv.split_once('=') {
            Some(("pid", v)) => pid = v.trim().parse().ok(),
            Some(("uid", v)) => uid = v.trim().parse().ok(),
            _ => {}
        }
    }
    let mut constraint = None;
    let mut oom_memcg = None;
    let mut task_memcg = None;
    for kv in body[..task_at].split(',') {
        match kv.split_once('=') {
            Some(("constraint", v)) => constraint = Some(v.to_string()),
            Some(("oom_memcg", v)) => oom_memcg = Some(v.to_string()),
            Some(("task_memcg", v)) => task_memcg = Some(v.to_string()),
            _ => {}
        }
    }
    Some(OomKillSummary {
        constraint: constraint?,
        oom_memcg,
        task_memcg,
        task,
        pid: pid?,
        uid,
    })
}

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    pub seq: u64,
    pub ts_usec: u64,
    pub message: String,
}

/// Parses `PRI,SEQ,TS_USEC,FLAGS;MESSAGE\n[ KEY=VALUE\n…]`, unescaping `\xNN`.
pub fn parse_kmsg_record(raw: &[u8]) -> Option<KmsgRecord> {
    let text = String::from_utf8_lossy(raw);
    let (prefix, rest) = text.split_once(';')?;
    let mut fields = prefix.split(',');
    let _pri = fields.next()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    let line = rest.split('\n').next().unwrap_or("");
    Some(KmsgRecord {
        seq,
        ts_usec,
        message: unescape(line),
    })
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reader of new `/dev/kmsg` records.
pub struct Kmsg {
    file: File,
    /// Records read but not yet handed out by [`Kmsg::wait_for`].
    pending: std::collections::VecDeque<KmsgRecord>,
}

impl Kmsg {
    /// Opens `/dev/kmsg` positioned after the newest record.
    pub fn open_at_end() -> Result<Self, KmsgError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(KmsgError::Open)?;
        // SAFETY: lseek on an fd we own.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        if unsafe { libc::lseek(fd, 0, libc::SEEK_END) } < 0 {
            return Err(KmsgError::Open(std::io::Error::last_os_error()));
        }
        Ok(Self {
            file,
            pending: Default::default(),
        })
    }

    /// Every record available now (including any [`Kmsg::wait_for`] has not handed out).
    pub fn read_available(&mut self) -> Result<Vec<KmsgRecord>, KmsgError> {
        let mut out: Vec<KmsgRecord> = self.pending.drain(..).collect();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(parse_kmsg_record(&buf[..n])),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Records were overwritten before we read them: go on with the next.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(KmsgError::Read(e)),
            }
        }
        Ok(out)
    }

    /// Reads records until `found` returns a value or `timeout` passes. Records after the one
    /// found stay for the next call.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut found: impl FnMut(&KmsgRecord) -> Option<T>,
    ) -> Result<Option<T>, KmsgError> {
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = self.read_available()?;
            self.pending.extend(fresh);
            while let Some(r) = self.pending.pop_front() {
                if let Some(v) = found(&r) {
                    return Ok(Some(v));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The kernel's report of one kill: the `Killed process` line and the `oom-kill:` summary that
/// preceded it (for a `memory.oom.group` sibling the summary names the chosen task instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomReport {
    pub summary: Option<OomKillSummary>,
    pub killed: KilledProcess,
}

/// Assembles reports from records in log order.
pub fn collect_reports(records: &[KmsgRecord]) -> Vec<OomReport> {
    let mut summary = None;
    let mut out = Vec::new();
    for r in records {
        if let Some(s) = parse_oom_kill_summary(&r.message) {
            summary = Some(s);
        } else if let Some(k) = parse_killed_process(&r.message) {
            out.push(OomReport {
                summary: summary.clone(),
                killed: k,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILLED: &str = "Memory cgroup out of memory: Killed process 1234 (hog) total-vm:70012kB, anon-rss:63512kB, file-rss:1280kB, shmem-rss:16384kB, UID:65534 pgtables:172kB oom_score_adj:-17";
    const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oomtrace-test-1,task_memcg=/oomtrace-test-1/child,task=hog,pid=1234,uid=65534";

    #[test]
    fn killed_process_line() {
        let k = parse_killed_process(KILLED).expect("parses");
        assert_eq!(
            k,
            KilledProcess {
                pid: 1234,
                comm: "hog".into(),
                total_vm_kb: 70012,
                anon_rss_kb: 63512,
                file_rss_kb: 1280,
                shmem_rss_kb: 16384,
                uid: 65534,
                pgtables_kb: 172,
                oom_score_adj: -17,
                global: false,
            }
        );
        let global = parse_killed_process(
            "Out of memory: Killed process 9 (a b) c) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:1000",
        )
        .expect("global");
        assert!(global.global);
        assert_eq!(global.comm, "a b) c");
        assert_eq!(global.oom_score_adj, 1000);
        assert!(parse_killed_process("Killed process 1 (x)").is_none());
    }

    #[test]
    fn summary_line() {
        let s = parse_oom_kill_summary(SUMMARY).expect("parses");
        assert_eq!(s.constraint, "CONSTRAINT_MEMCG");
        assert_eq!(s.oom_memcg.as_deref(), Some("/oomtrace-test-1"));
        assert_eq!(s.task_memcg.as_deref(), Some("/oomtrace-test-1/child"));
        assert_eq!((s.task.as_str(), s.pid, s.uid), ("hog", 1234, Some(65534)));
        let g = parse_oom_kill_summary(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=a,b,pid=7,uid=0",
        )
        .expect("global");
        assert_eq!((g.task.as_str(), g.pid, g.oom_memcg), ("a,b", 7, None));
    }

    #[test]
    fn kmsg_record_with_escape_and_dictionary() {
        let raw = b"3,1234,5678901,-;Memory cgroup out of memory: Killed process 42 (a\\x20b) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0\n SUBSYSTEM=memory\n";
        let r = parse_kmsg_record(raw).expect("parses");
        assert_eq!((r.seq, r.ts_usec), (1234, 5_678_901));
        assert_eq!(
            parse_killed_process(&r.message).expect("killed").comm,
            "a b"
        );
        let reports = collect_reports(&[
            KmsgRecord {
                seq: 1,
                ts_usec: 0,
                message: SUMMARY.into(),
            },
            KmsgRecord {
                seq: 2,
                ts_usec: 0,
                message: KILLED.into(),
            },
        ]);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].summary.as_ref().map(|s| s.pid), Some(1234));
    }
}
