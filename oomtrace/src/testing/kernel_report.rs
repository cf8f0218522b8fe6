//! The kernel's own OOM report, read from the kernel log (`/dev/kmsg`): the independent oracle
//! the tests compare oomtrace's records with.
//!
//! One OOM kill logs, in this order (Linux 5.5+ formats; other lines in between are ignored):
//!
//! ```text
//! hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
//! memory: usage 65536kB, limit 65536kB, failcnt 123                  (memcg OOMs only)
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=hog,pid=1234,uid=0
//! Memory cgroup out of memory: Killed process 1234 (hog) total-vm:70012kB, anon-rss:63512kB, file-rss:1280kB, shmem-rss:0kB, UID:0 pgtables:172kB oom_score_adj:0
//! ```
//!
//! With `memory.oom.group` set, `Tasks in /a are going to be killed due to memory.oom.group set`
//! and one more `Killed process` line per sibling follow, without summaries of their own.
use std::{
    fs::File,
    io::{ErrorKind, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    str::FromStr,
    time::{Duration, Instant},
};

/// Failure to read the kernel log.
#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    /// `/dev/kmsg` could not be opened or positioned at its end.
    #[error("cannot open /dev/kmsg: {0} (run as root)")]
    Open(std::io::Error),
    /// Reading a record failed (other than "nothing new" or "records overwritten").
    #[error("cannot read /dev/kmsg: {0}")]
    Read(std::io::Error),
}

/// The decimal number (optionally negative) right after the first `key` in `s`.
fn num_after<T: FromStr>(s: &str, key: &str) -> Option<T> {
    let rest = &s[s.find(key)? + key.len()..];
    let digits = rest.strip_prefix('-').unwrap_or(rest);
    let end = rest.len() - digits.len()
        + digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
    rest[..end].parse().ok()
}

/// `Killed process …`: the victim as the kernel saw it when killing it (sizes in kB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilledProcess {
    pub pid: u32,
    /// `task->comm`; may contain spaces and parentheses.
    pub comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub uid: u32,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    /// The line did not start with `Memory cgroup out of memory:` (e.g. `Out of memory:`).
    pub global: bool,
}

/// Parses a message containing `Killed process PID (comm) total-vm:…kB, … oom_score_adj:N`.
/// Needs every field of the Linux 5.5+ format.
pub fn parse_killed_process(line: &str) -> Option<KilledProcess> {
    const KEY: &str = "Killed process ";
    let at = line.find(KEY)?;
    let (pid, rest) = line[at + KEY.len()..].split_once(" (")?;
    // The comm may itself contain ") total-vm:": the real separator is the last one.
    let (comm, tail) = rest.rsplit_once(") total-vm:")?;
    Some(KilledProcess {
        pid: pid.parse().ok()?,
        comm: comm.to_string(),
        total_vm_kb: num_after(tail, "")?,
        anon_rss_kb: num_after(tail, "anon-rss:")?,
        file_rss_kb: num_after(tail, "file-rss:")?,
        shmem_rss_kb: num_after(tail, "shmem-rss:")?,
        uid: num_after(tail, "UID:")?,
        pgtables_kb: num_after(tail, "pgtables:")?,
        oom_score_adj: num_after(tail, "oom_score_adj:")?,
        global: !line[..at].contains("Memory cgroup"),
    })
}

/// The `oom-kill:` summary line, naming the chosen victim and the memcgs involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKillSummary {
    /// e.g. `CONSTRAINT_NONE`, `CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY`,
    /// `CONSTRAINT_MEMCG`; empty if the line has no `constraint=`.
    pub constraint: String,
    /// The memcg that hit its limit (absent on global OOMs, which say `global_oom`).
    pub oom_memcg: Option<String>,
    /// The victim's memcg.
    pub task_memcg: Option<String>,
    /// The victim's comm.
    pub task: String,
    pub pid: u32,
    pub uid: Option<u32>,
}

/// Where `key=` starts in a comma-separated `s`: at its start or right after a comma.
fn key_at(s: &str, key: &str) -> Option<usize> {
    if s.strip_prefix(key).is_some_and(|r| r.starts_with('=')) {
        return Some(0);
    }
    s.find(&format!(",{key}=")).map(|i| i + 1)
}

/// Parses an `oom-kill:…,task=COMM,pid=N,uid=N` line. Only `task=` and `pid=` are required.
///
/// `pid=`/`uid=` and then `task=` are taken from the end of the line, so a comm containing
/// commas survives (one containing `,task=` or `,pid=` does not); memcg paths run up to the next
/// key, so they may contain commas too.
pub fn parse_oom_kill_summary(line: &str) -> Option<OomKillSummary> {
    const KEY: &str = "oom-kill:";
    let body = &line[line.find(KEY)? + KEY.len()..];
    let pid_at = body.rfind(",pid=")?;
    let upto_pid = &body[..pid_at];
    let task_at = upto_pid
        .rmatch_indices("task=")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || upto_pid.as_bytes()[i - 1] == b',')?;
    let head = &upto_pid[..task_at.saturating_sub(1)];
    let task = &upto_pid[task_at + "task=".len()..];
    let mut pid = None;
    let mut uid = None;
    for kv in body[pid_at + 1..].split(',') {
        match kv.split_once('=') {
            Some(("pid", v)) => pid = v.parse().ok(),
            Some(("uid", v)) => uid = v.parse().ok(),
            _ => {}
        }
    }
    let task_memcg_at = key_at(head, "task_memcg");
    let before_task_memcg = &head[..task_memcg_at.map_or(head.len(), |i| i.saturating_sub(1))];
    let value = |s: &str, key: &str| key_at(s, key).map(|i| s[i + key.len() + 1..].to_string());
    Some(OomKillSummary {
        constraint: value(head, "constraint")
            .and_then(|v| v.split(',').next().map(str::to_string))
            .unwrap_or_default(),
        oom_memcg: value(before_task_memcg, "oom_memcg"),
        task_memcg: value(head, "task_memcg"),
        task: task.to_string(),
        pid: pid?,
        uid,
    })
}

/// `COMM invoked oom-killer: gfp_mask=0x…(…), order=N, oom_score_adj=N`: the task whose
/// allocation failed, and the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokedOomKiller {
    /// The allocating task's comm (may contain spaces).
    pub comm: String,
    pub gfp_mask: u32,
    pub order: i32,
    pub oom_score_adj: i32,
}

/// Parses the `… invoked oom-killer: …` header line.
pub fn parse_invoked(line: &str) -> Option<InvokedOomKiller> {
    let (comm, rest) = line.split_once(" invoked oom-killer: ")?;
    let gfp = &rest[rest.find("gfp_mask=")? + "gfp_mask=".len()..];
    let gfp = &gfp[..gfp.find(['(', ',', ' ']).unwrap_or(gfp.len())];
    let gfp = gfp.strip_prefix("0x").unwrap_or(gfp);
    Some(InvokedOomKiller {
        comm: comm.to_string(),
        gfp_mask: u32::from_str_radix(gfp, 16).ok()?,
        order: num_after(rest, " order=")?,
        oom_score_adj: num_after(rest, " oom_score_adj=")?,
    })
}

/// `memory: usage …kB, limit …kB, failcnt N`: the OOMing memcg's memory counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcgUsage {
    pub usage_kb: u64,
    /// `9007199254740988` (PAGE_COUNTER_MAX in kB) when unlimited.
    pub limit_kb: u64,
    pub failcnt: u64,
}

/// Parses a message that starts with `memory: usage ` (not the `swap:`, `memory+swap:` or
/// `kmem:` lines that follow it).
pub fn parse_memcg_usage(line: &str) -> Option<MemcgUsage> {
    let rest = line.strip_prefix("memory: usage ")?;
    Some(MemcgUsage {
        usage_kb: num_after(rest, "")?,
        limit_kb: num_after(rest, "limit ")?,
        failcnt: num_after(rest, "failcnt ")?,
    })
}

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Sequence number; gaps mean records were lost.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` in microseconds when the message was logged.
    pub ts_usec: u64,
    /// The message's first line, `\xNN` escapes undone.
    pub message: String,
}

/// Parses `PRI,SEQ,TS_USEC,FLAGS[,…];MESSAGE\n[ KEY=VALUE\n…]`: the dictionary continuation
/// lines are ignored, and the kernel's `\xNN` escapes of non-printable bytes are undone.
pub fn parse_kmsg_record(raw: &[u8]) -> Option<KmsgRecord> {
    let semi = raw.iter().position(|&b| b == b';')?;
    let mut fields = std::str::from_utf8(&raw[..semi]).ok()?.split(',');
    let _pri = fields.next()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    let text = &raw[semi + 1..];
    let line = &text[..text.iter().position(|&b| b == b'\n').unwrap_or(text.len())];
    Some(KmsgRecord {
        seq,
        ts_usec,
        message: String::from_utf8_lossy(&unescape(line)).into_owned(),
    })
}

/// Undoes kmsg's `\xNN` escaping; anything else (including a malformed escape) is kept.
fn unescape(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let [b'\\', b'x', hi, lo, ..] = s[i..] {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push((hi * 16 + lo) as u8);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// A non-blocking reader of the kernel log that sees only records logged after it was opened.
pub struct Kmsg {
    file: File,
    /// Records read but not yet handed out by [`Kmsg::wait_for`].
    pending: std::collections::VecDeque<KmsgRecord>,
}

impl Kmsg {
    /// Opens `/dev/kmsg` (needs root or `CAP_SYSLOG`) positioned after the newest record.
    pub fn open_at_end() -> Result<Self, KmsgError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(KmsgError::Open)?;
        file.seek(SeekFrom::End(0)).map_err(KmsgError::Open)?;
        Ok(Self {
            file,
            pending: Default::default(),
        })
    }

    /// Every record logged since the last call (or since opening), in order. Records the
    /// kernel overwrote before we read them are skipped (visible as `seq` gaps).
    pub fn read_available(&mut self) -> Result<Vec<KmsgRecord>, KmsgError> {
        let mut out: Vec<KmsgRecord> = self.pending.drain(..).collect();
        // Each read returns exactly one record; a record is at most 8 KiB.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(parse_kmsg_record(&buf[..n])),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // EPIPE: records were overwritten; the next read returns the oldest one left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) => return Err(KmsgError::Read(e)),
            }
        }
        Ok(out)
    }

    /// Feeds new records to `f`, polling every 20 ms, until it returns a value (`Ok(Some)`) or
    /// `timeout` passes (`Ok(None)`).
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&KmsgRecord) -> Option<T>,
    ) -> Result<Option<T>, KmsgError> {
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = self.read_available()?;
            self.pending.extend(fresh);
            // Records after the one found stay for the next call.
            while let Some(r) = self.pending.pop_front() {
                if let Some(v) = f(&r) {
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

/// One row of the task table the kernel logs before choosing (`dump_tasks()`, when
/// `vm.oom_dump_tasks` is 1): each eligible task's memory at the moment of the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub pid: u32,
    pub rss_pages: u64,
    pub pgtables_bytes: u64,
    pub swapents: u64,
    pub oom_score_adj: i32,
    pub name: String,
}

/// The columns of the task table's header line, after `[  pid  ]`:
/// `uid tgid total_vm rss [rss_anon rss_file rss_shmem] pgtables_bytes swapents oom_score_adj name`.
pub fn parse_task_header(line: &str) -> Option<Vec<String>> {
    let rest = line.strip_prefix("[  pid  ]")?;
    let columns: Vec<String> = rest.split_whitespace().map(String::from).collect();
    (columns.iter().any(|c| c == "rss") && columns.last().is_some_and(|c| c == "name"))
        .then_some(columns)
}

/// A task-table row, read with the header's `columns` (the name, last, may contain spaces).
pub fn parse_task_row(line: &str, columns: &[String]) -> Option<TaskRow> {
    let rest = line.strip_prefix('[')?;
    let (pid, rest) = rest.split_once(']')?;
    // Whitespace-separated values; the last (the name) keeps its inner spaces.
    let mut rest = rest.trim();
    let mut values = Vec::with_capacity(columns.len());
    for _ in 1..columns.len() {
        let end = rest.find(char::is_whitespace)?;
        values.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    if rest.is_empty() {
        return None;
    }
    values.push(rest);
    let value = |name: &str| {
        let i = columns.iter().position(|c| c == name)?;
        values[i].trim().parse::<i64>().ok()
    };
    Some(TaskRow {
        pid: pid.trim().parse().ok()?,
        rss_pages: u64::try_from(value("rss")?).ok()?,
        pgtables_bytes: u64::try_from(value("pgtables_bytes")?).ok()?,
        swapents: u64::try_from(value("swapents")?).ok()?,
        oom_score_adj: i32::try_from(value("oom_score_adj")?).ok()?,
        name: values[values.len() - 1].trim().to_string(),
    })
}

/// The kernel's report of one kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomReport {
    /// The header of the OOM invocation this kill belongs to, if it was seen.
    pub invoked: Option<InvokedOomKiller>,
    /// The OOMing memcg's counter (memcg OOMs only), if it was seen.
    pub memcg_usage: Option<MemcgUsage>,
    /// The invocation's task table (empty when `vm.oom_dump_tasks` is 0).
    pub tasks: Vec<TaskRow>,
    /// The `oom-kill:` summary this kill followed. Normally `summary.pid == killed.pid`; for a
    /// `memory.oom.group` sibling it is the chosen victim's summary, so the pids differ. `None`
    /// if no summary preceded the kill in the records given (e.g. it was overwritten).
    pub summary: Option<OomKillSummary>,
    pub killed: KilledProcess,
}

/// The lines of one invocation logged before its summary.
#[derive(Debug, Clone, Default)]
struct Header {
    invoked: Option<InvokedOomKiller>,
    memcg_usage: Option<MemcgUsage>,
    columns: Option<Vec<String>>,
    tasks: Vec<TaskRow>,
}

/// Assembles one report per `Killed process` line from records in log order.
///
/// Each kill gets the latest preceding `oom-kill:` summary, and the `invoked oom-killer`,
/// `memory: usage` and task-table lines logged after the summary before that (i.e. of the same
/// OOM invocation; an `invoked` line resets them). Kills sharing one summary
/// (`memory.oom.group`) share its header.
pub fn collect_reports(records: &[KmsgRecord]) -> Vec<OomReport> {
    // Header lines of the invocation in progress; moved next to its summary once that is seen.
    let mut pending = Header::default();
    let mut current: Option<(OomKillSummary, Header)> = None;
    let mut out = Vec::new();
    for r in records {
        let m = r.message.as_str();
        if let Some(killed) = parse_killed_process(m) {
            let (summary, h) = match &current {
                Some((s, h)) => (Some(s.clone()), h.clone()),
                None => (None, pending.clone()),
            };
            out.push(OomReport {
                invoked: h.invoked,
                memcg_usage: h.memcg_usage,
                tasks: h.tasks,
                summary,
                killed,
            });
        } else if let Some(s) = parse_oom_kill_summary(m) {
            current = Some((s, std::mem::take(&mut pending)));
        } else if let Some(i) = parse_invoked(m) {
            pending = Header {
                invoked: Some(i),
                ..Header::default()
            };
        } else if let Some(u) = parse_memcg_usage(m) {
            pending.memcg_usage = Some(u);
        } else if let Some(columns) = parse_task_header(m) {
            pending.columns = Some(columns);
        } else if let Some(row) = pending
            .columns
            .as_deref()
            .and_then(|c| parse_task_row(m, c))
        {
            pending.tasks.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from a 6.18 kernel (memcg v1, hence `memory+swap:`).
    const INVOKED: &str =
        "oomt-basic invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
    const USAGE: &str = "memory: usage 49152kB, limit 49152kB, failcnt 70";
    const USAGE_SWAP: &str = "memory+swap: usage 49152kB, limit 9007199254740988kB, failcnt 0";
    const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oomtrace-test-basic-9074,task_memcg=/oomtrace-test-basic-9074,task=oomt-basic,pid=9078,uid=0";
    const KILLED: &str = "Memory cgroup out of memory: Killed process 9078 (oomt-basic) total-vm:58560kB, anon-rss:48768kB, file-rss:5264kB, shmem-rss:0kB, UID:0 pgtables:156kB oom_score_adj:0";

    fn rec(seq: u64, message: &str) -> KmsgRecord {
        KmsgRecord {
            seq,
            ts_usec: seq * 10,
            message: message.into(),
        }
    }

    #[test]
    fn killed_process_memcg() {
        assert_eq!(
            parse_killed_process(KILLED),
            Some(KilledProcess {
                pid: 9078,
                comm: "oomt-basic".into(),
                total_vm_kb: 58560,
                anon_rss_kb: 48768,
                file_rss_kb: 5264,
                shmem_rss_kb: 0,
                uid: 0,
                pgtables_kb: 156,
                oom_score_adj: 0,
                global: false,
            })
        );
        let k = parse_killed_process("Memory cgroup out of memory: Killed process 1234 (hog) total-vm:70012kB, anon-rss:63512kB, file-rss:1280kB, shmem-rss:16384kB, UID:65534 pgtables:172kB oom_score_adj:-17").expect("parses");
        assert_eq!(
            (k.shmem_rss_kb, k.uid, k.oom_score_adj),
            (16384, 65534, -17)
        );
    }

    #[test]
    fn killed_process_global_with_odd_comm() {
        let k = parse_killed_process("Out of memory: Killed process 9 (Web Content) x) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:1000 pgtables:5kB oom_score_adj:1000").expect("parses");
        assert!(k.global);
        assert_eq!(k.comm, "Web Content) x");
        assert_eq!(
            (
                k.total_vm_kb,
                k.anon_rss_kb,
                k.file_rss_kb,
                k.shmem_rss_kb,
                k.pgtables_kb
            ),
            (1, 2, 3, 4, 5)
        );
        assert_eq!((k.uid, k.oom_score_adj), (1000, 1000));
        // Pre-5.5 lines lack fields; other lines are not kills.
        assert!(parse_killed_process(
            "Killed process 1 (x) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB"
        )
        .is_none());
        assert!(parse_killed_process("oom_reaper: reaped process 9078 (oomt-basic), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB").is_none());
    }

    #[test]
    fn summary_memcg_v2_and_v1() {
        let s = parse_oom_kill_summary("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oomtrace-test-1,task_memcg=/oomtrace-test-1/child,task=hog,pid=1234,uid=0").expect("parses");
        assert_eq!(
            s,
            OomKillSummary {
                constraint: "CONSTRAINT_MEMCG".into(),
                oom_memcg: Some("/oomtrace-test-1".into()),
                task_memcg: Some("/oomtrace-test-1/child".into()),
                task: "hog".into(),
                pid: 1234,
                uid: Some(0),
            }
        );
        let v1 = parse_oom_kill_summary(SUMMARY).expect("parses");
        assert_eq!(v1.oom_memcg.as_deref(), Some("/oomtrace-test-basic-9074"));
        assert_eq!((v1.task.as_str(), v1.pid), ("oomt-basic", 9078));
        // v1 with a nested limit, a multi-node mems_allowed and a comma in a memcg name.
        let s = parse_oom_kill_summary("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=0-1,cpuset=/,mems_allowed=0,2-3,oom_memcg=/foo,task_memcg=/foo/a,b,task=x,pid=5,uid=1000").expect("parses");
        assert_eq!(s.oom_memcg.as_deref(), Some("/foo"));
        assert_eq!(s.task_memcg.as_deref(), Some("/foo/a,b"));
        assert_eq!((s.pid, s.uid), (5, Some(1000)));
    }

    #[test]
    fn summary_global_and_minimal() {
        let g = parse_oom_kill_summary("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=a,b,pid=7,uid=0").expect("parses");
        assert_eq!(g.constraint, "CONSTRAINT_NONE");
        assert_eq!(g.oom_memcg, None);
        assert_eq!(g.task_memcg.as_deref(), Some("/user.slice"));
        assert_eq!((g.task.as_str(), g.pid), ("a,b", 7));
        let m = parse_oom_kill_summary("oom-kill:task=t,pid=3").expect("parses");
        assert_eq!(
            (m.constraint.as_str(), m.task.as_str(), m.pid, m.uid),
            ("", "t", 3, None)
        );
        assert!(parse_oom_kill_summary("oom-kill:constraint=CONSTRAINT_NONE,task=t").is_none());
        assert!(parse_oom_kill_summary("oom-kill:constraint=CONSTRAINT_NONE,pid=3").is_none());
    }

    #[test]
    fn invoked_line() {
        assert_eq!(
            parse_invoked(INVOKED),
            Some(InvokedOomKiller {
                comm: "oomt-basic".into(),
                gfp_mask: 0xcc0,
                order: 0,
                oom_score_adj: 0,
            })
        );
        let i = parse_invoked("Web Content invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=2, oom_score_adj=-1000").expect("parses");
        assert_eq!(
            (i.comm.as_str(), i.gfp_mask, i.order, i.oom_score_adj),
            ("Web Content", 0x140dca, 2, -1000)
        );
        // Pre-5.0 layout with nodemask in between.
        let old = parse_invoked("a invoked oom-killer: gfp_mask=0x6000c0(GFP_KERNEL), nodemask=(null), order=3, oom_score_adj=5").expect("parses");
        assert_eq!(
            (old.gfp_mask, old.order, old.oom_score_adj),
            (0x6000c0, 3, 5)
        );
    }

    #[test]
    fn memcg_usage_lines() {
        assert_eq!(
            parse_memcg_usage(USAGE),
            Some(MemcgUsage {
                usage_kb: 49152,
                limit_kb: 49152,
                failcnt: 70
            })
        );
        assert!(parse_memcg_usage(USAGE_SWAP).is_none());
        assert!(parse_memcg_usage("swap: usage 0kB, limit 0kB, failcnt 0").is_none());
        assert!(
            parse_memcg_usage("kmem: usage 1kB, limit 9007199254740988kB, failcnt 0").is_none()
        );
    }

    #[test]
    fn kmsg_record_with_escape_and_dictionary() {
        let raw = b"6,1234,5678901,-;Memory cgroup out of memory: Killed process 42 (a\\x20b) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0\n SUBSYSTEM=memory\n DEVICE=+memory:x\n";
        let r = parse_kmsg_record(raw).expect("parses");
        assert_eq!((r.seq, r.ts_usec), (1234, 5_678_901));
        assert!(r.message.ends_with("oom_score_adj:0"));
        let k = parse_killed_process(&r.message).expect("killed");
        assert_eq!((k.pid, k.comm.as_str()), (42, "a b"));
        // Extra prefix fields, an escaped backslash, a bad escape, a trailing partial escape.
        let r = parse_kmsg_record(b"4,7,8,c,extra;x\\x5cy\\xzz\\x4").expect("parses");
        assert_eq!(r.message, "x\\y\\xzz\\x4");
        assert!(parse_kmsg_record(b"no separator").is_none());
        assert!(parse_kmsg_record(b"6,x,1,-;m").is_none());
    }

    #[test]
    fn reports_in_order() {
        let records = [
            rec(1, "unrelated"),
            rec(2, INVOKED),
            rec(3, "CPU: 0 UID: 0 PID: 9078 Comm: oomt-basic"),
            rec(4, USAGE),
            rec(5, USAGE_SWAP),
            rec(5, TASKS_6_18),
            rec(5, "[   9078]     0  9078    14640    13524    12192     1332         0   159744        0             0 oomt-basic"),
            rec(6, SUMMARY),
            rec(7, KILLED),
            rec(8, "Tasks in /oomtrace-test-basic-9074 are going to be killed due to memory.oom.group set"),
            rec(9, "Memory cgroup out of memory: Killed process 9079 (sib) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0"),
            // A later global OOM: no memcg usage, and no stale one carried over.
            rec(10, "init invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0"),
            rec(11, "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=big,pid=77,uid=0"),
            rec(12, "Out of memory: Killed process 77 (big) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0"),
        ];
        let reports = collect_reports(&records);
        assert_eq!(reports.len(), 3);

        let r = &reports[0];
        assert_eq!(r.killed.pid, 9078);
        assert_eq!(r.summary.as_ref().map(|s| s.pid), Some(9078));
        assert_eq!(
            r.invoked.as_ref().map(|i| i.comm.as_str()),
            Some("oomt-basic")
        );
        assert_eq!(r.memcg_usage.as_ref().map(|u| u.failcnt), Some(70));
        assert_eq!(
            r.tasks,
            [TaskRow {
                pid: 9078,
                rss_pages: 13524,
                pgtables_bytes: 159744,
                swapents: 0,
                oom_score_adj: 0,
                name: "oomt-basic".into()
            }]
        );

        // oom.group sibling: the victim's summary and header.
        let r = &reports[1];
        assert_eq!(r.killed.pid, 9079);
        assert_eq!(r.summary.as_ref().map(|s| s.pid), Some(9078));
        assert_eq!(r.invoked, reports[0].invoked);
        assert_eq!(r.memcg_usage, reports[0].memcg_usage);

        let r = &reports[2];
        assert!(r.killed.global);
        assert_eq!(
            r.summary.as_ref().map(|s| s.constraint.as_str()),
            Some("CONSTRAINT_NONE")
        );
        assert_eq!(r.invoked.as_ref().map(|i| i.comm.as_str()), Some("init"));
        assert_eq!(r.memcg_usage, None);
        assert!(r.tasks.is_empty(), "no table carried over");

        // A kill with no summary in view still yields a report.
        let lone = collect_reports(&records[8..9]);
        assert_eq!((lone.len(), lone[0].summary.as_ref()), (1, None));
    }

    /// `dump_tasks()` of 6.18 (verbatim) and 6.1 (no per-type RSS columns; from its source).
    const TASKS_6_18: &str = "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name";
    const TASKS_6_1: &str =
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name";

    #[test]
    fn task_table_rows_follow_their_header() {
        let new = parse_task_header(TASKS_6_18).expect("6.18 header");
        let row = parse_task_row("[  10235]     0 10235    18751    17730    12224     1410      4096   192512        0             0 oomt-shm", &new)
            .expect("6.18 row");
        assert_eq!(
            (row.pid, row.rss_pages, row.pgtables_bytes, row.swapents),
            (10235, 17730, 192512, 0)
        );
        let old = parse_task_header(TASKS_6_1).expect("6.1 header");
        let row = parse_task_row(
            "[    145]     0   145    12604    10401   139264       12          -500 my worker",
            &old,
        )
        .expect("6.1 row");
        assert_eq!(
            (
                row.rss_pages,
                row.pgtables_bytes,
                row.swapents,
                row.oom_score_adj
            ),
            (10401, 139264, 12, -500)
        );
        assert_eq!(row.name, "my worker");
        assert_eq!(parse_task_row("[ 1.234] not a row", &old), None);
        assert_eq!(parse_task_header("[  pid  ] something else"), None);
    }

    /// Writes a marker to the kernel log and reads it back; skipped without root.
    #[test]
    fn kmsg_round_trip() {
        let Ok(mut kmsg) = Kmsg::open_at_end() else {
            eprintln!("skipped: /dev/kmsg not readable");
            return;
        };
        let marker = format!("oomtrace kernel_report self-test {}", std::process::id());
        let Ok(mut w) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") else {
            eprintln!("skipped: /dev/kmsg not writable");
            return;
        };
        std::io::Write::write_all(&mut w, format!("{marker}\tend\n").as_bytes()).expect("write");
        let found = kmsg
            .wait_for(Duration::from_secs(5), |r| {
                r.message.contains(&marker).then(|| r.clone())
            })
            .expect("read");
        let r = found.expect("marker seen");
        assert!(
            r.message.ends_with(&format!("{marker}\tend")),
            "{:?}",
            r.message
        );
        // Nothing older than the open was returned, and nothing is pending now.
        assert!(kmsg
            .read_available()
            .expect("read")
            .iter()
            .all(|r| !r.message.contains(&marker)));
    }
}
