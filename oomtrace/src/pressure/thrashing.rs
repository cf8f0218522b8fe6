//! Thrashing: a cgroup stuck at its limit without being killed. Reclaim runs all the time, the
//! working set stays high, and what reclaim evicts is faulted straight back in (a process's own
//! code pages, typically), so reclaim always "makes progress" and the kernel never declares
//! OOM. The process is slow and "at 100% memory" but never restarts.
//!
//! Judged once a second from the sample and `memory.stat`: the state holds when, over the last
//! interval,
//! - the working set (usage − inactive file) is at least [`WORKING_SET_RATIO`] of the limit,
//! - refaults (`workingset_refault_*`) brought back at least [`REFAULT_LIMIT_SHARE`] of the
//!   limit per second, and
//! - with the reclaim tracepoints, tasks of the cgroup stalled in reclaim for at least
//!   [`STALL_MS_PER_S`] per second.
//!
//! After [`CONFIRM_SAMPLES`] such samples in a row the cgroup is thrashing: the first record
//! then, the next ones at most once per rate-limit interval while it lasts.
use crate::cgroup::memory::Psi;

/// Why a cgroup is judged to be thrashing: the figures of the interval that made the record.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrashEvidence {
    /// `CLOCK_MONOTONIC` ns since when every interval met the state.
    pub since_ns: u64,
    /// How long it has been stuck, up to this record.
    pub stuck_ns: u64,
    /// Pages refaulted soon after eviction, per second.
    pub refaults_per_s: f64,
    pub refault_bytes_per_s: f64,
    pub major_faults_per_s: Option<f64>,
    /// With the reclaim tracepoints.
    pub reclaims_per_s: Option<f64>,
    pub reclaim_stall_ms_per_s: Option<f64>,
    /// The cgroup's memory pressure stall information (v2 with PSI).
    pub psi: Option<Psi>,
}

/// Working set / limit from which a cgroup can be thrashing.
pub const WORKING_SET_RATIO: f64 = 0.8;
/// Refaulted bytes per second, as a share of the limit, from which reclaim is undoing itself.
pub const REFAULT_LIMIT_SHARE: f64 = 0.01;
/// Reclaim stall per second from which reclaim is "continuous" (with the reclaim tracepoints).
pub const STALL_MS_PER_S: f64 = 50.0;
/// Samples in a row that confirm the state.
pub const CONFIRM_SAMPLES: u32 = 3;

/// One interval's figures for a cgroup, from two `memory.stat` reads and the sample between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Start and end of the interval (`CLOCK_MONOTONIC` ns).
    pub from_ns: u64,
    pub to_ns: u64,
    pub working_set_bytes: u64,
    pub limit_bytes: u64,
    /// Refaults and major faults over the interval (counts).
    pub refaults: u64,
    pub major_faults: Option<u64>,
    /// Reclaim passes and stall ns over the interval; `None` without the reclaim tracepoints.
    pub reclaim: Option<(u64, u64)>,
}

impl Observation {
    fn secs(&self) -> f64 {
        (self.to_ns.saturating_sub(self.from_ns) as f64 / 1e9).max(1e-3)
    }

    /// Whether this interval meets the state.
    pub fn meets(&self, page_size: u64) -> bool {
        if self.limit_bytes == 0 {
            return false;
        }
        let limit = self.limit_bytes as f64;
        let refault_bytes_per_s = (self.refaults * page_size) as f64 / self.secs();
        let stalled = self
            .reclaim
            .is_none_or(|(_, ns)| ns as f64 / 1e6 / self.secs() >= STALL_MS_PER_S);
        self.working_set_bytes as f64 >= WORKING_SET_RATIO * limit
            && refault_bytes_per_s >= REFAULT_LIMIT_SHARE * limit
            && stalled
    }
}

/// One cgroup's thrashing state across samples.
#[derive(Debug, Clone, Default)]
pub struct Thrashing {
    /// Since when every interval has met the state, and how many in a row.
    since_ns: Option<u64>,
    run: u32,
    /// When the last thrashing record was made.
    last_record_ns: Option<u64>,
    /// Seconds spent in the confirmed state, in all.
    seconds: f64,
}

impl Thrashing {
    /// Takes one interval's figures; returns the evidence when a record is due (the state just
    /// confirmed, or still on after `interval_ns` since the last record).
    pub fn observe(
        &mut self,
        o: &Observation,
        page_size: u64,
        interval_ns: u64,
    ) -> Option<ThrashEvidence> {
        if !o.meets(page_size) {
            self.since_ns = None;
            self.run = 0;
            return None;
        }
        let since = *self.since_ns.get_or_insert(o.from_ns);
        self.run += 1;
        if self.run < CONFIRM_SAMPLES {
            return None;
        }
        // The whole run counts once confirmed, then each interval as it comes.
        self.seconds += if self.run == CONFIRM_SAMPLES {
            o.to_ns.saturating_sub(since) as f64 / 1e9
        } else {
            o.secs()
        };
        if self
            .last_record_ns
            .is_some_and(|t| o.to_ns.saturating_sub(t) < interval_ns)
        {
            return None;
        }
        self.last_record_ns = Some(o.to_ns);
        let secs = o.secs();
        Some(ThrashEvidence {
            since_ns: since,
            stuck_ns: o.to_ns.saturating_sub(since),
            refaults_per_s: o.refaults as f64 / secs,
            refault_bytes_per_s: (o.refaults * page_size) as f64 / secs,
            major_faults_per_s: o.major_faults.map(|m| m as f64 / secs),
            reclaims_per_s: o.reclaim.map(|(n, _)| n as f64 / secs),
            reclaim_stall_ms_per_s: o.reclaim.map(|(_, ns)| ns as f64 / 1e6 / secs),
            psi: None,
        })
    }

    /// Ends a run without an interval that breaks it (no figures for one).
    pub fn interrupt(&mut self) {
        self.since_ns = None;
        self.run = 0;
    }

    /// Whether the last interval met the state (confirmed or not yet).
    pub fn meeting(&self) -> bool {
        self.run > 0
    }

    /// Seconds spent thrashing (confirmed) since the monitor started watching the cgroup.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 96 << 20;

    /// The figures of a real stuck Node.js process (96 MiB limit, cgroup v1, 6.18): 93.7 MB
    /// anon, 3 MB inactive file, about 130,000 refaults a second.
    fn stuck(sec: u64) -> Observation {
        Observation {
            from_ns: sec * 1_000_000_000,
            to_ns: (sec + 1) * 1_000_000_000,
            working_set_bytes: 97_500_000,
            limit_bytes: LIMIT,
            refaults: 130_000,
            major_faults: Some(150),
            reclaim: Some((9_000, 700_000_000)),
        }
    }

    #[test]
    fn confirmed_after_three_samples_then_rate_limited() {
        let mut t = Thrashing::default();
        let interval = 30_000_000_000;
        assert!(t.observe(&stuck(10), 4096, interval).is_none());
        assert!(t.meeting());
        assert!(t.observe(&stuck(11), 4096, interval).is_none());
        let ev = t.observe(&stuck(12), 4096, interval).expect("confirmed");
        assert_eq!(ev.since_ns, 10_000_000_000);
        assert_eq!(ev.stuck_ns, 3_000_000_000);
        assert_eq!(ev.refaults_per_s, 130_000.0);
        assert_eq!(ev.refault_bytes_per_s, 130_000.0 * 4096.0);
        assert_eq!(ev.reclaim_stall_ms_per_s, Some(700.0));
        assert_eq!(t.seconds(), 3.0);
        // Still stuck: counted, but no record until 30 s after the first.
        for s in 13..42 {
            assert!(t.observe(&stuck(s), 4096, interval).is_none(), "{s}");
        }
        assert_eq!(t.seconds(), 32.0);
        let again = t
            .observe(&stuck(42), 4096, interval)
            .expect("rate limit over");
        assert_eq!(again.stuck_ns, 33_000_000_000);
    }

    #[test]
    fn page_cache_churn_low_working_set_or_no_stall_is_not_thrashing() {
        let mut t = Thrashing::default();
        // A cache-heavy reader at its limit: high refaults, but the working set is small.
        let cache = Observation {
            working_set_bytes: 250_000,
            ..stuck(1)
        };
        // An anon-heavy cgroup that is not reclaiming.
        let calm = Observation {
            refaults: 0,
            reclaim: Some((0, 0)),
            ..stuck(2)
        };
        // Refaults without a stall worth the name.
        let no_stall = Observation {
            reclaim: Some((3, 1_000_000)),
            ..stuck(3)
        };
        for o in [cache, calm, no_stall] {
            assert!(!o.meets(4096), "{o:?}");
            assert!(t.observe(&o, 4096, 1).is_none());
        }
        assert!(!t.meeting());
        // An interruption restarts the count.
        t.observe(&stuck(4), 4096, 1);
        t.observe(&stuck(5), 4096, 1);
        t.observe(&calm, 4096, 1);
        assert!(t.observe(&stuck(7), 4096, 1).is_none());
        assert_eq!(t.seconds(), 0.0);
    }
}
