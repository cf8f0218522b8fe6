//! What `/proc` says about the processes of an OOM domain: the same counters the kernel's
//! `oom_badness()` adds up, read from `status` (`RssAnon`, `RssFile`, `RssShmem`, `VmSwap`,
//! `VmPTE`, in kB) and `oom_score_adj`. Reads only what it is asked for: a node may run
//! thousands of processes.
use std::path::Path;

use crate::cgroup::CgroupVersion;

/// One process's memory as `/proc/PID/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcTask {
    pub(super) pid: u32,
    pub(super) comm: String,
    pub(super) anon_kb: u64,
    pub(super) file_kb: u64,
    pub(super) shmem_kb: u64,
    pub(super) swap_kb: u64,
    pub(super) pte_kb: u64,
    pub(super) oom_score_adj: i32,
}

/// `status`'s `Name:` escapes `\`, newlines and a few other bytes with a backslash.
fn unescape_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('a') => out.push('\x07'),
            Some('e') => out.push('\x1b'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The kB value of a `Key:\t  1234 kB` line.
fn kb(value: &str) -> Option<u64> {
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Parses a `status` file; `None` for a process without an mm (a kernel thread, a zombie): the
/// kernel's OOM killer passes over those too.
pub(super) fn parse_status(pid: u32, text: &str, oom_score_adj: i32) -> Option<ProcTask> {
    let (mut comm, mut anon, mut file, mut shmem, mut swap, mut pte) =
        (None, None, None, None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Name" => comm = Some(unescape_name(value.trim_start_matches([' ', '\t']))),
            "RssAnon" => anon = kb(value),
            "RssFile" => file = kb(value),
            "RssShmem" => shmem = kb(value),
            "VmSwap" => swap = kb(value),
            "VmPTE" => pte = kb(value),
            _ => {}
        }
    }
    Some(ProcTask {
        pid,
        comm: comm?,
        anon_kb: anon?,
        file_kb: file?,
        shmem_kb: shmem?,
        swap_kb: swap.unwrap_or(0),
        pte_kb: pte.unwrap_or(0),
        oom_score_adj,
    })
}

/// Process `pid`'s memory, `None` when it is gone, has no mm, or cannot be read.
pub(super) fn read_task(proc_root: &Path, pid: u32) -> Option<ProcTask> {
    let dir = proc_root.join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let adj = std::fs::read_to_string(dir.join("oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    parse_status(pid, &status, adj)
}

/// Every process id in `proc_root` (thread group leaders: `/proc` lists no threads).
pub(super) fn all_pids(proc_root: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The memory cgroup path in a `/proc/PID/cgroup` text: v1's `N:…memory…:/path` line, v2's
/// `0::/path`.
pub(super) fn parse_memory_cgroup(text: &str, version: CgroupVersion) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => controllers.is_empty(),
        };
        ours.then(|| path.to_string())
    })
}

/// Process `pid`'s memory cgroup path.
pub(super) fn memory_cgroup(proc_root: &Path, pid: u32, version: CgroupVersion) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    parse_memory_cgroup(&text, version)
}

/// `MemTotal` and `SwapTotal` of `/proc/meminfo`, in kB.
pub(super) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(kb)
    };
    Some((value("MemTotal")?, value("SwapTotal")?))
}

pub(super) fn meminfo(proc_root: &Path) -> Option<(u64, u64)> {
    parse_meminfo(&std::fs::read_to_string(proc_root.join("meminfo")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real 6.18 `/proc/PID/status` (the fields read, and a few around them).
    const STATUS: &str = "Name:\toomt\\\\side\\ncar\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t18879\nPid:\t18879\nVmRSS:\t   49228 kB\nRssAnon:\t   38400 kB\nRssFile:\t   10828 kB\nRssShmem:\t       0 kB\nVmData:\t   38476 kB\nVmPTE:\t     176 kB\nVmSwap:\t       0 kB\nThreads:\t1\n";
    /// A kernel thread's: no memory lines at all.
    const KTHREAD: &str =
        "Name:\tkworker/0:1\nState:\tI (idle)\nTgid:\t42\nPid:\t42\nThreads:\t1\n";

    #[test]
    fn status_of_a_process_and_of_a_kernel_thread() {
        assert_eq!(
            parse_status(18879, STATUS, -500),
            Some(ProcTask {
                pid: 18879,
                comm: "oomt\\side\ncar".into(),
                anon_kb: 38400,
                file_kb: 10828,
                shmem_kb: 0,
                swap_kb: 0,
                pte_kb: 176,
                oom_score_adj: -500,
            })
        );
        assert_eq!(parse_status(42, KTHREAD, 0), None);
    }

    #[test]
    fn cgroup_lines_of_both_versions() {
        let v1 = "12:pids:/a\n4:memory:/oomtrace-x/app\n1:name=systemd:/user.slice\n0::/\n";
        assert_eq!(
            parse_memory_cgroup(v1, CgroupVersion::V1).as_deref(),
            Some("/oomtrace-x/app")
        );
        assert_eq!(
            parse_memory_cgroup(v1, CgroupVersion::V2).as_deref(),
            Some("/")
        );
        assert_eq!(
            parse_memory_cgroup("0::/kubepods.slice/x.scope\n", CgroupVersion::V2).as_deref(),
            Some("/kubepods.slice/x.scope")
        );
        assert_eq!(parse_memory_cgroup("0::/a\n", CgroupVersion::V1), None);
    }

    #[test]
    fn meminfo_totals() {
        let text = "MemTotal:       24589012 kB\nMemFree:         1234 kB\nSwapCached:            0 kB\nSwapTotal:       2097148 kB\n";
        assert_eq!(parse_meminfo(text), Some((24_589_012, 2_097_148)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        let t = read_task(Path::new("/proc"), me).expect("our own status");
        assert_eq!(t.pid, me);
        assert!(t.anon_kb > 0 && t.pte_kb > 0, "{t:?}");
        assert!(all_pids(Path::new("/proc")).contains(&me));
    }
}
