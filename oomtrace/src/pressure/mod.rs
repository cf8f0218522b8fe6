//! Memory pressure: per-cgroup timelines of the last minute, near-limit `memory_pressure`
//! records, and the `pressure` section attached to each kill.
//!
//! Sources, best first: the kernel's per-cgroup aggregation (memcg stat tracepoints, 6.13+; memcg
//! reclaim tracepoints, every kernel) read from `MEMCG_STATS` once a second, and the cgroup
//! files (usage every second; limit, events, PSI and `memory.stat` when needed).
use std::time::Duration;

/// How often timelines take a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub mod hooks;
pub mod monitor;
pub mod thrashing;
pub mod timeline;

/// Pressure settings (`--pressure-*`), for the tracer and the monitor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureSettings {
    pub threshold: f64,
    pub interval: Duration,
    pub max_cgroups: usize,
    /// When the per-page memcg stat tracepoints are attached.
    pub stat_hooks: StatHooksMode,
    /// Working set / limit from which a cgroup needs the per-page stat hooks (`adaptive`).
    pub hooks_threshold: f64,
    /// How long no cgroup must be in trouble before the stat hooks are detached (`adaptive`).
    pub hooks_quiet: Duration,
}

/// `--stat-hooks`: when the per-page memcg stat tracepoints (6.13+) are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StatHooksMode {
    /// Only while some memory cgroup is in trouble (its working set above
    /// `--stat-hooks-threshold` of its limit, or its reclaim failing), until a quiet period.
    #[default]
    Adaptive,
    /// From start to exit.
    Always,
    /// Never (the same as `--no-stat-hooks`).
    Never,
}

impl StatHooksMode {
    /// Whether the stat programs are loaded at all.
    pub fn loads(self) -> bool {
        self != Self::Never
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Adaptive => "adaptive",
            Self::Always => "always",
            Self::Never => "never",
        }
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
