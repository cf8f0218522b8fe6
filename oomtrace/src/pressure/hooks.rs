//! When the per-page stat hooks are attached under `--stat-hooks adaptive`: at once when some
//! memory cgroup is in trouble ([`super::monitor::PressureMonitor::in_trouble`]), and detached
//! once none has been for a quiet period. A failed attach is retried after a pause, not every
//! second. Pure: the caller gives the clock, attaches, and reports back.
use std::time::Duration;

/// How long after a failed attach the next one is tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the caller should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Attach,
    Detach,
    Keep,
}

/// The adaptive policy's memory: when trouble was last seen, and when an attach may be tried
/// again after a failure.
#[derive(Debug, Clone)]
pub struct HooksPolicy {
    quiet_ns: u64,
    last_trouble_ns: Option<u64>,
    retry_at_ns: Option<u64>,
}

impl HooksPolicy {
    /// Detach after `quiet` without trouble.
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet_ns: u64::try_from(quiet.as_nanos()).unwrap_or(u64::MAX),
            last_trouble_ns: None,
            retry_at_ns: None,
        }
    }

    /// The action at `now_ns` (monotonic), given whether some cgroup is in trouble now and
    /// whether the hooks are attached.
    pub fn decide(&mut self, now_ns: u64, trouble: bool, attached: bool) -> Action {
        if trouble {
            self.last_trouble_ns = Some(now_ns);
            let may_try = self.retry_at_ns.is_none_or(|t| now_ns >= t);
            return if !attached && may_try {
                Action::Attach
            } else {
                Action::Keep
            };
        }
        let quiet = self
            .last_trouble_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= self.quiet_ns);
        if attached && quiet {
            Action::Detach
        } else {
            Action::Keep
        }
    }

    /// The attach asked for at `now_ns` failed: the next try waits [`RETRY_AFTER`].
    pub fn attach_failed(&mut self, now_ns: u64) {
        let pause = u64::try_from(RETRY_AFTER.as_nanos()).unwrap_or(u64::MAX);
        self.retry_at_ns = Some(now_ns.saturating_add(pause));
    }

    /// The attach asked for succeeded.
    pub fn attached(&mut self) {
        self.retry_at_ns = None;
    }

    /// The quiet period.
    pub fn quiet(&self) -> Duration {
        Duration::from_nanos(self.quiet_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn attaches_at_once_and_detaches_after_the_quiet_period() {
        let mut p = HooksPolicy::new(Duration::from_secs(60));
        assert_eq!(p.decide(0, false, false), Action::Keep);
        assert_eq!(p.decide(S, true, false), Action::Attach);
        p.attached();
        assert_eq!(p.decide(2 * S, true, true), Action::Keep);
        // Quiet from 3 s: trouble was last seen at 2 s.
        assert_eq!(p.decide(3 * S, false, true), Action::Keep);
        assert_eq!(p.decide(61 * S, false, true), Action::Keep);
        assert_eq!(p.decide(62 * S - 1, false, true), Action::Keep);
        assert_eq!(p.decide(62 * S, false, true), Action::Detach);
        // Detached: quiet stays quiet.
        assert_eq!(p.decide(63 * S, false, false), Action::Keep);
        assert_eq!(p.decide(64 * S, true, false), Action::Attach);
    }

    #[test]
    fn trouble_during_the_quiet_period_restarts_it() {
        let mut p = HooksPolicy::new(Duration::from_secs(3));
        assert_eq!(p.decide(0, true, false), Action::Attach);
        assert_eq!(p.decide(2 * S, false, true), Action::Keep);
        assert_eq!(p.decide(2 * S + 1, true, true), Action::Keep);
        assert_eq!(p.decide(5 * S, false, true), Action::Keep);
        assert_eq!(p.decide(5 * S + 1, false, true), Action::Detach);
    }

    #[test]
    fn a_failed_attach_waits_before_trying_again() {
        let mut p = HooksPolicy::new(Duration::from_secs(3));
        assert_eq!(p.decide(10 * S, true, false), Action::Attach);
        p.attach_failed(10 * S);
        assert_eq!(p.decide(11 * S, true, false), Action::Keep);
        assert_eq!(p.decide(39 * S, true, false), Action::Keep);
        assert_eq!(p.decide(40 * S, true, false), Action::Attach);
        p.attached();
        assert_eq!(p.decide(41 * S, true, false), Action::Attach);
    }

    #[test]
    fn hooks_attached_without_trouble_seen_detach_at_once() {
        // Attached with no trouble ever seen: nothing to wait for.
        let mut p = HooksPolicy::new(Duration::from_secs(3));
        assert_eq!(p.decide(0, false, true), Action::Detach);
        assert_eq!(p.quiet(), Duration::from_secs(3));
    }
}
