//! `cargo xtask bench`: what the agent costs, as figures (not a pass/fail test).
//!
//! 1. Slowdown: a page-fault-heavy workload (`oomtrace hog --fault-loop`) in a 128 MiB memory
//!    cgroup, timed without `oomtrace agent` and with it under each `--stat-hooks` mode
//!    (default adaptive, always, never), in interleaved rounds whose order rotates to cancel
//!    drift; first far from the cgroup's limit (target for the default agent: a median ratio
//!    ≤ 1.02), then beside a filler that holds the cgroup above the stat hooks' threshold (the
//!    figure is reported).
//! 2. Agent cost: one agent while 8 cgroups run the workload in a loop, a cgroup is created and
//!    removed every 5 s and a real OOM kill happens every 10 s; its RSS (sampled every second),
//!    peak RSS, CPU time and the kill records it wrote. Target: RSS under 50 MiB.
//! 3. Signals (`signals.rs`): what the SIGKILL hook on `signal_generate` costs a workload that
//!    generates signals and churns processes (`oomtrace hog --signal-loop`), timed without the
//!    agent, with it under `--sigkill none` and with it by default, plus the hook's own run time.
//! 4. Storm (`storm.rs`): `--storm-kills` simultaneous memory-cgroup OOM kills; kill-to-line
//!    latency (p50, p99, max) and the agent's CPU per kill. Targets: p99 ≤ 20 ms, ≤ 0.3 ms.
//!
//! 5. Memory: the agent's start-up peak (VmHWM from start to attached, read when `/readyz`
//!    first answers 200) and its steady RSS 15 s later, idle; and the kernel memory of its
//!    eBPF maps (`memlock` in its /proc/PID/fdinfo). Targets: ≤ 30 MiB and ≤ 10 MiB.
//! 6. Cgroups (`cgroups.rs`): the idle agent without and with `--idle-cgroups` empty 64 MiB
//!    cgroups: its CPU (% of a core) and VmRSS, and single-kill latency. Target: ≤ 1% of a core,
//!    kill latency unchanged.
//!
//! `--only SECTION,…` runs a subset.
//! Every process it starts runs in a memory cgroup it creates (the agent too, with 128 MiB),
//! and every cgroup is removed when its guard drops, on error or Ctrl-C as well.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

mod cgroups;
mod signals;
mod storm;

const MIB: u64 = 1 << 20;
/// Slowdown target: with the default agent, a workload in a cgroup far from its limit may take
/// at most this many times as long (median against median).
const SLOWDOWN_TARGET_RATIO: f64 = 1.02;
/// The agent configurations of the slowdown section: name, and the agent's extra arguments
/// (`None`: no agent). The first is the baseline.
const SLOWDOWN_CONFIGS: [(&str, Option<&[&str]>); 4] = [
    ("without", None),
    ("default (adaptive)", Some(&[])),
    ("--stat-hooks always", Some(&["--stat-hooks", "always"])),
    ("--stat-hooks never", Some(&["--stat-hooks", "never"])),
];
/// What the filler holds in the 128 MiB cgroup of the near-the-limit slowdown case.
const NEAR_FILLER_MB: u64 = 96;
/// Agent RSS target.
const RSS_TARGET_MIB: f64 = 50.0;
/// Start-up peak target: VmHWM from start to attached.
const PEAK_TARGET_MIB: f64 = 30.0;
/// Steady-state (idle) RSS target.
const STEADY_TARGET_MIB: f64 = 10.0;
/// How long after attaching the steady RSS is read.
const STEADY_AFTER: Duration = Duration::from_secs(15);

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Interleaved rounds of the slowdown measurement (each times the workload once without
    /// and once with the agent).
    #[arg(long, default_value_t = 6, value_name = "N")]
    rounds: u32,
    /// Rounds of the workload (`hog --fault-loop K --anon-mb 64`: map, write and unmap 64 MiB).
    #[arg(long, default_value_t = 200, value_name = "K")]
    fault_rounds: u64,
    /// Length of the agent-cost phase (heavy cgroup activity), in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    activity_secs: u64,
    /// Signals the signal workload sends itself per run (`hog --signal-loop N`).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    signals: u64,
    /// Children the signal workload forks and reaps per run (`hog --fork-loop M`).
    #[arg(long, default_value_t = 10_000, value_name = "M")]
    forks: u64,
    /// Simultaneous memory-cgroup OOM kills in the storm section (one 16 MiB cgroup each).
    #[arg(long, default_value_t = 100, value_name = "N")]
    storm_kills: u32,
    /// Empty memory-limited cgroups (64 MiB each) the cgroups section makes.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    idle_cgroups: u32,
    /// Length of each idle CPU measurement of the cgroups section, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    idle_secs: u64,
    /// Single OOM kills timed in each pass of the cgroups section.
    #[arg(long, default_value_t = 5, value_name = "N")]
    single_kills: u32,
    /// Run only these sections (comma-separated or repeated); all of them by default.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SECTION")]
    only: Vec<Section>,
}

/// The sections of the bench, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// The page-fault workload's slowdown with the agent.
    Slowdown,
    /// The agent's eBPF programs' run time per faulted page (bpf_stats).
    ProgramCost,
    /// The agent's RSS and CPU under heavy cgroup activity with real OOM kills.
    AgentCost,
    /// The signal workload's slowdown with the signal hook, and the hook's run time.
    Signals,
    /// Kill-to-line latency and agent CPU per kill in a storm of simultaneous OOM kills.
    Storm,
    /// The agent's start-up peak RSS, steady RSS and eBPF map memory.
    Memory,
    /// The idle agent's CPU and RSS, and single-kill latency, with many limited cgroups.
    Cgroups,
}

/// Set by SIGINT/SIGTERM: loops stop and the guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    if !util::is_root() {
        bail!("the bench needs root (the agent loads eBPF programs; the workloads need memory cgroups): run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.idle_secs == 0 {
        bail!("--idle-secs must be at least 1");
    }
    if args.storm_kills == 0 {
        bail!("--storm-kills must be at least 1");
    }
    if args.signals == 0 || args.forks == 0 {
        bail!("--signals and --forks must be at least 1");
    }
    let runs = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let bin = crate::build()?;
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let hierarchy = Hierarchy::detect()?;
    let pid = std::process::id();
    let tmp = TempDir::create(&std::env::temp_dir().join(format!("oomtrace-bench-{pid}")))?;
    let agent_cg = Cgroup::create(
        &hierarchy,
        &format!("oomtrace-bench-{pid}-agent"),
        128 * MIB,
    )?;
    let bench = Bench {
        bin,
        hierarchy,
        prefix: format!("oomtrace-bench-{pid}"),
        tmp: tmp.0.clone(),
        agent_cg,
    };
    println!(
        "bench: memory cgroups: {} (cgroup {})",
        bench.hierarchy.root.display(),
        if bench.hierarchy.v2 { "v2" } else { "v1" }
    );
    bench.print_hooks()?;
    if runs(Section::Slowdown) {
        bench.slowdown(args.rounds, args.fault_rounds)?;
    }
    if runs(Section::ProgramCost) {
        bench.program_cost(args.fault_rounds)?;
    }
    if runs(Section::AgentCost) {
        bench.agent_cost(Duration::from_secs(args.activity_secs))?;
    }
    if runs(Section::Signals) {
        bench.signals(args.rounds, args.signals, args.forks)?;
    }
    if runs(Section::Storm) {
        bench.storm(args.storm_kills)?;
    }
    if runs(Section::Memory) {
        bench.memory()?;
    }
    if runs(Section::Cgroups) {
        bench.cgroups(args.idle_cgroups, args.idle_secs, args.single_kills)?;
    }
    Ok(())
}

struct Bench {
    bin: PathBuf,
    hierarchy: Hierarchy,
    /// `oomtrace-bench-<pid>`: every cgroup's name starts with it.
    prefix: String,
    tmp: PathBuf,
    agent_cg: Cgroup,
}

impl Bench {
    fn hog(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("hog").args(args);
        cmd
    }

    /// `hog --fault-loop ROUNDS --anon-mb 64` in `cg`: the time it reports.
    fn fault_workload(&self, cg: &Cgroup, rounds: u64) -> Result<Duration> {
        Ok(self.fault_workload_timed(cg, rounds, 64)?.wall)
    }

    /// `hog --fault-loop ROUNDS --anon-mb MB` in `cg`: the time it reports, and the CPU time
    /// (user and system) it used.
    fn fault_workload_timed(&self, cg: &Cgroup, rounds: u64, mb: u64) -> Result<Timing> {
        let (k, mb) = (rounds.to_string(), mb.to_string());
        let mut cmd = self.hog(&[
            "--comm",
            "bench-fault",
            "--fault-loop",
            &k,
            "--anon-mb",
            &mb,
        ]);
        let before = children_cpu()?;
        let wall = time_workload(cg, &mut cmd)?;
        let cpu = children_cpu()?.saturating_sub(before);
        Ok(Timing { wall, cpu })
    }

    fn start_agent(&self) -> Result<Agent> {
        self.start_agent_with(&[])
    }

    fn start_agent_with(&self, extra: &[&str]) -> Result<Agent> {
        Agent::start(&self.bin, &self.agent_cg, &self.tmp, extra)
    }

    /// Starts an agent once and prints what it attached (its own log lines).
    fn print_hooks(&self) -> Result<()> {
        let mut agent = self.start_agent()?;
        agent.stop()?;
        let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
        for prefix in ["attached: ", "pressure sources: "] {
            // `oomtrace: info: attached: tp_btf/mark_victim,…`
            let found = log.lines().find_map(|l| {
                l.split_once("info: ")
                    .and_then(|(_, r)| r.strip_prefix(prefix))
            });
            if let Some(line) = found {
                println!("bench: agent {prefix}{line}");
            }
        }
        Ok(())
    }

    /// Step 2: the workload's median times without the agent and with it under each
    /// `--stat-hooks` mode, in interleaved rounds; first in a cgroup far from its limit (the
    /// default agent must not attach the stat hooks there), then in one a resident filler holds
    /// above the hooks' threshold (the default agent attaches them before the workload starts).
    fn slowdown(&self, rounds: u32, fault_rounds: u64) -> Result<()> {
        let far = Cgroup::create(&self.hierarchy, &self.prefix, 128 * MIB)?;
        println!(
            "bench: slowdown, far from the limit: `oomtrace hog --fault-loop {fault_rounds} --anon-mb 64` \
             in a 128 MiB cgroup, {rounds} rounds of: {} (order rotated, reversed every other round)",
            SLOWDOWN_CONFIGS.map(|c| c.0).join(", ")
        );
        let far_medians = self.slowdown_rounds(rounds, false, || {
            self.fault_workload_timed(&far, fault_rounds, 64)
        })?;
        drop(far);

        let near = Cgroup::create(&self.hierarchy, &format!("{}-near", self.prefix), 128 * MIB)?;
        let _filler = self.filler(&near, NEAR_FILLER_MB)?;
        let held = near.usage_bytes()?;
        // The same pages faulted in and freed, 8 MiB at a time: filler and workload fit.
        let near_rounds = fault_rounds * 8;
        println!(
            "bench: slowdown, near the limit: a filler holds {NEAR_FILLER_MB} MiB \
             ({:.2} of the 128 MiB limit with its own pages; --stat-hooks-threshold is 0.75), \
             `oomtrace hog --fault-loop {near_rounds} --anon-mb 8` beside it, {rounds} rounds \
             (agents wait until /metrics shows the hooks attached, where they should be)",
            held as f64 / (128 * MIB) as f64
        );
        let near_medians = self.slowdown_rounds(rounds, true, || {
            self.fault_workload_timed(&near, near_rounds, 8)
        })?;

        for (case, medians) in [
            ("far from the limit", &far_medians),
            ("near the limit", &near_medians),
        ] {
            for (c, (name, _)) in SLOWDOWN_CONFIGS.iter().enumerate().skip(1) {
                let (wall, cpu) = (medians[c].0 / medians[0].0, medians[c].1 / medians[0].1);
                let target = if c == 1 && case == "far from the limit" {
                    format!(
                        " — target ≤ {SLOWDOWN_TARGET_RATIO}: {}",
                        met(wall <= SLOWDOWN_TARGET_RATIO)
                    )
                } else {
                    String::new()
                };
                println!(
                    "bench: slowdown {case}, agent {name}: ratio {wall:.3} (median {:.1} ms without, \
                     {:.1} ms with; {rounds} rounds){target}; CPU time ratio {cpu:.3} ({:.1} ms, {:.1} ms)",
                    medians[0].0, medians[c].0, medians[0].1, medians[c].1
                );
            }
        }
        Ok(())
    }

    /// `rounds` interleaved rounds of `workload` under each of [`SLOWDOWN_CONFIGS`]; returns
    /// the median wall and CPU time of each, in ms. `near`: before timing, agents that should
    /// attach the stat hooks (all but `never`) are waited for until they have.
    fn slowdown_rounds(
        &self,
        rounds: u32,
        near: bool,
        workload: impl Fn() -> Result<Timing>,
    ) -> Result<Vec<(f64, f64)>> {
        // One untimed run first: page cache, binary, allocator.
        workload()?;
        let n = SLOWDOWN_CONFIGS.len();
        let (mut walls, mut cpus): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
            (vec![vec![]; n], vec![vec![]; n]);
        for round in 0..rounds as usize {
            let mut line = Vec::new();
            for i in 0..n {
                // Rotated each round, and reversed every other round: no configuration always
                // follows the same one (an agent's exit leaves the kernel work to do).
                let at = if round % 2 == 0 { i } else { n - 1 - i };
                let c = (round + at) % n;
                check_interrupted()?;
                let (name, extra) = SLOWDOWN_CONFIGS[c];
                let (t, hooks) = match extra {
                    Some(extra) => {
                        let mut agent = self.start_agent_with(extra)?;
                        if near && !extra.contains(&"never") {
                            agent.wait_stat_hooks(Duration::from_secs(10))?;
                        }
                        let t = workload()?;
                        let hooks = agent.stat_hooks();
                        agent.stop()?;
                        // Any cgroup of the machine in trouble attaches them: say which.
                        let causes = agent.stat_hooks_causes();
                        let causes = if causes.is_empty() {
                            String::new()
                        } else {
                            format!(" for {}", causes.join(", "))
                        };
                        let hooks = match hooks {
                            Some((attached, secs)) => {
                                format!(" [hooks {attached}, {secs:.1} s{causes}]")
                            }
                            None => format!(" [hooks ?{causes}]"),
                        };
                        (t, hooks)
                    }
                    None => (workload()?, String::new()),
                };
                walls[c].push(ms(t.wall));
                cpus[c].push(ms(t.cpu));
                line.push(format!(
                    "{:.1} ms ({:.1} ms CPU) {name}{hooks}",
                    ms(t.wall),
                    ms(t.cpu)
                ));
            }
            println!("bench:   round {}: {}", round + 1, line.join(", "));
        }
        let medians: Vec<(f64, f64)> = walls
            .iter_mut()
            .zip(cpus.iter_mut())
            .map(|(w, c)| (median(w), median(c)))
            .collect();
        // `walls[0]` and `cpus[0]` are sorted now: their spread shows how noisy this machine is.
        let spread = |v: &[f64], m: f64| (v[v.len() - 1] - v[0]) / m * 100.0;
        println!(
            "bench:   noise: runs without the agent spread {:.1}% in wall time, {:.1}% in CPU time \
             (max−min over median); load average {}",
            spread(&walls[0], medians[0].0),
            spread(&cpus[0], medians[0].1),
            load_average()
        );
        Ok(medians)
    }

    /// A hog holding `mb` MiB of anonymous memory in `cg` until the cgroup's guard drops.
    fn filler(&self, cg: &Cgroup, mb: u64) -> Result<Child> {
        let mut cmd = self.hog(&["--comm", "bench-filler", "--anon-mb", &mb.to_string()]);
        let mut child = cg.spawn(cmd.stdout(Stdio::piped()))?;
        let stdout = child.stdout.take().context("the filler's stdout")?;
        let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .any(|l| l.starts_with("ready"));
        if !ready {
            bail!("the filler hog ended before holding {mb} MiB");
        }
        Ok(child)
    }

    /// Step 2b: the kernel's own account of oomtrace's programs (`kernel.bpf_stats_enabled`)
    /// over one workload run: runs and ns per faulted page, a figure the machine's noise does not
    /// blur. The stats' own clock reads are included in it.
    fn program_cost(&self, fault_rounds: u64) -> Result<()> {
        let _stats = BpfStats::enable()?;
        let cg = Cgroup::create(&self.hierarchy, &format!("{}-cost", self.prefix), 128 * MIB)?;
        let mut agent = self.start_agent()?;
        let t = self.fault_workload(&cg, fault_rounds)?;
        let (runs, ns) = program_stats(agent.pid())?;
        agent.stop()?;
        let pages = fault_rounds * 64 * MIB / 4096;
        println!(
            "bench: eBPF cost (bpf_stats): {runs} program runs for {pages} pages faulted and freed \
             ({:.1} per page), {:.1} ns per run, {:.0} ns per page = {:.1}% of the workload's {:.1} ms",
            runs as f64 / pages as f64,
            ns as f64 / runs.max(1) as f64,
            ns as f64 / pages as f64,
            ns as f64 / 1e6 / ms(t) * 100.0,
            ms(t)
        );
        Ok(())
    }

    /// Step 3: the agent's memory and CPU under heavy cgroup activity.
    fn agent_cost(&self, length: Duration) -> Result<()> {
        println!(
            "bench: agent cost: {} s of 8 cgroups looping `hog --fault-loop 20 --anon-mb 48` (64 MiB each), \
             a cgroup created and removed every 5 s, an OOM kill every 10 s",
            length.as_secs()
        );
        let mut agent = self.start_agent()?;
        let start = Instant::now();
        let rss_start = agent.status_kib("VmRSS:")?;
        let cpu_start = agent.cpu_ticks()?;
        let mut rss_max = rss_start;

        let mut workers = Vec::new();
        for i in 0..8 {
            let name = format!("{}-{i}", self.prefix);
            workers.push(Worker {
                cg: Cgroup::create(&self.hierarchy, &name, 64 * MIB)?,
                child: None,
            });
        }
        let worker_args = [
            "--comm",
            "bench-worker",
            "--fault-loop",
            "20",
            "--anon-mb",
            "48",
        ];
        let mut stats = ActivityStats::default();
        let mut oom: Option<(Child, Cgroup, Instant)> = None;
        let (mut next_churn, mut next_kill, mut next_sample) = (start, start, start);
        let end = start + length;
        loop {
            check_interrupted()?;
            let now = Instant::now();
            let running = now < end;
            for w in &mut workers {
                if let Some(child) = &mut w.child {
                    if let Some(status) = child.try_wait()? {
                        stats.worker_runs += 1;
                        if !status.success() {
                            stats.worker_failures += 1;
                        }
                        w.child = None;
                    }
                }
                if w.child.is_none() && running {
                    w.child = Some(w.cg.spawn(self.hog(&worker_args).stdout(Stdio::null()))?);
                }
            }
            if running && now >= next_churn {
                next_churn += Duration::from_secs(5);
                self.churn(stats.churned)?;
                stats.churned += 1;
            }
            if let Some((child, _, started)) = &mut oom {
                let done = match child.try_wait()? {
                    Some(status) => Some(status),
                    None if started.elapsed() > Duration::from_secs(30) => {
                        child.kill()?;
                        Some(child.wait()?)
                    }
                    None => None,
                };
                if let Some(status) = done {
                    stats.oom_started += 1;
                    if status.signal() == Some(libc::SIGKILL) {
                        stats.oom_killed += 1;
                    }
                    oom = None; // drops (removes) its cgroup
                }
            }
            if running && oom.is_none() && now >= next_kill {
                next_kill += Duration::from_secs(10);
                let name = format!("{}-oom-{}", self.prefix, stats.oom_started);
                let cg = Cgroup::create(&self.hierarchy, &name, 32 * MIB)?;
                let child = cg.spawn(
                    self.hog(&["--comm", "bench-oom", "--anon-mb", "200"])
                        .stdout(Stdio::null()),
                )?;
                oom = Some((child, cg, Instant::now()));
            }
            if now >= next_sample {
                next_sample += Duration::from_secs(1);
                rss_max = rss_max.max(agent.status_kib("VmRSS:")?);
            }
            if !running && oom.is_none() && workers.iter().all(|w| w.child.is_none()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let wall = start.elapsed();
        rss_max = rss_max.max(agent.status_kib("VmRSS:")?);
        let hwm = agent.status_kib("VmHWM:")?;
        let cpu = agent.cpu_ticks()?.saturating_sub(cpu_start) as f64 / clock_ticks()?;
        // Let the last kill's record reach the file, then stop the agent (it drains on SIGTERM).
        std::thread::sleep(Duration::from_millis(500));
        agent.stop()?;
        drop(workers);
        let records = count_kill_records(&agent.output)?;

        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "bench:   activity: {:.1} s, {} workload runs ({} failed), {} cgroups churned, {} OOM hogs ({} killed by the kernel)",
            wall.as_secs_f64(),
            stats.worker_runs,
            stats.worker_failures,
            stats.churned,
            stats.oom_started,
            stats.oom_killed
        );
        println!(
            "bench: agent RSS {:.1} MiB at start, {:.1} MiB max during, VmHWM {:.1} MiB (peak incl. start-up)",
            mib(rss_start),
            mib(rss_max),
            mib(hwm)
        );
        println!(
            "bench: agent CPU {cpu:.2} s over {:.1} s ({:.1}% of one core)",
            wall.as_secs_f64(),
            cpu / wall.as_secs_f64() * 100.0
        );
        println!(
            "bench: kill records written: {records} (of {} kills provoked)",
            stats.oom_killed
        );
        let peak_note = if mib(hwm) >= RSS_TARGET_MIB {
            format!(
                " (the start-up peak, VmHWM {:.1} MiB, is above it)",
                mib(hwm)
            )
        } else {
            String::new()
        };
        println!(
            "bench: agent RSS max {:.1} MiB — target < {RSS_TARGET_MIB} MiB: {}{peak_note}",
            mib(rss_max),
            met(mib(rss_max) < RSS_TARGET_MIB)
        );
        Ok(())
    }

    /// Step 5: the agent's own memory, idle: start-up peak, steady RSS, eBPF maps.
    fn memory(&self) -> Result<()> {
        let mut agent = self.start_agent()?;
        let hwm = agent.status_kib("VmHWM:")?;
        let rss_ready = agent.status_kib("VmRSS:")?;
        let waited = Instant::now();
        while waited.elapsed() < STEADY_AFTER {
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        let rss = agent.status_kib("VmRSS:")?;
        let anon = agent.status_kib("RssAnon:")?;
        let file = agent.status_kib("RssFile:")? + agent.status_kib("RssShmem:")?;
        let maps = agent.map_memlock()?;
        agent.stop()?;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "bench: memory: VmHWM {:.1} MiB start → attached — target ≤ {PEAK_TARGET_MIB} MiB: {}",
            mib(hwm),
            met(mib(hwm) <= PEAK_TARGET_MIB)
        );
        println!(
            "bench: memory: VmRSS {:.1} MiB at ready, {:.1} MiB {} s later, idle ({:.1} anonymous, {:.1} file and shared: code, ring buffers) — target ≤ {STEADY_TARGET_MIB} MiB: {}",
            mib(rss_ready),
            mib(rss),
            STEADY_AFTER.as_secs(),
            mib(anon),
            mib(file),
            met(mib(rss) <= STEADY_TARGET_MIB)
        );
        let total: u64 = maps.iter().map(|(_, b)| b).sum();
        println!(
            "bench: memory: eBPF maps {:.1} MiB kernel memory (memlock of {} maps; largest: {})",
            total as f64 / MIB as f64,
            maps.len(),
            maps.iter()
                .take(3)
                .map(|(id, b)| format!("map {id} {:.0} KiB", *b as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }

    /// Creates a cgroup, runs a short workload in it and removes it.
    fn churn(&self, n: u32) -> Result<()> {
        let cg = Cgroup::create(
            &self.hierarchy,
            &format!("{}-churn-{n}", self.prefix),
            64 * MIB,
        )?;
        let mut child = cg.spawn(
            self.hog(&[
                "--comm",
                "bench-churn",
                "--fault-loop",
                "1",
                "--anon-mb",
                "8",
            ])
            .stdout(Stdio::null()),
        )?;
        wait_timeout(&mut child, Duration::from_secs(30))?;
        Ok(())
    }
}

#[derive(Default)]
struct ActivityStats {
    worker_runs: u32,
    worker_failures: u32,
    churned: u32,
    oom_started: u32,
    oom_killed: u32,
}

/// One of the 8 activity cgroups and the workload running in it. Fields drop in order: the
/// child handle, then the cgroup (which kills what is left inside it).
struct Worker {
    child: Option<Child>,
    cg: Cgroup,
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `kernel.bpf_stats_enabled` on for as long as it lives, then back to what it was.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let before = std::fs::read_to_string(BPF_STATS)
            .with_context(|| format!("cannot read {BPF_STATS}"))?;
        std::fs::write(BPF_STATS, "1").with_context(|| format!("cannot write {BPF_STATS}"))?;
        Ok(Self(before.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.0);
    }
}

/// Total runs and run time (ns) of the eBPF programs process `pid` holds open.
fn program_stats(pid: u32) -> Result<(u64, u64)> {
    Ok(programs(pid)?
        .values()
        .fold((0, 0), |(runs, ns), p| (runs + p.runs, ns + p.ns)))
}

/// One eBPF program a process holds open: its counters (with `kernel.bpf_stats_enabled`) and
/// the tracepoints its links attach it to.
#[derive(Debug, Default, Clone, PartialEq)]
struct Program {
    runs: u64,
    ns: u64,
    tracepoints: Vec<String>,
}

/// The eBPF programs process `pid` holds open, by program id, from its fdinfo: a program fd
/// has `prog_id`, `run_cnt` and `run_time_ns`; a link fd has `prog_id` and, for tracepoint
/// links (tp_btf and classic, kernel 6.x), `tp_name`.
fn programs(pid: u32) -> Result<std::collections::BTreeMap<u64, Program>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut progs = std::collections::BTreeMap::<u64, Program>::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let num = |name: &str| field(name).and_then(|v| v.parse().ok());
        let Some(id) = num("prog_id:") else {
            continue;
        };
        let prog = progs.entry(id).or_default();
        // Each program's counters once, however many fds point at it.
        if let (Some(runs), Some(ns)) = (num("run_cnt:"), num("run_time_ns:")) {
            prog.runs = runs;
            prog.ns = ns;
        }
        if let (Some(_), Some(tp)) = (field("link_type:"), field("tp_name:")) {
            prog.tracepoints.push(tp.to_string());
        }
    }
    Ok(progs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A workload run's own time and the CPU time it used.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    /// User and system time of the run (`RUSAGE_CHILDREN` across its reaping): on a shared
    /// machine less blurred by other work than the wall time, and the stat tracepoints' cost
    /// is system time in the faulting process.
    cpu: Duration,
}

/// User plus system time of the children reaped so far.
fn children_cpu() -> Result<Duration> {
    // SAFETY: getrusage writes into the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Runs the `--fault-loop` workload in `cg` and returns the time it reports.
fn time_workload(cg: &Cgroup, cmd: &mut Command) -> Result<Duration> {
    let out = run_workload(cg, cmd)?;
    parse_elapsed(&out).with_context(|| format!("no elapsed_ns in the workload's output: {out:?}"))
}

/// Runs a workload in `cg` to its end and returns its stdout; an error unless it exits 0.
fn run_workload(cg: &Cgroup, cmd: &mut Command) -> Result<String> {
    let mut child = cg.spawn(cmd.stdout(Stdio::piped()))?;
    let status = wait_timeout(&mut child, Duration::from_secs(600))?;
    check_interrupted()?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("`{}` failed ({status}): {out}", util::describe(cmd));
    }
    Ok(out)
}

/// `fault-loop rounds=R mb=M elapsed_ns=N` → N ns.
fn parse_elapsed(out: &str) -> Option<Duration> {
    report_field(out, "fault-loop", "elapsed_ns").map(Duration::from_nanos)
}

/// The number `KEY=N` on the workload's `NAME k=v …` line.
fn report_field(out: &str, name: &str, key: &str) -> Option<u64> {
    out.lines()
        .filter(|l| l.split_whitespace().next() == Some(name))
        .flat_map(str::split_whitespace)
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// Waits for `child`, killing it after `timeout` or on Ctrl-C.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline || INTERRUPTED.load(Ordering::SeqCst) {
            child.kill()?;
            child.wait()?;
            check_interrupted()?;
            bail!("process {} did not finish within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn count_kill_records(path: &Path) -> Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .filter(|l| l.contains(r#""event":"oom_kill""#))
        .count())
}

/// The 1-minute load average, from /proc/loadavg ("?" when unreadable).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn clock_ticks() -> Result<f64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks as f64)
}

/// A running `oomtrace agent`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
    output: PathBuf,
    stopped: bool,
}

impl Agent {
    fn start(bin: &Path, cg: &Cgroup, tmp: &Path, extra: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let output = tmp.join("bench.jsonl");
        let log = tmp.join("agent.log");
        // A fresh output file for each agent: the kill count is this agent's.
        let _ = std::fs::remove_file(&output);
        let mut cmd = Command::new(bin);
        cmd.args([
            "agent",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-stdout",
        ])
        .arg("--output-file")
        .arg(&output)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).with_context(|| format!("cannot create {}", log.display()))?);
        let child = cg.spawn(&mut cmd)?;
        let mut agent = Agent {
            child,
            port,
            log,
            output,
            stopped: false,
        };
        agent.wait_ready()?;
        Ok(agent)
    }

    /// Waits until `/readyz` answers 200 (the tracer is attached; `/healthz` answers as soon
    /// as the HTTP server runs, before attaching).
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            check_interrupted()?;
            if let Some(status) = self.child.try_wait()? {
                self.stopped = true;
                bail!(
                    "the agent exited during start-up ({status}): {}",
                    self.log_text()
                );
            }
            if http_status(self.port, "/readyz") == Some(200) {
                // Let start-up's last allocations and frees settle before measuring.
                std::thread::sleep(Duration::from_millis(300));
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the agent was not ready after 60 s: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `oomtrace_stat_hooks_attached` and `oomtrace_stat_hooks_attached_seconds_total` from
    /// `/metrics`, if it answers.
    fn stat_hooks(&self) -> Option<(u8, f64)> {
        let text = http_get(self.port, "/metrics")?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        Some((
            value("oomtrace_stat_hooks_attached")? as u8,
            value("oomtrace_stat_hooks_attached_seconds_total")?,
        ))
    }

    /// The cgroups the agent attached the stat hooks for (its log's `stat hooks: attached:`
    /// lines).
    fn stat_hooks_causes(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut causes: Vec<String> = log
            .lines()
            .filter_map(|l| {
                l.split_once("stat hooks: attached: memory cgroup ")?
                    .1
                    .split(' ')
                    .next()
            })
            .map(str::to_string)
            .collect();
        causes.dedup();
        causes
    }

    /// Waits until `/metrics` shows the stat hooks attached.
    fn wait_stat_hooks(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while self.stat_hooks().is_none_or(|(a, _)| a != 1) {
            check_interrupted()?;
            if Instant::now() >= deadline {
                bail!(
                    "the agent did not attach the stat hooks within {within:?}: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .trim()
            .replace('\n', " | ")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` field in kB (`VmRSS:`, `VmHWM:`).
    fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }

    /// (map id, memlock bytes) of each eBPF map the agent holds an fd of, largest first, from
    /// its `/proc/PID/fdinfo`.
    fn map_memlock(&self) -> Result<Vec<(u64, u64)>> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut maps = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
            let Ok(text) = std::fs::read_to_string(entry?.path()) else {
                continue;
            };
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
                maps.insert(id, memlock);
            }
        }
        let mut maps: Vec<(u64, u64)> = maps.into_iter().collect();
        maps.sort_by_key(|m| std::cmp::Reverse(m.1));
        Ok(maps)
    }

    /// utime + stime from `/proc/PID/stat`, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // After the command in parentheses: field 3 (state) onwards; utime and stime are 14, 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .with_context(|| format!("unexpected {path}: {stat}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("unexpected {path}: {stat}"))
        };
        Ok(num(11)? + num(12)?)
    }

    /// SIGTERM, then waits (SIGKILL after 15 s).
    fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        if let Ok(pid) = libc::pid_t::try_from(self.pid()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the agent exited with {status}: {}", self.log_text());
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("the agent did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("bench: warning: {e:#}");
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// A connection to the agent on `port` with `GET path` over plain HTTP/1.0 sent.
fn http_request(port: u16, path: &str, read_timeout: Duration) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(read_timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    Some(s)
}

/// The status code of `GET path`, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = http_request(port, path, Duration::from_secs(2))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // `HTTP/1.1 200 OK`
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The body of a GET, read whole.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = http_request(port, path, Duration::from_secs(5))?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The memory cgroup hierarchy: v1 `/sys/fs/cgroup/memory`, else v2 `/sys/fs/cgroup` with the
/// memory controller.
struct Hierarchy {
    root: PathBuf,
    v2: bool,
}

impl Hierarchy {
    fn detect() -> Result<Self> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").is_file() || v1.join("cgroup.procs").is_file() {
            return Ok(Self {
                root: v1.to_path_buf(),
                v2: false,
            });
        }
        let v2 = Path::new("/sys/fs/cgroup");
        let controllers =
            std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            // Make the memory controller available to the root's children.
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
            return Ok(Self {
                root: v2.to_path_buf(),
                v2: true,
            });
        }
        bail!("no memory cgroup controller: neither /sys/fs/cgroup/memory (v1) nor memory in /sys/fs/cgroup/cgroup.controllers (v2)")
    }
}

/// A memory cgroup this process created, with a limit and no swap; on drop it kills what is
/// left inside (only processes this bench started can be there) and removes the directory.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn create(h: &Hierarchy, name: &str, limit: u64) -> Result<Self> {
        let dir = h.root.join(name);
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create memory cgroup {}", dir.display()))?;
        let cg = Self { dir };
        let write = |file: &str, value: &str| -> Result<()> {
            let path = cg.dir.join(file);
            std::fs::write(&path, value)
                .with_context(|| format!("cannot write {value:?} to {}", path.display()))
        };
        if h.v2 {
            write("memory.max", &limit.to_string())?;
            if cg.dir.join("memory.swap.max").exists() {
                write("memory.swap.max", "0")?;
            }
        } else {
            write("memory.limit_in_bytes", &limit.to_string())?;
            // Never swap the workloads' memory (matters only where swap is on).
            let _ = std::fs::write(cg.dir.join("memory.swappiness"), "0");
        }
        Ok(cg)
    }

    /// Starts `cmd` inside this cgroup: the child joins it before `exec`, so everything it
    /// allocates is charged here.
    fn spawn(&self, cmd: &mut Command) -> Result<Child> {
        let procs = CString::new(
            self.dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .context("cgroup path contains a NUL byte")?;
        // SAFETY: the closure runs between fork and exec and only makes raw syscalls on memory
        // prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n < 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("cannot start `{}`", util::describe(cmd)))
    }

    /// The cgroup's memory usage now (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    fn usage_bytes(&self) -> Result<u64> {
        let file = ["memory.current", "memory.usage_in_bytes"]
            .into_iter()
            .map(|f| self.dir.join(f))
            .find(|p| p.exists())
            .context("no usage file in the cgroup")?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("unexpected {}: {text:?}", file.display()))
    }

    fn pids(&self) -> Vec<libc::pid_t> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for pid in self.pids() {
                // SAFETY: kill has no memory-safety preconditions; only this bench's children
                // are in its cgroups.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!(
                        "bench: warning: could not remove cgroup {}: {e}",
                        self.dir.display()
                    );
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A scratch directory (agent output and log), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fault_loop_line() {
        assert_eq!(
            parse_elapsed("fault-loop rounds=3 mb=64 elapsed_ns=1500000\n"),
            Some(Duration::from_nanos(1_500_000))
        );
        assert_eq!(parse_elapsed("ready 64\n"), None);
    }

    #[test]
    fn reads_one_key_of_a_report_line() {
        let out = "signal-loop signals=5 forks=2 signals_ns=700 forks_ns=9000\n";
        assert_eq!(report_field(out, "signal-loop", "signals_ns"), Some(700));
        assert_eq!(report_field(out, "signal-loop", "signals"), Some(5));
        assert_eq!(report_field(out, "fault-loop", "signals"), None);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
