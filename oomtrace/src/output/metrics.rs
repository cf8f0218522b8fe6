//! The agent's Prometheus metrics, rendered in the text exposition format (0.0.4). Labels are
//! bounded: namespace, pod, container, constraint and scope only — never pid, comm or ids — and
//! at most [`MAX_KILL_SERIES`] label sets, beyond which kills count under empty pod labels.
use std::{collections::BTreeMap, fmt::Write as _};

use oomtrace_common::Failure;

/// Distinct `oomtrace_oom_kills_total` label sets kept before folding new ones.
pub const MAX_KILL_SERIES: usize = 2000;

/// Labels of one kill series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KillLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub constraint: String,
    pub scope: String,
    /// The verdict's top code (`diagnosis[0].code`, or `none`): one of a fixed set.
    pub reason: String,
}

/// Labels of one `oomtrace_sigkills_total` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SigkillLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// One of the fixed causes (`user`, `runtime_stop`, …).
    pub cause: &'static str,
}

/// Workload labels of one usage-ratio series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The pressure families, replaced as a whole after each sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PressureMetrics {
    /// Usage / limit of each Kubernetes container with a limit (at most [`MAX_KILL_SERIES`]).
    pub usage_ratio: BTreeMap<ContainerLabels, f64>,
    /// Working set (usage − inactive file) / limit of the same containers, where known.
    pub working_set_ratio: BTreeMap<ContainerLabels, f64>,
    /// Seconds each of them has spent thrashing (stuck at its limit, refaulting).
    pub thrashing_seconds: BTreeMap<ContainerLabels, f64>,
    /// Kernel near-limit records dismissed because the working set was below the threshold.
    pub dismissed: u64,
    /// Memcg reclaim passes and their stall time since start, node-wide (reclaim tracepoints).
    pub reclaims: Option<(u64, u64)>,
    /// Memory event counters (`memory.events.local` on v2, `failcnt`/`oom_kill` on v1) of the
    /// limited cgroups, summed, since start.
    pub events: BTreeMap<String, u64>,
    /// `memory_pressure` records by source since start.
    pub records: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub pressure: PressureMetrics,
    kills: BTreeMap<KillLabels, u64>,
    sigkills: BTreeMap<SigkillLabels, u64>,
    /// Records whose victim was already exiting (no SIGKILL sent).
    exiting: u64,
    /// Lookups that found no name, by source (`cgroup_path`, `kubelet_logs`, `api`).
    misses: BTreeMap<&'static str, u64>,
    events_lost: u64,
    /// Kills the kernel counted that no record was written for (`crate::reconcile`).
    unrecorded: u64,
    /// The kernel side's failures by reason (index: `Failure as usize`), since load.
    kernel_failures: [u64; Failure::COUNT],
    /// Records that could not be decoded.
    malformed: u64,
    event_failures: u64,
    /// Records an output dropped (its queue was full or it was closed), by sink.
    dropped: BTreeMap<&'static str, u64>,
    /// Output failures by sink (`file`: writes, rotations, reopens), running totals.
    output_errors: BTreeMap<&'static str, u64>,
    /// Connections the HTTP endpoint closed unanswered to stay within its cap.
    http_shed: u64,
    /// Whether the per-page stat hooks are attached now, and the seconds they were since start.
    stat_hooks: (bool, f64),
    pub version: String,
    /// `tp_btf/mark_victim,fentry/oom_kill_process`
    pub hooks: String,
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_string(),
            ..Self::default()
        }
    }

    pub fn count_kill(&mut self, mut labels: KillLabels) {
        if !self.kills.contains_key(&labels) && self.kills.len() >= MAX_KILL_SERIES {
            labels.pod.clear();
            labels.container.clear();
        }
        *self.kills.entry(labels).or_default() += 1;
    }

    /// A `sigkill` record; label sets beyond [`MAX_KILL_SERIES`] count under empty pod labels.
    pub fn count_sigkill(&mut self, mut labels: SigkillLabels) {
        if !self.sigkills.contains_key(&labels) && self.sigkills.len() >= MAX_KILL_SERIES {
            labels.pod.clear();
            labels.container.clear();
        }
        *self.sigkills.entry(labels).or_default() += 1;
    }

    pub fn count_exiting(&mut self) {
        self.exiting += 1;
    }

    pub fn count_miss(&mut self, source: &'static str) {
        *self.misses.entry(source).or_default() += 1;
    }

    /// Victims without `victim.process` (nothing readable in `/proc`), running total.
    pub fn set_process_misses(&mut self, n: u64) {
        self.misses.insert("process", n);
    }

    /// The namer's running totals of misses.
    pub fn set_misses(&mut self, cgroup_path: u64, kubelet_logs: u64, api: u64) {
        self.misses.insert("cgroup_path", cgroup_path);
        self.misses.insert("kubelet_logs", kubelet_logs);
        self.misses.insert("api", api);
    }

    /// Kubernetes Events the agent could not post.
    pub fn count_event_failure(&mut self) {
        self.event_failures += 1;
    }

    /// A sink's running total of records dropped (`stdout`, `file`, `k8s_events`); every sink
    /// the agent has is set from the start, so its series exists at 0.
    pub fn set_dropped(&mut self, sink: &'static str, total: u64) {
        self.dropped.insert(sink, total);
    }

    /// A sink's running total of failures (for `file`: [`super::rotate::RotatingFile::errors`]).
    pub fn set_output_errors(&mut self, sink: &'static str, total: u64) {
        self.output_errors.insert(sink, total);
    }

    /// A connection the HTTP endpoint closed unanswered (over its connection cap).
    pub fn count_http_shed(&mut self) {
        self.http_shed += 1;
    }

    pub fn count_malformed(&mut self) {
        self.malformed += 1;
    }

    /// The kernel side's running total of records it could not queue.
    pub fn set_events_lost(&mut self, total: u64) {
        self.events_lost = total;
    }

    /// The reconciler's running total of kills the kernel counted and no record showed.
    pub fn set_unrecorded(&mut self, total: u64) {
        self.unrecorded = total;
    }

    /// Whether the per-page memcg stat hooks are attached now, and for how long they have
    /// been since start (`--stat-hooks`).
    pub fn set_stat_hooks(&mut self, attached: bool, seconds: f64) {
        self.stat_hooks = (attached, seconds);
    }

    /// The kernel side's running totals of failures by reason.
    pub fn set_kernel_failures(&mut self, totals: &[(Failure, u64)]) {
        for (reason, n) in totals {
            self.kernel_failures[*reason as usize] = *n;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP oomtrace_oom_kills_total OOM kills recorded, by Kubernetes workload, constraint, whose limit was hit and the verdict's top code.\n# TYPE oomtrace_oom_kills_total counter"
        );
        for (l, n) in &self.kills {
            let _ = writeln!(
                out,
                "oomtrace_oom_kills_total{{namespace=\"{}\",pod=\"{}\",container=\"{}\",constraint=\"{}\",scope=\"{}\",reason=\"{}\"}} {n}",
                escape(&l.namespace),
                escape(&l.pod),
                escape(&l.container),
                escape(&l.constraint),
                escape(&l.scope),
                escape(&l.reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_sigkills_total SIGKILLs to workloads other than the kernel's OOM killer's, by Kubernetes workload and cause.\n# TYPE oomtrace_sigkills_total counter"
        );
        for (l, n) in &self.sigkills {
            let _ = writeln!(
                out,
                "oomtrace_sigkills_total{{namespace=\"{}\",pod=\"{}\",container=\"{}\",cause=\"{}\"}} {n}",
                escape(&l.namespace),
                escape(&l.pod),
                escape(&l.container),
                l.cause
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_oom_victims_exiting_total Tasks the OOM killer chose that were already exiting (no SIGKILL sent).\n# TYPE oomtrace_oom_victims_exiting_total counter\noomtrace_oom_victims_exiting_total {}",
            self.exiting
        );
        let _ = writeln!(
            out,
            "# HELP oomtrace_events_lost_total Records the kernel side could not queue (ring buffer full).\n# TYPE oomtrace_events_lost_total counter\noomtrace_events_lost_total {}",
            self.events_lost
        );
        let _ = writeln!(
            out,
            "# HELP oomtrace_oom_kills_unrecorded_total OOM kills the kernel counted (/proc/vmstat oom_kill) since the agent started that no record was written for; each gap is logged with its cgroup.\n# TYPE oomtrace_oom_kills_unrecorded_total counter\noomtrace_oom_kills_unrecorded_total {}",
            self.unrecorded
        );
        let _ = writeln!(
            out,
            "# HELP oomtrace_records_malformed_total Records that could not be decoded.\n# TYPE oomtrace_records_malformed_total counter\noomtrace_records_malformed_total {}",
            self.malformed
        );
        let _ = writeln!(
            out,
            "# HELP oomtrace_metadata_misses_total Name lookups that found nothing, by source.\n# TYPE oomtrace_metadata_misses_total counter"
        );
        for source in ["cgroup_path", "kubelet_logs", "api", "process"] {
            let n = self.misses.get(source).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "oomtrace_metadata_misses_total{{source=\"{source}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_k8s_event_failures_total Kubernetes Events (--k8s-events) that could not be posted.\n# TYPE oomtrace_k8s_event_failures_total counter\noomtrace_k8s_event_failures_total {}",
            self.event_failures
        );
        let _ = writeln!(
            out,
            "# HELP oomtrace_records_dropped_total Records an output dropped because it was not keeping up (its queue was full) or was closed, by sink; capture and the other sinks went on.\n# TYPE oomtrace_records_dropped_total counter"
        );
        for (sink, n) in &self.dropped {
            let _ = writeln!(out, "oomtrace_records_dropped_total{{sink=\"{sink}\"}} {n}");
        }
        self.render_kernel_failures(&mut out);
        self.render_stat_hooks(&mut out);
        self.render_bounds(&mut out);
        self.render_pressure(&mut out);
        let _ = writeln!(
            out,
            "# HELP oomtrace_build_info oomtrace's version and the kernel hooks in use.\n# TYPE oomtrace_build_info gauge\noomtrace_build_info{{version=\"{}\",hooks=\"{}\"}} 1",
            escape(&self.version),
            escape(&self.hooks)
        );
        out
    }
}

impl Metrics {
    /// `oomtrace_kernel_failures_total{reason}`: every reason, 0 included, so that a rate or an
    /// alert has its series from the start.
    fn render_kernel_failures(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP oomtrace_kernel_failures_total Failures of the eBPF programs since they were loaded, by reason (a kernel read that faulted, a truncated cgroup path, a full ring buffer or map, ...).\n# TYPE oomtrace_kernel_failures_total counter"
        );
        for reason in Failure::ALL {
            let _ = writeln!(
                out,
                "oomtrace_kernel_failures_total{{reason=\"{}\"}} {}",
                reason.name(),
                self.kernel_failures[reason as usize]
            );
        }
    }

    /// The per-page stat hooks' state (`--stat-hooks adaptive` attaches them on demand).
    fn render_stat_hooks(&self, out: &mut String) {
        let (attached, seconds) = self.stat_hooks;
        let _ = writeln!(
            out,
            "# HELP oomtrace_stat_hooks_attached Whether the per-page memcg stat tracepoints are attached now (1) or not (0); see --stat-hooks.\n# TYPE oomtrace_stat_hooks_attached gauge\noomtrace_stat_hooks_attached {}",
            u8::from(attached)
        );
        let _ = writeln!(
            out,
            "# HELP oomtrace_stat_hooks_attached_seconds_total Time the per-page memcg stat tracepoints have been attached since the agent started.\n# TYPE oomtrace_stat_hooks_attached_seconds_total counter\noomtrace_stat_hooks_attached_seconds_total {seconds:.3}"
        );
    }

    /// Output and HTTP failures: the `file` sink always (0 included), others once reported.
    fn render_bounds(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP oomtrace_output_errors_total Failures of an output sink (file: a write, rotation or reopen that failed), by sink.\n# TYPE oomtrace_output_errors_total counter"
        );
        let file = self.output_errors.get("file").copied().unwrap_or(0);
        let _ = writeln!(out, "oomtrace_output_errors_total{{sink=\"file\"}} {file}");
        for (sink, n) in self.output_errors.iter().filter(|(s, _)| **s != "file") {
            let _ = writeln!(
                out,
                "oomtrace_output_errors_total{{sink=\"{}\"}} {n}",
                escape(sink)
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_http_connections_shed_total Connections to /metrics, /healthz and /readyz closed unanswered to stay within the connection cap (the oldest idle one, or the new one).\n# TYPE oomtrace_http_connections_shed_total counter\noomtrace_http_connections_shed_total {}",
            self.http_shed
        );
    }

    fn render_pressure(&self, out: &mut String) {
        let p = &self.pressure;
        let families = [
            (
                "oomtrace_memory_usage_ratio",
                "gauge",
                "Memory usage / limit of each Kubernetes container with a limit, sampled every second (page cache included).",
                &p.usage_ratio,
            ),
            (
                "oomtrace_memory_working_set_ratio",
                "gauge",
                "Working set (usage minus inactive page cache, as the kubelet counts it) / limit of each Kubernetes container with a limit.",
                &p.working_set_ratio,
            ),
            (
                "oomtrace_memory_thrashing_seconds_total",
                "counter",
                "Seconds each Kubernetes container with a limit spent thrashing: stuck at its limit, its working set high, reclaim stalling and evicted pages refaulting.",
                &p.thrashing_seconds,
            ),
        ];
        for (name, kind, help, series) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (l, v) in series.iter().take(MAX_KILL_SERIES) {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",pod=\"{}\",container=\"{}\"}} {v:.4}",
                    escape(&l.namespace),
                    escape(&l.pod),
                    escape(&l.container)
                );
            }
        }
        if let Some((n, ns)) = p.reclaims {
            let _ = writeln!(
                out,
                "# HELP oomtrace_memory_reclaims_total Memory-cgroup reclaim passes (direct reclaim at a limit), node-wide.\n# TYPE oomtrace_memory_reclaims_total counter\noomtrace_memory_reclaims_total {n}"
            );
            let _ = writeln!(
                out,
                "# HELP oomtrace_memory_reclaim_stall_seconds_total Time tasks spent stalled in memory-cgroup reclaim, node-wide.\n# TYPE oomtrace_memory_reclaim_stall_seconds_total counter\noomtrace_memory_reclaim_stall_seconds_total {:.6}",
                ns as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_memory_events_total Memory events of the cgroups with a limit (v2 memory.events.local; v1 failcnt, oom_kill), since start.\n# TYPE oomtrace_memory_events_total counter"
        );
        for (event, n) in &p.events {
            let _ = writeln!(
                out,
                "oomtrace_memory_events_total{{event=\"{}\"}} {n}",
                escape(event)
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_memory_pressure_records_total memory_pressure records (a cgroup near its limit), by source.\n# TYPE oomtrace_memory_pressure_records_total counter"
        );
        for (source, n) in &p.records {
            let _ = writeln!(
                out,
                "oomtrace_memory_pressure_records_total{{source=\"{source}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP oomtrace_memory_pressure_dismissed_total Kernel near-limit records dropped because the cgroup's working set was below the threshold (its usage was page cache).\n# TYPE oomtrace_memory_pressure_dismissed_total counter\noomtrace_memory_pressure_dismissed_total {}",
            p.dismissed
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pod: &str) -> KillLabels {
        KillLabels {
            namespace: "shop".into(),
            pod: pod.into(),
            container: "app".into(),
            constraint: "memcg".into(),
            scope: "container".into(),
            reason: "leak".into(),
        }
    }

    #[test]
    fn renders_counters_with_escaped_labels() {
        let mut m = Metrics {
            version: "0.1.0".into(),
            hooks: "tp_btf/mark_victim".into(),
            ..Metrics::default()
        };
        m.count_kill(labels("cart-7d9f"));
        m.count_kill(labels("cart-7d9f"));
        m.count_kill(labels("we\"ird"));
        m.count_miss("kubelet_logs");
        for cause in ["user", "user", "runtime_stop"] {
            m.count_sigkill(SigkillLabels {
                namespace: "shop".into(),
                pod: "cart-7d9f".into(),
                container: "app".into(),
                cause,
            });
        }
        m.set_events_lost(3);
        m.set_output_errors("file", 7);
        m.count_http_shed();
        m.count_http_shed();
        m.set_unrecorded(2);
        m.set_kernel_failures(&[(Failure::PathTruncated, 2), (Failure::ReadMm, 0)]);
        let idle = m.render();
        assert!(
            idle.contains("\noomtrace_stat_hooks_attached 0\n"),
            "{idle}"
        );
        assert!(idle.contains("\noomtrace_stat_hooks_attached_seconds_total 0.000\n"));
        m.set_stat_hooks(true, 12.5);
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE oomtrace_stat_hooks_attached gauge\noomtrace_stat_hooks_attached 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE oomtrace_stat_hooks_attached_seconds_total counter\noomtrace_stat_hooks_attached_seconds_total 12.500\n"));
        assert!(text.contains("oomtrace_oom_kills_total{namespace=\"shop\",pod=\"cart-7d9f\",container=\"app\",constraint=\"memcg\",scope=\"container\",reason=\"leak\"} 2\n"), "{text}");
        assert!(text.contains("pod=\"we\\\"ird\""), "{text}");
        assert!(text.contains("oomtrace_sigkills_total{namespace=\"shop\",pod=\"cart-7d9f\",container=\"app\",cause=\"user\"} 2\n"), "{text}");
        assert!(text.contains("cause=\"runtime_stop\"} 1\n"), "{text}");
        assert!(text.contains("oomtrace_metadata_misses_total{source=\"kubelet_logs\"} 1\n"));
        assert!(text.contains("oomtrace_metadata_misses_total{source=\"cgroup_path\"} 0\n"));
        m.set_process_misses(4);
        assert!(m
            .render()
            .contains("oomtrace_metadata_misses_total{source=\"process\"} 4\n"));
        assert!(text.contains("oomtrace_events_lost_total 3\n"));
        assert!(text.contains("\noomtrace_output_errors_total{sink=\"file\"} 7\n"));
        assert!(text.contains("\noomtrace_http_connections_shed_total 2\n"));
        assert!(Metrics::default()
            .render()
            .contains("\noomtrace_output_errors_total{sink=\"file\"} 0\n"));
        assert!(text.contains(
            "# TYPE oomtrace_oom_kills_unrecorded_total counter\noomtrace_oom_kills_unrecorded_total 2\n"
        ));
        let failures: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("oomtrace_kernel_failures_total{"))
            .collect();
        assert_eq!(
            failures.len(),
            Failure::COUNT,
            "every reason, 0 included: {failures:?}"
        );
        assert!(failures.contains(&"oomtrace_kernel_failures_total{reason=\"path_truncated\"} 2"));
        assert!(failures.contains(&"oomtrace_kernel_failures_total{reason=\"null_argument\"} 0"));
        assert!(failures.contains(&"oomtrace_kernel_failures_total{reason=\"scratch_lookup\"} 0"));
        assert!(text
            .contains("oomtrace_build_info{version=\"0.1.0\",hooks=\"tp_btf/mark_victim\"} 1\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }

    #[test]
    fn series_are_bounded() {
        let mut m = Metrics::default();
        for i in 0..MAX_KILL_SERIES + 5 {
            m.count_kill(labels(&format!("pod-{i}")));
        }
        assert_eq!(m.kills.len(), MAX_KILL_SERIES + 1);
        assert_eq!(
            m.kills.get(&KillLabels {
                pod: String::new(),
                container: String::new(),
                ..labels("")
            }),
            Some(&5)
        );
    }
}
