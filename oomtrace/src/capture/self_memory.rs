//! This process's own memory as the kernel counts it (`/proc/self/status`): logged at debug
//! level at each start-up stage, so a regression in the start-up peak can be placed; and the
//! start-up pages of the executable and its libraries given back once the programs are
//! attached.

/// Resident set size now and its high-water mark, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfMemory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most resident since start.
    pub hwm_kib: u64,
}

impl SelfMemory {
    /// Reads `/proc/self/status`; `None` where it is unreadable (not Linux, no procfs).
    pub fn read() -> Option<Self> {
        parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
    }
}

/// `VmRSS` and `VmHWM` of a `/proc/PID/status` text.
fn parse_status(status: &str) -> Option<SelfMemory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(SelfMemory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// Logs this process's memory after start-up stage `stage` (debug level).
pub fn log_stage(stage: &str) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    if let Some(m) = SelfMemory::read() {
        log::debug!(
            "memory after {stage}: VmRSS {} KiB, VmHWM {} KiB",
            m.rss_kib,
            m.hwm_kib
        );
    }
}

/// One mapping of `/proc/self/smaps` that [`release_startup_pages`] may drop.
#[derive(Debug, PartialEq, Eq)]
struct Droppable {
    start: usize,
    end: usize,
}

/// The private, read-only mappings of files (the executable, its libraries) that hold no
/// private (anonymous) copy of any page: dropping their pages loses nothing, a later access
/// reads them back from the page cache. The relocated (RELRO) data is excluded by its
/// anonymous pages, the writable data by its permissions, and every mapping that is not of a
/// file by path (`[stack]`, `anon_inode:bpf-map`: ring buffers cannot be faulted back), as
/// are the files deleted since they were mapped.
fn droppable(smaps: &str) -> Vec<Droppable> {
    let mut out = Vec::new();
    let mut current: Option<Droppable> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's header: range, perms, offset, dev, inode, path.
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            let range = usize::from_str_radix(start, 16)
                .ok()
                .zip(usize::from_str_radix(end, 16).ok());
            current = match range {
                Some((start, end))
                    if path.starts_with('/')
                        && matches!(perms, "r--p" | "r-xp")
                        && fields.next().is_none() =>
                {
                    Some(Droppable { start, end })
                }
                _ => None,
            };
        } else if first == "Anonymous:" {
            let anon = fields.next().and_then(|v| v.parse::<u64>().ok());
            if let (Some(m), Some(0)) = (current.take(), anon) {
                out.push(m);
            }
        }
    }
    out
}

/// Gives back the resident pages of the read-only mappings of this executable and its
/// libraries (code, constants, the embedded eBPF object) once start-up is over: most of them
/// served only start-up (argument parsing, BTF, the loader), and the ones the agent keeps
/// using come back on first use, from the page cache (a minor fault). Returns the bytes given
/// back (the drop in resident size).
pub fn release_startup_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let before = SelfMemory::read();
    for m in droppable(&smaps) {
        // SAFETY: the range is a whole private mapping of a file, read-only, with no private
        // (anonymous) pages: MADV_DONTNEED only unmaps page-cache pages of the file, which
        // later accesses fault back in unchanged. No memory Rust owns is affected.
        unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            );
        }
    }
    match (before, SelfMemory::read()) {
        (Some(b), Some(a)) => b.rss_kib.saturating_sub(a.rss_kib) * 1024,
        _ => 0,
    }
}

/// [`release_startup_pages`] once more after `delay`, on a short-lived thread of its own (a
/// failure to start it only costs the release).
pub fn release_startup_pages_after(delay: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("release-pages".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            std::thread::sleep(delay);
            let released = release_startup_pages();
            log::debug!(
                "start-up pages released after {delay:?}: {} KiB",
                released >> 10
            );
        });
    if let Err(e) = spawned {
        log::debug!("start-up pages kept: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_hwm() {
        let status =
            "Name:\toomtrace\nVmPeak:\t  100 kB\nVmHWM:\t   46812 kB\nVmRSS:\t   14100 kB\n";
        assert_eq!(
            parse_status(status),
            Some(SelfMemory {
                rss_kib: 14100,
                hwm_kib: 46812
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn only_read_only_file_mappings_without_private_pages_are_dropped() {
        let smaps = "\
55d0-55e0 r--p 00000000 fe:00 42 /usr/bin/oomtrace
Rss: 3640 kB
Anonymous: 0 kB
55e0-55f0 r-xp 00577000 fe:00 42 /usr/bin/oomtrace
Anonymous: 0 kB
55f0-5600 r--p 00d15000 fe:00 42 /usr/bin/oomtrace
Anonymous: 8 kB
5600-5610 rw-p 00d85000 fe:00 42 /usr/bin/oomtrace
Anonymous: 0 kB
7f00-7f10 r-xp 00026000 fe:00 7 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous: 0 kB
7f10-7f20 r-xp 00000000 fe:00 42 /usr/bin/oomtrace (deleted)
Anonymous: 0 kB
7f20-7f30 r--s 00001000 00:10 1038 anon_inode:bpf-map
Anonymous: 0 kB
7f30-7f40 r--s 00000000 fe:00 9 /usr/share/shared.db
Anonymous: 0 kB
7f40-7f50 r--p 00000000 00:00 0
Anonymous: 0 kB
7ff0-7ff8 r--p 00000000 00:00 0 [vvar]
Anonymous: 0 kB
";
        assert_eq!(
            droppable(smaps),
            [
                Droppable {
                    start: 0x55d0,
                    end: 0x55e0
                },
                Droppable {
                    start: 0x55e0,
                    end: 0x55f0
                },
                Droppable {
                    start: 0x7f00,
                    end: 0x7f10
                }
            ]
        );
    }

    #[test]
    fn reads_this_process() {
        let m = SelfMemory::read().expect("/proc/self/status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
    }
}
