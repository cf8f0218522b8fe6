//! `/dev/kmsg`: its records, and reading every record the kernel still holds without blocking.
use std::{
    fs::File,
    io::{ErrorKind, Read},
    os::unix::fs::OpenOptionsExt,
};

use super::prefix::{seconds_text, LogLine};

/// Failure to read the kernel log.
#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    /// `/dev/kmsg` could not be opened or positioned.
    #[error("cannot open /dev/kmsg: {0} (needs root or CAP_SYSLOG)")]
    Open(std::io::Error),
    /// Reading a record failed (other than "nothing new" or "records overwritten").
    #[error("cannot read /dev/kmsg: {0}")]
    Read(std::io::Error),
}

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Sequence number; gaps mean records were lost.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` in microseconds when the message was logged.
    pub ts_usec: u64,
    /// The message (without the dictionary lines), `\xNN` escapes undone: a multi-line
    /// message (6.1 prints `memory.stat` as one) has its newlines back.
    pub message: String,
}

impl KmsgRecord {
    /// The record's message lines, each with the record's time.
    pub fn lines(&self) -> impl Iterator<Item = LogLine> + '_ {
        self.message.split('\n').map(|m| LogLine {
            time: Some(seconds_text(self.ts_usec)),
            monotonic_us: Some(self.ts_usec),
            message: m.trim_start().to_string(),
        })
    }
}

/// Parses `PRI,SEQ,TS_USEC,FLAGS[,…];MESSAGE\n[ KEY=VALUE\n…]`: the dictionary continuation
/// lines are ignored, and the kernel's `\xNN` escapes of non-printable bytes are undone.
pub fn parse_kmsg_record(raw: &[u8]) -> Option<KmsgRecord> {
    let semi = raw.iter().position(|&b| b == b';')?;
    let mut fields = std::str::from_utf8(&raw[..semi]).ok()?.split(',');
    let _pri: u32 = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    let _flags = fields.next()?;
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

/// Opens `/dev/kmsg` without blocking reads, at the oldest record the kernel still holds.
pub(crate) fn open_nonblocking() -> Result<File, KmsgError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(KmsgError::Open)
}

/// Appends every record readable from `file` (opened with [`open_nonblocking`]) until there is
/// no more. Records the kernel overwrote before they were read are skipped (visible as `seq`
/// gaps).
pub(crate) fn read_available(file: &mut File, out: &mut Vec<KmsgRecord>) -> Result<(), KmsgError> {
    // Each read returns exactly one record; a record is at most 8 KiB.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend(parse_kmsg_record(&buf[..n])),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // EPIPE: records were overwritten; the next read returns the oldest one left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) => return Err(KmsgError::Read(e)),
        }
    }
}

/// Every record `/dev/kmsg` still holds, oldest first, read without blocking (needs root or
/// `CAP_SYSLOG`). [`super::collect_reports`] turns them into reports.
pub fn read_kmsg_all() -> Result<Vec<KmsgRecord>, KmsgError> {
    let mut file = open_nonblocking()?;
    let mut out = Vec::new();
    read_available(&mut file, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_record_with_escape_and_dictionary() {
        let raw = b"6,1234,5678901,-;Memory cgroup out of memory: Killed process 42 (a\\x20b) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:0\n SUBSYSTEM=memory\n DEVICE=+memory:x\n";
        let r = parse_kmsg_record(raw).expect("parses");
        assert_eq!((r.seq, r.ts_usec), (1234, 5_678_901));
        assert!(r.message.ends_with("oom_score_adj:0"));
        let k = super::super::parse_killed_process(&r.message).expect("killed");
        assert_eq!((k.pid, k.comm.as_str()), (42, "a b"));
        // Extra prefix fields, an escaped backslash, a bad escape, a trailing partial escape.
        let r = parse_kmsg_record(b"4,7,8,c,extra;x\\x5cy\\xzz\\x4").expect("parses");
        assert_eq!(r.message, "x\\y\\xzz\\x4");
        assert!(parse_kmsg_record(b"no separator").is_none());
        assert!(parse_kmsg_record(b"6,x,1,-;m").is_none());
        // Not a record: a message that happens to hold commas and a semicolon.
        assert!(parse_kmsg_record(b"a,1,2,-;m").is_none());
        assert!(parse_kmsg_record(b"6,1,2;m").is_none());
    }

    /// Reads the whole log as root; skipped where /dev/kmsg is not readable.
    #[test]
    fn reads_every_record_without_blocking() {
        let marker = format!("oomtrace read_kmsg_all self-test {}", std::process::id());
        let Ok(mut w) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") else {
            eprintln!("skipped: /dev/kmsg not writable");
            return;
        };
        std::io::Write::write_all(&mut w, format!("{marker}\n").as_bytes()).expect("write");
        let records = match read_kmsg_all() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        assert!(
            records.iter().any(|r| r.message == marker),
            "marker read back"
        );
        assert!(records.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    }
}
