//! Failures counted by reason in `FAILURES`, and one log line per kill-path program run.
//!
//! Log lines go through aya-log, whose calls are compiled in but guarded by the loader-set
//! `AYA_LOG_LEVEL` global: userspace sets it to 0 unless run with `-v`, so the verifier sees a
//! constant and prunes every log call. The kill path notes its first failure ([`note`]) and
//! each of its programs ends with [`log_noted`]: the log calls then sit in one place, reached
//! once per program with arguments read back from map memory, which keeps their verification
//! cheap enough for 6.1's verifier (log calls inline at each failure pushed the victim program
//! past its million-instruction limit there). The memcg stat and reclaim programs only count.
use oomtrace_common::{Failure, CGROUP_NAME_LEN, CGROUP_PATH_DEPTH};

use crate::maps::{Note, FAILURES, LOG_NOTE};

#[inline(always)]
pub fn count(reason: Failure) {
    if let Some(n) = FAILURES.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot; only programs on this CPU write it, one at a time.
        unsafe { *n += 1 };
    }
}

/// Notes a failure (already counted) for this run's log line; the first one noted wins.
#[inline(always)]
pub fn note(reason: Failure, pid: u32, detail: u64) {
    if let Some(n) = LOG_NOTE.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot; only programs on this CPU use it, one at a time.
        let n = unsafe { &mut *n };
        if n.reason == 0 {
            *n = Note {
                reason: reason as u32 + 1,
                pid,
                detail,
            };
        }
    }
}

/// Counts a failure and notes it for this run's log line.
#[inline(always)]
pub fn count_and_note(reason: Failure, pid: u32, detail: u64) {
    count(reason);
    note(reason, pid, detail);
}

/// Logs (at `-v`) and clears the failure this run noted, if any. Called once at the end of
/// every kill-path program.
#[inline(never)]
pub fn log_noted() {
    let Some(n) = LOG_NOTE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `note`.
    let n = unsafe { &mut *n };
    let Note {
        reason,
        pid,
        detail,
    } = *n;
    if reason == 0 {
        return;
    }
    n.reason = 0;
    // aya-log-ebpf 0.2 only evaluates its context argument; there is none at hand here.
    macro_rules! warn {
        ($($arg:tt)+) => {
            ::aya_log_ebpf::warn!(&(), target: oomtrace_common::failure::LOG_TARGET, $($arg)+)
        };
    }
    const NULL_ARGUMENT: u32 = Failure::NullArgument as u32 + 1;
    const READ_TASK: u32 = Failure::ReadTask as u32 + 1;
    const READ_MM: u32 = Failure::ReadMm as u32 + 1;
    const READ_OOM_CONTROL: u32 = Failure::ReadOomControl as u32 + 1;
    const READ_TRACEPOINT: u32 = Failure::ReadTracepoint as u32 + 1;
    const PATH_TRUNCATED: u32 = Failure::PathTruncated as u32 + 1;
    const KILL_RINGBUF_RESERVE: u32 = Failure::KillRingbufReserve as u32 + 1;
    const PATH_RINGBUF_RESERVE: u32 = Failure::PathRingbufReserve as u32 + 1;
    const MAP_UPDATE: u32 = Failure::MapUpdate as u32 + 1;
    match reason {
        NULL_ARGUMENT => warn!("hook {:x}: null pointer argument, nothing recorded", detail),
        READ_TASK => warn!("victim {}: task_struct reads failed (fields {:x})", pid, detail),
        READ_MM => warn!("victim {}: mm_struct counters unreadable", pid),
        READ_OOM_CONTROL => warn!("victim {}: oom_control {:x} unreadable", pid, detail),
        READ_TRACEPOINT => warn!("oom/mark_victim: pid field unreadable"),
        PATH_TRUNCATED => warn!(
            "victim {}: cgroup path deeper than {} levels or with a name of {}+ bytes, sent incomplete: userspace names the cgroup by id",
            pid,
            CGROUP_PATH_DEPTH,
            CGROUP_NAME_LEN - 1
        ),
        PATH_RINGBUF_RESERVE => warn!("victim {}: ring buffer full, cgroup path lost", pid),
        KILL_RINGBUF_RESERVE => warn!("victim {}: ring buffer full, kill record lost", pid),
        MAP_UPDATE => warn!(
            "thread {}: oom_kill_process context not stored (map full): constraint will be inferred",
            pid
        ),
        _ => warn!("victim {}: cgroup path unreadable, sent incomplete", pid),
    }
}
