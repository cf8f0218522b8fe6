//! Failures counted by reason in `FAILURES`, and a log line for those on rare paths.
//!
//! Log lines go through aya-log, whose calls are compiled in but guarded by the loader-set
//! `AYA_LOG_LEVEL` global: userspace sets it to 0 unless run with `-v`, so the verifier sees a
//! constant and prunes every log call. Logs are only for the kill path (victim hooks and the
//! OOM context); the memcg stat and reclaim programs only count.
use oomtrace_common::Failure;

use crate::maps::FAILURES;

#[inline(always)]
pub fn count(reason: Failure) {
    if let Some(n) = FAILURES.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot; only programs on this CPU write it, one at a time.
        unsafe { *n += 1 };
    }
}

/// A warning through aya-log (on at `-v` only). aya-log-ebpf 0.2 only evaluates its context
/// argument, and the helpers that log have no program context at hand: `&()` stands in.
macro_rules! log_warn {
    ($($arg:tt)+) => {
        ::aya_log_ebpf::warn!(&(), target: oomtrace_common::failure::LOG_TARGET, $($arg)+)
    };
}
pub(crate) use log_warn;
