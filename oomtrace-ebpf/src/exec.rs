//! One `ExecRecord` per exec (`sched:sched_process_exec`), on a ring of its own: a storm of
//! execs can fill `PROCESS_EVENTS` but never takes room from kill records in `EVENTS`.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use oomtrace_common::{ExecRecord, Failure, RecordKind};

use crate::{failure, maps::PROCESS_EVENTS};

/// Sends the exec of the current process (the new image). Never logs: execs are frequent.
#[inline(always)]
pub fn emit() {
    let rec = ExecRecord {
        kind: RecordKind::Exec as u32,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        // SAFETY: the helper has no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    // No forced wakeup: userspace reads these in batches, when it wakes for any reason.
    if PROCESS_EVENTS.output::<ExecRecord>(&rec, 0).is_err() {
        failure::count(Failure::ExecRingbufReserve);
    }
}
