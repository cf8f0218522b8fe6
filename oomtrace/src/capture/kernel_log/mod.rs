//! The kernel's own OOM reports, read from its log: `/dev/kmsg` ([`read_kmsg_all`],
//! [`collect_reports`]) or saved text in the formats people have (`dmesg`, `dmesg -T`,
//! `journalctl -k`, syslog, plain messages: [`parse_log`]). For kills that happened before
//! oomtrace ran, and as the independent oracle the tests compare oomtrace's records with.
//!
//! One OOM kill logs, in this order (Linux 5.5+ formats; other lines in between are ignored):
//!
//! ```text
//! hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
//! memory: usage 65536kB, limit 65536kB, failcnt 123                  (memcg OOMs only,
//! swap: usage 0kB, limit 0kB, failcnt 0                                 v2; v1 prints
//! Memory cgroup stats for /a:                                           memory+swap: and kmem:)
//! anon 66060288 …                                                    (memory.stat, a line each)
//! 131070 pages RAM, Total swap = 0kB                                 (global OOMs: show_mem)
//! [  pid  ]   uid  tgid total_vm      rss … oom_score_adj name          (vm.oom_dump_tasks)
//! [   1234]     0  1234    17242    12307 …             0 hog
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=hog,pid=1234,uid=0
//! Memory cgroup out of memory: Killed process 1234 (hog) total-vm:70012kB, anon-rss:63512kB, file-rss:1280kB, shmem-rss:0kB, UID:0 pgtables:172kB oom_score_adj:0
//! ```
//!
//! With `memory.oom.group` set, `Tasks in /a are going to be killed due to memory.oom.group set`
//! and one more `Killed process` line per sibling follow, without summaries of their own. The
//! head of the report (through the summary) is rate-limited by the kernel (10 per 5 s); the
//! `Killed process` lines are not, so a storm leaves kills without their context.
mod kmsg;
mod lines;
mod prefix;

use std::collections::BTreeMap;

// For the tests' follower of /dev/kmsg (crate::testing::kernel_report).
#[cfg(any(test, feature = "testing"))]
pub(crate) use kmsg::{open_nonblocking, read_available};
pub use kmsg::{parse_kmsg_record, read_kmsg_all, KmsgError, KmsgRecord};
pub use lines::{
    parse_group_kill, parse_invoked, parse_killed_process, parse_memcg_usage,
    parse_oom_kill_summary, parse_page_counter, parse_pages_ram, parse_stat_line,
    parse_stats_header, parse_task_header, parse_task_row, parse_total_swap, InvokedOomKiller,
    KilledProcess, MemcgUsage, OomKillSummary, PageCounter, TaskRow,
};
pub use prefix::LogLine;

/// The kernel's report of one kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomReport {
    /// When the `Killed process` line was logged, as its prefix printed it (see [`LogLine`]).
    pub time: Option<String>,
    /// The same on `CLOCK_MONOTONIC`, in µs, when the prefix has it.
    pub monotonic_us: Option<u64>,
    /// The header of the OOM invocation this kill belongs to, if it was seen.
    pub invoked: Option<InvokedOomKiller>,
    /// The OOMing memcg's `memory:` counter (memcg OOMs only), if it was seen.
    pub memcg_usage: Option<MemcgUsage>,
    /// Its `swap:` counter (v2).
    pub swap_usage: Option<MemcgUsage>,
    /// Its `memory+swap:` counter (v1).
    pub memsw_usage: Option<MemcgUsage>,
    /// Its `kmem:` counter (v1).
    pub kmem_usage: Option<MemcgUsage>,
    /// `Memory cgroup stats for PATH:` and the `memory.stat` lines after it, by name, as
    /// printed (bytes for sizes, counts for events).
    pub memory_stat: Option<(String, BTreeMap<String, u64>)>,
    /// show_mem's `N pages RAM` (global OOMs).
    pub ram_pages: Option<u64>,
    /// show_mem's `Total swap = NkB` (global OOMs).
    pub swap_total_kb: Option<u64>,
    /// The invocation's task table (empty when `vm.oom_dump_tasks` is 0).
    pub tasks: Vec<TaskRow>,
    /// The `oom-kill:` summary this kill followed. Normally `summary.pid == killed.pid`; for a
    /// `memory.oom.group` sibling it is the chosen victim's summary, so the pids differ. `None`
    /// if no summary preceded the kill in the records given (e.g. it was overwritten).
    pub summary: Option<OomKillSummary>,
    pub killed: KilledProcess,
    /// The memcg of a `memory.oom.group` kill this victim belongs to (the chosen victim and
    /// each sibling).
    pub group_kill: Option<String>,
}

/// The lines of one invocation logged before its summary.
#[derive(Debug, Clone, Default)]
struct Header {
    invoked: Option<InvokedOomKiller>,
    memcg_usage: Option<MemcgUsage>,
    swap_usage: Option<MemcgUsage>,
    memsw_usage: Option<MemcgUsage>,
    kmem_usage: Option<MemcgUsage>,
    memory_stat: Option<(String, BTreeMap<String, u64>)>,
    ram_pages: Option<u64>,
    swap_total_kb: Option<u64>,
    columns: Option<Vec<String>>,
    tasks: Vec<TaskRow>,
}

/// Every kill reported in `text`, a kernel log in any of the formats of [`LogLine`] (see the
/// table in `prefix.rs`): raw `/dev/kmsg` records, `dmesg` (plain, `-T`, `-r`, `-x`, `--time-format iso`),
/// `journalctl -k` (short, short-precise, short-iso, short-monotonic), syslog's `kern.log`, or
/// bare messages.
pub fn parse_log(text: &str) -> Vec<OomReport> {
    assemble(&prefix::split_log(text))
}

/// Every kill reported in `/dev/kmsg` records, in log order.
pub fn collect_reports(records: &[KmsgRecord]) -> Vec<OomReport> {
    let lines: Vec<LogLine> = records.iter().flat_map(KmsgRecord::lines).collect();
    assemble(&lines)
}

/// Assembles one report per `Killed process` line from lines in log order.
///
/// Each kill gets the latest preceding `oom-kill:` summary, and the header lines (`invoked
/// oom-killer`, page counters, `memory.stat`, show_mem's totals, the task table) logged after
/// the summary before that, i.e. of the same OOM invocation; an `invoked` line resets them.
/// Kills sharing one summary (`memory.oom.group`) share its header.
fn assemble(lines: &[LogLine]) -> Vec<OomReport> {
    // Header lines of the invocation in progress; moved next to its summary once that is seen.
    let mut pending = Header::default();
    let mut current: Option<(OomKillSummary, Header)> = None;
    // The group-kill memcg of the current summary, and where its reports start.
    let mut group: Option<String> = None;
    let mut first_of_summary = 0;
    let mut in_stats = false;
    let mut out: Vec<OomReport> = Vec::new();
    for line in lines {
        let m = line.message.as_str();
        if in_stats {
            if let (Some((name, value)), Some((_, stat))) =
                (parse_stat_line(m), pending.memory_stat.as_mut())
            {
                stat.insert(name.to_string(), value);
                continue;
            }
            in_stats = false;
        }
        if let Some(killed) = parse_killed_process(m) {
            let (summary, h) = match &current {
                Some((s, h)) => (Some(s.clone()), h.clone()),
                None => (None, pending.clone()),
            };
            out.push(OomReport {
                time: line.time.clone(),
                monotonic_us: line.monotonic_us,
                invoked: h.invoked,
                memcg_usage: h.memcg_usage,
                swap_usage: h.swap_usage,
                memsw_usage: h.memsw_usage,
                kmem_usage: h.kmem_usage,
                memory_stat: h.memory_stat,
                ram_pages: h.ram_pages,
                swap_total_kb: h.swap_total_kb,
                tasks: h.tasks,
                summary,
                killed,
                group_kill: group.clone(),
            });
        } else if let Some(s) = parse_oom_kill_summary(m) {
            current = Some((s, std::mem::take(&mut pending)));
            group = None;
            first_of_summary = out.len();
        } else if let Some(i) = parse_invoked(m) {
            pending = Header {
                invoked: Some(i),
                ..Header::default()
            };
        } else if let Some((counter, usage)) = parse_page_counter(m) {
            let slot = match counter {
                PageCounter::Memory => &mut pending.memcg_usage,
                PageCounter::Swap => &mut pending.swap_usage,
                PageCounter::MemorySwap => &mut pending.memsw_usage,
                PageCounter::Kmem => &mut pending.kmem_usage,
            };
            *slot = Some(usage);
        } else if let Some(path) = parse_stats_header(m) {
            pending.memory_stat = Some((path.to_string(), BTreeMap::new()));
            in_stats = true;
        } else if let Some(path) = parse_group_kill(m) {
            // Printed after the chosen victim's own `Killed process` line.
            if current.is_some() {
                group = Some(path.to_string());
                for r in &mut out[first_of_summary..] {
                    r.group_kill = group.clone();
                }
            }
        } else if let Some(pages) = parse_pages_ram(m) {
            pending.ram_pages = Some(pages);
        } else if let Some(kb) = parse_total_swap(m) {
            pending.swap_total_kb = Some(kb);
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
mod tests;
