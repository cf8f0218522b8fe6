//! Memory pressure: per-cgroup timelines of the last minute, near-limit `memory_pressure`
//! records, and the `pressure` section attached to each kill.
//!
//! Sources, best first: the kernel's per-cgroup aggregation (memcg stat tracepoints, 6.13+; memcg
//! reclaim tracepoints, every kernel) read from `MEMCG_STATS` once a second, and the cgroup
//! files (usage every second; limit, events, PSI and `memory.stat` when needed).
use std::time::Duration;

/// How often timelines take a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub mod monitor;
pub mod timeline;

/// Command-line settings shared by `tail` and `agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct PressureArgs {
    /// Near-limit threshold: a cgroup whose usage reaches this fraction of its limit gets a
    /// `memory_pressure` record (0 < F <= 1).
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = parse_fraction)]
    pub pressure_threshold: f64,
    /// At most one `memory_pressure` record per cgroup per this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub pressure_interval: u64,
    /// Most cgroups with a memory limit to keep timelines for (about 6 KiB each).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub pressure_max_cgroups: usize,
    /// Do not attach the memcg stat tracepoints (6.13+). They fire about four times per page
    /// charged and freed, which costs page-fault-heavy workloads several percent (see the
    /// README's figures); without them near-limit records come from reclaim and 1 s samples,
    /// and timelines carry no charge breakdown.
    #[arg(long)]
    pub no_stat_hooks: bool,
    /// No pressure hooks, timelines, records or `pressure` sections at all.
    #[arg(long)]
    pub no_pressure: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        Ok(_) => Err("must be a fraction above 0 and at most 1, e.g. 0.9".into()),
        Err(e) => Err(format!("{e}: give a fraction such as 0.9")),
    }
}

/// What the tracer and the monitor need of [`PressureArgs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureSettings {
    pub threshold: f64,
    pub interval: Duration,
    pub max_cgroups: usize,
    /// Attach the memcg stat tracepoints.
    pub stat_hooks: bool,
}

impl PressureArgs {
    /// `None` with `--no-pressure`.
    pub fn settings(&self) -> Option<PressureSettings> {
        (!self.no_pressure).then_some(PressureSettings {
            threshold: self.pressure_threshold,
            interval: Duration::from_secs(self.pressure_interval),
            max_cgroups: self.pressure_max_cgroups,
            stat_hooks: !self.no_stat_hooks,
        })
    }
}

impl PressureSettings {
    /// The rate limit in ns, as the eBPF side and the 1 s detector compare it.
    pub fn interval_ns(&self) -> u64 {
        u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The threshold in 1/10000 of the limit, as the eBPF side compares it.
    pub fn threshold_per_10k(&self) -> u32 {
        (self.threshold * 10_000.0).round().clamp(1.0, 10_000.0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_fractions_are_checked_and_scaled() {
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("abc").is_err());
        let s = PressureSettings {
            threshold: parse_fraction("0.9").expect("valid"),
            interval: Duration::from_secs(1),
            max_cgroups: 1,
            stat_hooks: true,
        };
        assert_eq!(s.threshold_per_10k(), 9000);
    }
}
