//! The messages of one OOM report, one parser each: every function takes a message with its
//! log prefix already stripped ([`super::prefix`]) and returns `None` when it is not its line.
//! Sizes stay in the units the kernel printed (kB, pages, bytes), named in each field.
use std::str::FromStr;

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

/// `<counter>: usage …kB, limit …kB, failcnt N`: one of the OOMing memcg's page counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcgUsage {
    pub usage_kb: u64,
    /// `9007199254740988` (PAGE_COUNTER_MAX in kB) when unlimited.
    pub limit_kb: u64,
    pub failcnt: u64,
}

/// Which page counter a `…: usage …kB, limit …kB, failcnt N` line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCounter {
    /// `memory:` (v1 and v2).
    Memory,
    /// `swap:` (v2).
    Swap,
    /// `memory+swap:` (v1 with swap accounting).
    MemorySwap,
    /// `kmem:` (v1).
    Kmem,
}

/// Parses any of the memcg page-counter lines (`memory:`, `swap:`, `memory+swap:`, `kmem:`).
pub fn parse_page_counter(line: &str) -> Option<(PageCounter, MemcgUsage)> {
    let (name, rest) = line.split_once(": usage ")?;
    let counter = match name {
        "memory" => PageCounter::Memory,
        "swap" => PageCounter::Swap,
        "memory+swap" => PageCounter::MemorySwap,
        "kmem" => PageCounter::Kmem,
        _ => return None,
    };
    let usage = MemcgUsage {
        usage_kb: num_after(rest, "")?,
        limit_kb: num_after(rest, "limit ")?,
        failcnt: num_after(rest, "failcnt ")?,
    };
    Some((counter, usage))
}

/// Parses a message that starts with `memory: usage ` (not the `swap:`, `memory+swap:` or
/// `kmem:` lines that follow it).
pub fn parse_memcg_usage(line: &str) -> Option<MemcgUsage> {
    parse_page_counter(line)
        .filter(|(c, _)| *c == PageCounter::Memory)
        .map(|(_, u)| u)
}

/// `Memory cgroup stats for /path:`: the OOM memcg whose `memory.stat` lines follow.
pub fn parse_stats_header(line: &str) -> Option<&str> {
    line.strip_prefix("Memory cgroup stats for ")?
        .strip_suffix(':')
}

/// One `name value` line of the `memory.stat` dump (v2: bytes and event counts; v1: bytes for
/// `cache`, `rss`, `shmem`, `mapped_file`, `total_*` sizes, counts for the `pg*` events).
pub fn parse_stat_line(line: &str) -> Option<(&str, u64)> {
    let (name, value) = line.trim().split_once(' ')?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    name_ok.then_some(())?;
    Some((name, value.trim().parse().ok()?))
}

/// `Tasks in /x are going to be killed due to memory.oom.group set`: the memcg whose tasks all
/// die with the victim.
pub fn parse_group_kill(line: &str) -> Option<&str> {
    line.strip_prefix("Tasks in ")?
        .strip_suffix(" are going to be killed due to memory.oom.group set")
}

/// show_mem's `N pages RAM` (global OOMs only).
pub fn parse_pages_ram(line: &str) -> Option<u64> {
    line.trim().strip_suffix(" pages RAM")?.trim().parse().ok()
}

/// show_mem's `Total swap = NkB` (global OOMs only).
pub fn parse_total_swap(line: &str) -> Option<u64> {
    line.trim()
        .strip_prefix("Total swap = ")?
        .strip_suffix("kB")?
        .parse()
        .ok()
}

/// One row of the task table the kernel logs before choosing (`dump_tasks()`, when
/// `vm.oom_dump_tasks` is 1): each eligible task's memory at the moment of the choice. Columns
/// the header did not name are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// The thread holding the mm (normally the thread group leader).
    pub pid: u32,
    pub uid: Option<u32>,
    pub tgid: Option<u32>,
    pub total_vm_pages: Option<u64>,
    /// anon + file + shmem pages (`get_mm_rss`).
    pub rss_pages: u64,
    /// Since 6.2 (with `rss_file`, `rss_shmem`).
    pub rss_anon_pages: Option<u64>,
    pub rss_file_pages: Option<u64>,
    pub rss_shmem_pages: Option<u64>,
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
    let unsigned = |name: &str| value(name).and_then(|v| u64::try_from(v).ok());
    Some(TaskRow {
        pid: pid.trim().parse().ok()?,
        uid: value("uid").and_then(|v| u32::try_from(v).ok()),
        tgid: value("tgid").and_then(|v| u32::try_from(v).ok()),
        total_vm_pages: unsigned("total_vm"),
        rss_pages: unsigned("rss")?,
        rss_anon_pages: unsigned("rss_anon"),
        rss_file_pages: unsigned("rss_file"),
        rss_shmem_pages: unsigned("rss_shmem"),
        pgtables_bytes: unsigned("pgtables_bytes")?,
        swapents: unsigned("swapents")?,
        oom_score_adj: i32::try_from(value("oom_score_adj")?).ok()?,
        name: values[values.len() - 1].trim().to_string(),
    })
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
    fn page_counter_lines() {
        let usage = MemcgUsage {
            usage_kb: 49152,
            limit_kb: 49152,
            failcnt: 70,
        };
        assert_eq!(parse_memcg_usage(USAGE), Some(usage.clone()));
        assert_eq!(
            parse_page_counter(USAGE),
            Some((PageCounter::Memory, usage))
        );
        assert!(parse_memcg_usage(USAGE_SWAP).is_none());
        assert_eq!(
            parse_page_counter(USAGE_SWAP),
            Some((
                PageCounter::MemorySwap,
                MemcgUsage {
                    usage_kb: 49152,
                    limit_kb: 9007199254740988,
                    failcnt: 0
                }
            ))
        );
        assert_eq!(
            parse_page_counter("swap: usage 0kB, limit 0kB, failcnt 0").map(|(c, _)| c),
            Some(PageCounter::Swap)
        );
        assert_eq!(
            parse_page_counter("kmem: usage 1kB, limit 9007199254740988kB, failcnt 0")
                .map(|(c, u)| (c, u.usage_kb)),
            Some((PageCounter::Kmem, 1))
        );
        assert!(parse_page_counter("tcp: usage 1kB, limit 2kB, failcnt 0").is_none());
    }

    #[test]
    fn stats_group_kill_and_show_mem_lines() {
        assert_eq!(
            parse_stats_header("Memory cgroup stats for /a/b c:"),
            Some("/a/b c")
        );
        assert_eq!(parse_stats_header("Memory cgroup stats for /a"), None);
        assert_eq!(
            parse_stat_line("total_rss 66707456"),
            Some(("total_rss", 66707456))
        );
        assert_eq!(parse_stat_line("anon 0"), Some(("anon", 0)));
        assert_eq!(
            parse_stat_line("Tasks state (memory values in pages):"),
            None
        );
        assert_eq!(parse_stat_line("anon x"), None);
        assert_eq!(
            parse_group_kill(
                "Tasks in /oomtrace-test-group-1 are going to be killed due to memory.oom.group set"
            ),
            Some("/oomtrace-test-group-1")
        );
        assert_eq!(parse_pages_ram("131070 pages RAM"), Some(131070));
        assert_eq!(parse_total_swap("Total swap = 0kB"), Some(0));
        assert_eq!(parse_total_swap("Total swap = 2097148kB"), Some(2097148));
    }

    /// `dump_tasks()` of 6.18 (verbatim) and 6.1 (no per-type RSS columns).
    const TASKS_6_18: &str = "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name";
    const TASKS_6_1: &str =
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name";

    #[test]
    fn task_table_rows_follow_their_header() {
        let new = parse_task_header(TASKS_6_18).expect("6.18 header");
        let row = parse_task_row("[  10235]     0 10235    18751    17730    12224     1410      4096   192512        0             0 oomt-shm", &new)
            .expect("6.18 row");
        assert_eq!(
            row,
            TaskRow {
                pid: 10235,
                uid: Some(0),
                tgid: Some(10235),
                total_vm_pages: Some(18751),
                rss_pages: 17730,
                rss_anon_pages: Some(12224),
                rss_file_pages: Some(1410),
                rss_shmem_pages: Some(4096),
                pgtables_bytes: 192512,
                swapents: 0,
                oom_score_adj: 0,
                name: "oomt-shm".into(),
            }
        );
        let old = parse_task_header(TASKS_6_1).expect("6.1 header");
        let row = parse_task_row(
            "[    145]  1000   140    12604    10401   139264       12          -500 my worker",
            &old,
        )
        .expect("6.1 row");
        assert_eq!(
            (
                row.uid,
                row.tgid,
                row.rss_pages,
                row.pgtables_bytes,
                row.swapents,
                row.oom_score_adj
            ),
            (Some(1000), Some(140), 10401, 139264, 12, -500)
        );
        assert_eq!(
            (row.rss_anon_pages, row.rss_file_pages, row.rss_shmem_pages),
            (None, None, None)
        );
        assert_eq!(row.name, "my worker");
        assert_eq!(parse_task_row("[ 1.234] not a row", &old), None);
        assert_eq!(parse_task_header("[  pid  ] something else"), None);
    }
}
