//! The command-line arguments every subcommand shares, and their conversion into the plain
//! settings of the stages below (which know nothing of clap).
use std::{path::PathBuf, time::Duration};

use crate::{
    capture::{probes::AttachMode, tracer::TracerOptions},
    demo::hog::HogOptions,
    enrich::{
        names::Namer,
        process::{ProcessCache, RedactError, Redactor, DEFAULT_REDACT_PATTERN},
        sigkill::SigkillScope,
    },
    output::filter::Filter,
    pressure::{PressureSettings, StatHooksMode},
};

/// Options about the kernel shared by `tail` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct KernelArgs {
    /// BTF of the running kernel, for kernels without /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
    /// Which hook family to use: auto (best available, with fallbacks), fentry (tp_btf and
    /// fentry/fexit only), kprobe (kprobes, classic tracepoint for the victim), tracepoint
    /// (classic tracepoint only; constraint inferred).
    #[arg(long, value_enum, default_value_t = AttachArg::Auto)]
    pub attach: AttachArg,
    /// Never use this hook (e.g. `tp_btf/mark_victim`, `fentry/oom_kill_process`), as if the
    /// kernel lacked it: the probe falls back to its next hook. Repeatable; `oomtrace check`
    /// lists the hooks.
    #[arg(long = "skip-hook", value_name = "HOOK")]
    pub skip_hooks: Vec<String>,
    #[command(flatten)]
    pub pressure: PressureArgs,
    /// Which SIGKILLs get a `sigkill` record (who sent it, and why): `containers` (the default:
    /// targets in a container or in a memory-limited cgroup), `all`, or `none` (the signal hook
    /// is not attached). Kills by the kernel's OOM killer have their `oom_kill` record instead.
    #[arg(long, value_enum, default_value_t = SigkillArg::Containers)]
    pub sigkill: SigkillArg,
}

/// `--sigkill`: which SIGKILLs are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SigkillArg {
    /// Targets in a container or in a memory-limited cgroup.
    Containers,
    /// Every SIGKILL.
    All,
    /// None: the signal hook is not attached.
    None,
}

impl From<SigkillArg> for Option<SigkillScope> {
    fn from(a: SigkillArg) -> Self {
        match a {
            SigkillArg::Containers => Some(SigkillScope::Workloads),
            SigkillArg::All => Some(SigkillScope::All),
            SigkillArg::None => None,
        }
    }
}

impl KernelArgs {
    pub fn tracer_options(&self, require_hooks: bool) -> TracerOptions {
        TracerOptions {
            btf: self.btf.clone(),
            attach: self.attach.into(),
            require_hooks,
            skip_hooks: self.skip_hooks.clone(),
            pressure: self.pressure.settings(),
            sigkill: self.sigkill != SigkillArg::None,
            pin: None,
        }
    }
}

/// The `--attach` families (`crate::capture::probes::AttachMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachArg {
    /// The best hook each probe can get, falling back as needed.
    Auto,
    /// BTF hooks only: tp_btf and fentry/fexit.
    Fentry,
    /// kprobes/kretprobes for kernel functions, the classic tracepoint for the victim.
    Kprobe,
    /// Classic tracepoints only (the OOM context is then inferred).
    Tracepoint,
}

impl From<AttachArg> for AttachMode {
    fn from(a: AttachArg) -> Self {
        match a {
            AttachArg::Auto => AttachMode::Auto,
            AttachArg::Fentry => AttachMode::Fentry,
            AttachArg::Kprobe => AttachMode::Kprobe,
            AttachArg::Tracepoint => AttachMode::Tracepoint,
        }
    }
}

/// Command-line settings shared by `tail` and `agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct PressureArgs {
    /// Near-limit threshold: a cgroup whose working set (usage minus inactive page cache)
    /// reaches this fraction of its limit gets a `memory_pressure` record (0 < F <= 1).
    #[arg(long, value_name = "F", default_value_t = 0.9, value_parser = parse_fraction)]
    pub pressure_threshold: f64,
    /// At most one near-limit `memory_pressure` record per cgroup per this many seconds (and
    /// one thrashing record, separately).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub pressure_interval: u64,
    /// Most cgroups with a memory limit to keep timelines for (about 6 KiB each).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub pressure_max_cgroups: usize,
    /// When to attach the per-page memcg stat tracepoints (6.13+), which give timelines their
    /// charge breakdown and kill points the charges right before the kill. They fire about
    /// four times per page charged and freed, which costs page-fault-heavy workloads several
    /// percent while attached (see the README's figures). `adaptive`: only while some memory
    /// cgroup is in trouble (its working set at or above --stat-hooks-threshold of its limit,
    /// or its reclaim failing), until --stat-hooks-quiet seconds without; `always`: from start
    /// to exit; `never`: not loaded (near-limit records come from reclaim and 1 s samples).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = StatHooksMode::Adaptive)]
    pub stat_hooks: StatHooksMode,
    /// The same as `--stat-hooks never`.
    #[arg(long, conflicts_with = "stat_hooks")]
    pub no_stat_hooks: bool,
    /// `--stat-hooks adaptive`: the working set / limit (0 < F <= 1) from which a memory
    /// cgroup is in trouble and the stat hooks are attached.
    #[arg(long, value_name = "F", default_value_t = 0.75, value_parser = parse_fraction)]
    pub stat_hooks_threshold: f64,
    /// `--stat-hooks adaptive`: detach the stat hooks once no memory cgroup has been in
    /// trouble for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub stat_hooks_quiet: u64,
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

impl PressureArgs {
    /// `None` with `--no-pressure`.
    pub fn settings(&self) -> Option<PressureSettings> {
        (!self.no_pressure).then_some(PressureSettings {
            threshold: self.pressure_threshold,
            interval: Duration::from_secs(self.pressure_interval),
            max_cgroups: self.pressure_max_cgroups,
            stat_hooks: self.stat_hooks_mode(),
            hooks_threshold: self.stat_hooks_threshold,
            hooks_quiet: Duration::from_secs(self.stat_hooks_quiet),
        })
    }

    /// `--stat-hooks`, with `--no-stat-hooks` as `never`.
    pub fn stat_hooks_mode(&self) -> StatHooksMode {
        if self.no_stat_hooks {
            StatHooksMode::Never
        } else {
            self.stat_hooks
        }
    }
}

/// Where the kubelet's log tree is (shared by `tail` and `agent`).
#[derive(Debug, Clone, clap::Args)]
pub struct HostLogArgs {
    /// The host's log directory with the kubelet's `pods/` and `containers/` trees: pod,
    /// namespace and container names come from there, with no API access.
    #[arg(
        long,
        env = "OOMTRACE_HOST_LOG_DIR",
        default_value = "/var/log",
        value_name = "DIR"
    )]
    pub host_log_dir: PathBuf,
}

impl HostLogArgs {
    /// A namer reading the log tree when `DIR/pods` exists (a Kubernetes node), else none.
    pub fn namer(&self) -> Namer {
        let dir = self.host_log_dir.join("pods").is_dir().then(|| {
            log::info!(
                "naming pods from the kubelet's log tree in {}",
                self.host_log_dir.display()
            );
            self.host_log_dir.clone()
        });
        Namer::new(dir)
    }
}

/// Who each victim was (`victim.process`), shared by `tail` and `agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Blank the value of every command-line flag whose name matches this regex, in
    /// `victim.process.args` and in the allowlisted environment variables (`--name=value`,
    /// `--name value`, `-Dname=value`, `NAME=value`; the name without its dashes or `-D`). The
    /// default blanks names like password, secret, token, key and credential.
    #[arg(
        long,
        value_name = "REGEX",
        default_value = DEFAULT_REDACT_PATTERN,
        value_parser = parse_redactor
    )]
    pub redact_args: Redactor,
    /// The procfs to read victims' command lines and memory settings from: the host's /proc
    /// mounted into a container (e.g. /host/proc).
    #[arg(
        long,
        env = "OOMTRACE_PROC_ROOT",
        default_value = "/proc",
        value_name = "DIR"
    )]
    pub proc_root: PathBuf,
}

fn parse_redactor(s: &str) -> Result<Redactor, RedactError> {
    Redactor::new(s)
}

impl ProcessArgs {
    /// An empty cache over the procfs; the stream seeds it.
    pub fn cache(&self) -> ProcessCache {
        ProcessCache::new(self.proc_root.clone(), self.redact_args.clone())
    }
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only victims in this Kubernetes namespace.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// Only victims in this pod (name).
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,
    /// Only victims in this container (name).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Only victims whose cgroup path is this path or below it (e.g. /kubepods.slice).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Only victims with this command name (comm).
    #[arg(long, value_name = "COMM")]
    pub comm: Option<String>,
}

impl FilterArgs {
    /// The filters as the output stage applies them.
    pub fn filter(&self) -> Filter {
        Filter {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
            cgroup: self.cgroup.clone(),
            comm: self.comm.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct HogArgs {
    /// Anonymous memory to allocate and touch, in MiB; without it, allocate until killed.
    #[arg(long)]
    pub anon_mb: Option<u64>,
    /// A tmpfs file to map shared and touch first (shmem RSS).
    #[arg(long, requires = "shm_mb")]
    pub shm_file: Option<PathBuf>,
    /// Size of the shared mapping, in MiB.
    #[arg(long)]
    pub shm_mb: Option<u64>,
    /// Set the process name (comm) first, to tell hogs apart in kernel reports.
    #[arg(long)]
    pub comm: Option<String>,
    /// Pause between 1 MiB steps, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub step_ms: u64,
    /// Once the target is reached, start a second thread, then exit (exit_group) when a line
    /// arrives on stdin: lets a test hold the process inside its exit with ptrace.
    #[arg(long, requires = "anon_mb")]
    pub exit_on_stdin: bool,
    /// Sleep this long, in milliseconds, before the anonymous allocation (after the shared
    /// mapping, if any): the process sits small, then allocates everything at once.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub delay_ms: u64,
    /// Page-fault benchmark: ROUNDS times map --anon-mb MiB anonymous, write every page and
    /// unmap it; then print `fault-loop rounds=R mb=M elapsed_ns=N` and exit 0.
    #[arg(
        long,
        requires = "anon_mb",
        conflicts_with = "exit_on_stdin",
        value_name = "ROUNDS"
    )]
    pub fault_loop: Option<u64>,
    /// Allocate in a child forked without exec: the parent prints `child PID`, waits for a
    /// line (or the end) on stdin, then reaps the child (a zombie until then) and prints how
    /// it ended.
    #[arg(long, conflicts_with_all = ["exit_on_stdin", "fault_loop"])]
    pub fork: bool,
    /// Signal benchmark, no memory pressure: send SIGUSR1 (ignored) to itself N times with
    /// kill(2), then fork, exit and reap --fork-loop children; print `signal-loop signals=N
    /// forks=M signals_ns=S forks_ns=F signal_batch=B best_signal_batch_ns=X fork_batch=C
    /// best_fork_batch_ns=Y` (each part's time, and that of its fastest hundredth) and exit 0.
    #[arg(
        long,
        value_name = "N",
        conflicts_with_all = ["anon_mb", "shm_file", "exit_on_stdin", "fault_loop", "fork"]
    )]
    pub signal_loop: Option<u64>,
    /// Children to fork after --signal-loop's signals (each exit sends a SIGCHLD); default
    /// N / 100.
    #[arg(long, value_name = "M", requires = "signal_loop")]
    pub fork_loop: Option<u64>,
    /// Ignored: arguments after `--` give a test's victim the command line it needs.
    #[arg(last = true, value_name = "ARGS")]
    pub ignored: Vec<String>,
}

impl HogArgs {
    /// The hog's options.
    pub fn options(&self) -> HogOptions {
        HogOptions {
            anon_mb: self.anon_mb,
            shm_file: self.shm_file.clone(),
            shm_mb: self.shm_mb,
            comm: self.comm.clone(),
            step_ms: self.step_ms,
            exit_on_stdin: self.exit_on_stdin,
            delay_ms: self.delay_ms,
            fault_loop: self.fault_loop,
            fork: self.fork,
            signal_loop: self.signal_loop,
            fork_loop: self.fork_loop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pressure::{PressureSettings, StatHooksMode};

    #[test]
    fn threshold_fractions_are_checked_and_scaled() {
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("abc").is_err());
        let s = PressureSettings {
            threshold: parse_fraction("0.9").expect("valid"),
            interval: Duration::from_secs(1),
            max_cgroups: 1,
            stat_hooks: StatHooksMode::Always,
            hooks_threshold: 0.75,
            hooks_quiet: Duration::from_secs(60),
        };
        assert_eq!(s.threshold_per_10k(), 9000);
    }

    #[derive(Debug, clap::Parser)]
    struct Pressure {
        #[command(flatten)]
        p: PressureArgs,
    }

    fn parse(args: &[&str]) -> Result<PressureSettings, clap::Error> {
        use clap::Parser;
        let parsed = Pressure::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        Ok(parsed.p.settings().expect("pressure on"))
    }

    #[test]
    fn stat_hooks_are_adaptive_by_default_and_no_stat_hooks_means_never() {
        let s = parse(&[]).expect("defaults");
        assert_eq!(s.stat_hooks, StatHooksMode::Adaptive);
        assert_eq!(s.hooks_threshold, 0.75);
        assert_eq!(s.hooks_quiet, Duration::from_secs(60));
        assert_eq!(
            parse(&["--no-stat-hooks"]).expect("alias").stat_hooks,
            StatHooksMode::Never
        );
        let s = parse(&[
            "--stat-hooks",
            "always",
            "--stat-hooks-threshold",
            "0.5",
            "--stat-hooks-quiet",
            "3",
        ])
        .expect("explicit");
        assert_eq!(
            (s.stat_hooks, s.hooks_threshold, s.hooks_quiet),
            (StatHooksMode::Always, 0.5, Duration::from_secs(3))
        );
        assert!(parse(&["--stat-hooks", "never", "--no-stat-hooks"]).is_err());
        assert!(parse(&["--stat-hooks", "sometimes"]).is_err());
        assert!(parse(&["--stat-hooks-threshold", "0"]).is_err());
    }
}
