//! One cgroup's last minute: a sample a second, bounded, and the figures derived from it.
use std::collections::VecDeque;

use oomtrace_common::stat_slot;

/// Samples kept: one a second for a minute.
pub const WINDOW: usize = 60;

/// Span over which the growth rate is measured.
pub const GROWTH_SPAN_NS: u64 = 10_000_000_000;

/// One point of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// `CLOCK_MONOTONIC` ns (the clock of the kernel records).
    pub ktime_ns: u64,
    pub usage_bytes: u64,
    /// Usage minus inactive page cache, when `memory.stat` was read for this sample or recently
    /// enough (see the monitor); `None` at the kill point, whose usage is the kernel's.
    pub working_set_bytes: Option<u64>,
    /// Charges since the previous sample, in bytes, by `stat_slot` (summed over the cgroup and
    /// its descendants; frees are not subtracted); `None` without the memcg stat tracepoints
    /// or while they were not attached for the whole interval.
    pub charged: Option<[i64; stat_slot::COUNT]>,
    /// Reclaim passes since the previous sample and their stall time (ns), by tasks of the
    /// cgroup and its descendants; `None` without the reclaim tracepoints.
    pub reclaim: Option<(u64, u64)>,
}

/// The last [`WINDOW`] samples of one cgroup.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    samples: VecDeque<Sample>,
}

impl Timeline {
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Usage growth in bytes per second over the [`GROWTH_SPAN_NS`] before `(end_ns,
    /// end_usage)`: measured from the oldest sample in that span (at least half a second back).
    pub fn growth_bytes_per_s(&self, end_ns: u64, end_usage: u64) -> Option<f64> {
        let from = end_ns.saturating_sub(GROWTH_SPAN_NS);
        let start = self
            .samples
            .iter()
            .find(|s| s.ktime_ns >= from && s.ktime_ns + 500_000_000 <= end_ns)?;
        let secs = (end_ns - start.ktime_ns) as f64 / 1e9;
        Some((end_usage as f64 - start.usage_bytes as f64) / secs)
    }

    /// Reclaim passes and stall ns in the samples up to `end_ns`; `None` without the reclaim
    /// tracepoints.
    pub fn reclaim_totals(&self, end_ns: u64) -> Option<(u64, u64)> {
        let mut seen = false;
        let mut total = (0, 0);
        for s in self.samples.iter().filter(|s| s.ktime_ns <= end_ns) {
            if let Some((n, ns)) = s.reclaim {
                seen = true;
                total.0 += n;
                total.1 += ns;
            }
        }
        seen.then_some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, usage_mib: u64) -> Sample {
        Sample {
            ktime_ns: secs * 1_000_000_000,
            usage_bytes: usage_mib << 20,
            working_set_bytes: None,
            charged: None,
            reclaim: Some((1, 2_000_000)),
        }
    }

    #[test]
    fn keeps_a_minute_and_measures_growth_over_ten_seconds() {
        let mut t = Timeline::default();
        for s in 0..100 {
            t.push(at(s, s));
        }
        assert_eq!(t.samples().count(), WINDOW);
        assert_eq!(t.samples().next().map(|s| s.ktime_ns), Some(40_000_000_000));
        // 1 MiB a second.
        let g = t
            .growth_bytes_per_s(99_000_000_000, 99 << 20)
            .expect("growth");
        assert!((g - f64::from(1 << 20)).abs() < 1.0, "{g}");
        assert_eq!(t.reclaim_totals(50_000_000_000), Some((11, 22_000_000)));
        let upto = |end| t.samples().filter(|s| s.ktime_ns <= end).count();
        assert_eq!(upto(45_500_000_000), 6);
    }

    #[test]
    fn no_growth_without_an_earlier_sample() {
        let mut t = Timeline::default();
        t.push(at(10, 5));
        assert_eq!(t.growth_bytes_per_s(10_200_000_000, 6 << 20), None);
        assert!(t.growth_bytes_per_s(11_000_000_000, 6 << 20).is_some());
    }
}
