//! Why it died: the verdict on one kill, from its [`Evidence`], as findings (a code, a severity,
//! one sentence and the numbers behind it), most likely first, and a sizing.
//!
//! The rules are pure functions of the evidence, so a live kill record and a kill read back
//! from the kernel's own log get the same verdict where they hold the same evidence. Each rule
//! states only what its evidence supports; a rule whose evidence is absent stays silent.
//! The codes and their thresholds are listed in [`CODES`] and in the README ("Why did it die?").
pub mod evidence;
pub mod kernel_log;
pub mod live;
pub mod rules;
pub mod runtime;
pub mod shape;
pub mod sizing;

use serde_json::{Map, Value};

pub use evidence::Evidence;
pub use sizing::Sizing;

/// How much a finding matters: `critical` names the cause, `warning` a likely contributor,
/// `info` context worth knowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One verdict line.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub summary: String,
    /// The numbers the summary rests on.
    pub evidence: Map<String, Value>,
}

/// The verdict: findings, most likely first, and the sizing.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub findings: Vec<Finding>,
    pub sizing: Sizing,
}

impl Verdict {
    /// The top finding's code (the metrics' `reason` label), or `none`.
    pub fn reason(&self) -> &'static str {
        self.findings.first().map_or("none", |f| f.code)
    }

    /// One line for a table or an Event: the top finding's summary.
    pub fn headline(&self) -> Option<String> {
        self.findings
            .first()
            .map(|f| format!("{}: {}", f.code, f.summary))
    }
}

/// Every code, in the order the rules rank them when several hold at the same severity.
pub const CODES: &[&str] = &[
    "runtime_heap_cap_above_limit",
    "runtime_heap_cap_without_headroom",
    "runtime_heap_uncapped",
    "sidecar_share",
    "tmpfs_shmem",
    "global_overcommit",
    "not_container_init",
    "victim_not_largest",
    "global_unlimited_consumers",
    "spike",
    "leak",
    "kernel_memory",
    "page_cache",
    "group_kill",
    "victim_anon_at_limit",
];

/// The verdict on one kill.
pub fn diagnose(e: &Evidence) -> Verdict {
    let mut findings = rules::all(e);
    findings.sort_by_key(|f| {
        (
            f.severity,
            CODES
                .iter()
                .position(|c| *c == f.code)
                .unwrap_or(CODES.len()),
        )
    });
    Verdict {
        sizing: sizing::size(e, &findings),
        findings,
    }
}

#[cfg(test)]
mod tests;
