//! Section 6 of `cargo xtask bench`: the idle agent with many memory-limited cgroups.
//!
//! Twice, first with no extra cgroups and then with N empty cgroups of 64 MiB each made before
//! the agent starts: the agent's CPU (its threads' `schedstat` run time) over an idle stretch,
//! as a share of one core, its VmRSS after it, then a few single memory-cgroup OOM kills (each
//! in a 16 MiB cgroup made a second before its hog starts, as a new pod's would be) timed from
//! the `oom_kill` record's `ktime_ns` to its line on the agent's stdout (p50 and max). Target:
//! with the N cgroups, CPU ≤ 1% of a core and the kill latency as without them.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::storm::{agent_cpu_ns, Arrival};
use super::{check_interrupted, met, Bench, Cgroup, MIB};

/// Steady CPU target with the N cgroups, in percent of one core.
const CPU_TARGET_PERCENT: f64 = 1.0;
/// Each of the N cgroups' limit.
const IDLE_LIMIT: u64 = 64 * MIB;
/// The limit of each kill's cgroup.
const KILL_LIMIT: u64 = 16 * MIB;

/// One pass: CPU %, VmRSS MiB, kill latencies (ms, sorted).
struct Figures {
    cpu_percent: f64,
    rss_mib: f64,
    latencies: Vec<f64>,
}

impl Figures {
    fn p50(&self) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        super::median(&mut self.latencies.clone())
    }

    fn max(&self) -> f64 {
        self.latencies.last().copied().unwrap_or(f64::NAN)
    }
}

impl Bench {
    /// Without, then with `n` limited cgroups: idle CPU over `secs`, RSS, `kills` kill latencies.
    pub(super) fn cgroups(&self, n: u32, secs: u64, kills: u32) -> Result<()> {
        println!(
            "bench: cgroups: the idle agent without and with {n} empty cgroups of {} MiB: CPU over {secs} s, \
             VmRSS, then {kills} single OOM kills (16 MiB cgroup each), kill-to-line latency",
            IDLE_LIMIT / MIB
        );
        let without = self.cgroups_pass("without", secs, kills)?;
        let made = Instant::now();
        let idle: Vec<Cgroup> = (0..n)
            .map(|i| {
                check_interrupted()?;
                Cgroup::create(
                    &self.hierarchy,
                    &format!("{}-idle-{i}", self.prefix),
                    IDLE_LIMIT,
                )
            })
            .collect::<Result<_>>()?;
        println!(
            "bench:   made {n} cgroups in {:.1} s",
            made.elapsed().as_secs_f64()
        );
        let with = self.cgroups_pass(&format!("with {n}"), secs, kills);
        let removed = Instant::now();
        drop(idle);
        println!(
            "bench:   removed them in {:.1} s",
            removed.elapsed().as_secs_f64()
        );
        let with = with?;
        println!(
            "bench: cgroups: CPU {:.2}% of a core without, {:.2}% with {n} — target ≤ {CPU_TARGET_PERCENT}%: {}",
            without.cpu_percent,
            with.cpu_percent,
            met(with.cpu_percent <= CPU_TARGET_PERCENT)
        );
        println!(
            "bench: cgroups: VmRSS {:.1} MiB without, {:.1} MiB with {n}",
            without.rss_mib, with.rss_mib
        );
        println!(
            "bench: cgroups: kill-to-line latency p50 {:.1} ms / max {:.1} ms without, p50 {:.1} ms / max {:.1} ms with {n}",
            without.p50(),
            without.max(),
            with.p50(),
            with.max()
        );
        Ok(())
    }

    fn cgroups_pass(&self, label: &str, secs: u64, kills: u32) -> Result<Figures> {
        let started = Instant::now();
        let (mut agent, arrivals) = self.start_piped_agent(&[])?;
        println!(
            "bench:   {label}: agent ready {:.1} s after start",
            started.elapsed().as_secs_f64()
        );
        // Past start-up's first walks.
        std::thread::sleep(Duration::from_secs(3));
        let length = Duration::from_secs(secs);
        let (t0, cpu0) = (Instant::now(), agent_cpu_ns(agent.pid())?);
        let deadline = t0 + length;
        while Instant::now() < deadline {
            check_interrupted()?;
            std::thread::sleep(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            );
        }
        let cpu_ns = agent_cpu_ns(agent.pid())?.saturating_sub(cpu0);
        let cpu_percent = cpu_ns as f64 / t0.elapsed().as_nanos() as f64 * 100.0;
        let rss_mib = agent.status_kib("VmRSS:")? as f64 / 1024.0;
        println!(
            "bench:   {label}: agent CPU {:.1} ms over {:.1} s = {cpu_percent:.2}% of a core, VmRSS {rss_mib:.1} MiB",
            cpu_ns as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
        let mut latencies = Vec::new();
        for i in 0..kills {
            check_interrupted()?;
            let ms = self.one_kill(&arrivals, &format!("{label}-{i}"), i)?;
            latencies.push(ms);
        }
        agent.stop()?;
        latencies.sort_by(f64::total_cmp);
        println!(
            "bench:   {label}: kill-to-line latencies (ms): {}",
            latencies
                .iter()
                .map(|l| format!("{l:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Figures {
            cpu_percent,
            rss_mib,
            latencies,
        })
    }

    /// A fresh 16 MiB cgroup, a hog in it a second later that allocates until the kernel kills
    /// it: the latency of its line, in ms.
    fn one_kill(&self, arrivals: &mpsc::Receiver<Arrival>, tag: &str, i: u32) -> Result<f64> {
        let name = format!("{}-kill-{}", self.prefix, tag.replace(' ', "-"));
        let cg = Cgroup::create(&self.hierarchy, &name, KILL_LIMIT)?;
        // Spread the kills over the sampling second.
        std::thread::sleep(Duration::from_millis(1000 + u64::from(i) * 237 % 1000));
        let mut hog = cg.spawn(
            self.hog(&["--comm", "bench-scale", "--anon-mb", "200"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let status = super::wait_timeout(&mut hog, Duration::from_secs(60))?;
        if status.signal() != Some(libc::SIGKILL) {
            bail!("the hog in {name} was not killed by the kernel: {status}");
        }
        let pid = hog.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let a = arrivals
                .recv_timeout(left)
                .with_context(|| format!("no oom_kill line for pid {pid} within 10 s"))?;
            if a.pid == pid {
                // Let the agent see the cgroup's removal apart from the next kill.
                drop(cg);
                std::thread::sleep(Duration::from_millis(300));
                return Ok(a.latency_ms);
            }
        }
    }
}
