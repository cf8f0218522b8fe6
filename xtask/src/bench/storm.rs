//! Section 4 of `cargo xtask bench`: a storm of simultaneous memory-cgroup OOM kills.
//!
//! N cgroups of 16 MiB each get a hog that sleeps until one shared moment and then allocates
//! until killed, so the kernel kills N processes within a few hundred milliseconds. The agent's
//! stdout is a pipe the bench reads; each `oom_kill` line is timed on arrival (CLOCK_MONOTONIC)
//! against the record's own `ktime_ns` (the kernel's clock at the kill): the kill-to-line
//! latency, as p50, p99 and max. The agent's CPU is its threads' `schedstat` run time over the
//! storm minus the same length of idle before it, per kill. Every kill is counted three ways:
//! the pids the bench started and saw die by SIGKILL, `/proc/vmstat oom_kill`, and the records.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{check_interrupted, free_port, http_status, Agent, Bench, Cgroup, MIB};

/// Kill-to-line p99 target.
const P99_TARGET_MS: f64 = 20.0;
/// Agent CPU per kill target.
const CPU_TARGET_MS: f64 = 0.3;
/// Each storm cgroup's limit.
const LIMIT: u64 = 16 * MIB;
/// How long after the last spawn the hogs start allocating, all at once.
const START_AFTER: Duration = Duration::from_millis(1500);

/// One `oom_kill` line as the bench saw it.
pub(super) struct Arrival {
    pub(super) pid: u32,
    ktime_ns: u64,
    pub(super) latency_ms: f64,
}

impl Bench {
    /// Two storms: with the agent as it runs by default, and with it at the node's normal
    /// priority (`--nice 0`), to show what the priority buys.
    pub(super) fn storm(&self, kills: u32) -> Result<()> {
        self.storm_once(kills, "default agent (--nice -20)", &[])?;
        self.storm_once(kills, "agent at --nice 0", &["--nice", "0"])
    }

    /// `kills` simultaneous memcg OOM kills with the agent running: latency and CPU per kill.
    fn storm_once(&self, kills: u32, label: &str, extra: &[&str]) -> Result<()> {
        println!(
            "bench: storm, {label}: {kills} memory cgroups of {} MiB, one hog each, all allocating at once",
            LIMIT / MIB
        );
        let cgroups = (0..kills)
            .map(|i| {
                Cgroup::create(
                    &self.hierarchy,
                    &format!("{}-storm-{i}", self.prefix),
                    LIMIT,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let (mut agent, arrivals) = self.start_piped_agent(extra)?;
        // Idle CPU over a stretch as long as the storm will take, to subtract.
        let idle_for = Duration::from_secs(3);
        let idle_start = agent_cpu_ns(agent.pid())?;
        std::thread::sleep(idle_for);
        let idle_ns = agent_cpu_ns(agent.pid())?.saturating_sub(idle_start);
        let vmstat_before = vmstat_oom_kill()?;

        let spawn_start = Instant::now();
        let start_at = spawn_start + START_AFTER;
        let mut hogs: Vec<Child> = Vec::new();
        for cg in &cgroups {
            check_interrupted()?;
            let delay = start_at.saturating_duration_since(Instant::now());
            let mut cmd: Command = self.hog(&[
                "--comm",
                "bench-storm",
                "--delay-ms",
                &delay.as_millis().to_string(),
            ]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            hogs.push(cg.spawn(&mut cmd)?);
        }
        if Instant::now() > start_at {
            println!(
                "bench:   warning: spawning took {:?}, longer than the {START_AFTER:?} head start: the kills are less simultaneous",
                spawn_start.elapsed()
            );
        }
        let cpu_start = agent_cpu_ns(agent.pid())?;
        let storm_start = Instant::now();
        let mut victims = Vec::new();
        for mut hog in hogs {
            let status = super::wait_timeout(&mut hog, Duration::from_secs(120))?;
            use std::os::unix::process::ExitStatusExt;
            if status.signal() == Some(libc::SIGKILL) {
                victims.push(hog.id());
            }
        }
        // Wait for each victim's line (or 10 s of silence).
        let mut seen: Vec<Arrival> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < victims.len() && Instant::now() < deadline {
            match arrivals.recv_timeout(Duration::from_secs(10)) {
                Ok(a) if victims.contains(&a.pid) => seen.push(a),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let storm_secs = storm_start.elapsed();
        let cpu_ns = agent_cpu_ns(agent.pid())?.saturating_sub(cpu_start);
        let vmstat_kills = vmstat_oom_kill()?.saturating_sub(vmstat_before);
        let metrics = metrics_text(agent.port);
        agent.stop()?;

        let mut lat: Vec<f64> = seen.iter().map(|a| a.latency_ms).collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return f64::NAN;
            }
            let i = ((p / 100.0) * lat.len() as f64).ceil() as usize;
            lat[i.clamp(1, lat.len()) - 1]
        };
        // The idle stretch scaled to the storm's length (the sampling tick runs throughout).
        let idle_share = idle_ns as f64 * storm_secs.as_secs_f64() / idle_for.as_secs_f64();
        let per_kill_ms = (cpu_ns as f64 - idle_share).max(0.0) / 1e6 / seen.len().max(1) as f64;
        println!(
            "bench:   kills: {} hogs SIGKILLed, {vmstat_kills} in /proc/vmstat oom_kill, {} records \
             for them; events lost {}, records dropped {}",
            victims.len(),
            seen.len(),
            metric(&metrics, "oomtrace_events_lost_total"),
            metric_sum(&metrics, "oomtrace_records_dropped_total"),
        );
        let first = seen.iter().map(|a| a.ktime_ns).min().unwrap_or(0);
        let last = seen.iter().map(|a| a.ktime_ns).max().unwrap_or(0);
        println!(
            "bench:   the kernel's kills spread over {:.1} ms (first to last record's ktime_ns)",
            last.saturating_sub(first) as f64 / 1e6
        );
        println!(
            "bench: storm ({label}) kill-to-line latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms — target p99 ≤ {P99_TARGET_MS} ms: {}",
            pct(50.0),
            pct(99.0),
            pct(100.0),
            super::met(pct(99.0) <= P99_TARGET_MS)
        );
        println!(
            "bench: storm ({label}) agent CPU: {:.3} ms per kill ({:.1} ms over {:.2} s, less {:.1} ms idle share) — target ≤ {CPU_TARGET_MS} ms: {}",
            per_kill_ms,
            cpu_ns as f64 / 1e6,
            storm_secs.as_secs_f64(),
            idle_share / 1e6,
            super::met(per_kill_ms <= CPU_TARGET_MS)
        );
        if seen.len() != victims.len() {
            bail!(
                "{} of {} victims have no record",
                victims.len() - seen.len(),
                victims.len()
            );
        }
        Ok(())
    }

    /// An agent in the agent cgroup whose stdout the bench reads, timing each `oom_kill` line.
    pub(super) fn start_piped_agent(
        &self,
        extra: &[&str],
    ) -> Result<(Agent, mpsc::Receiver<Arrival>)> {
        let port = free_port()?;
        let log = self.tmp.join("agent-storm.log");
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "agent",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(&log)
                .with_context(|| format!("cannot create {}", log.display()))?,
        );
        let mut child = self.agent_cg.spawn(&mut cmd)?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The measuring thread must not queue behind the hogs: on Linux a nice value set
            // with the thread's id is that thread's alone.
            // SAFETY: gettid and setpriority have no memory-safety preconditions.
            unsafe {
                let tid = libc::gettid() as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, -20);
            }
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let now = monotonic_ns();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["event"] != "oom_kill" {
                    continue;
                }
                let (Some(pid), Some(ktime)) =
                    (v["victim"]["pid"].as_u64(), v["ktime_ns"].as_u64())
                else {
                    continue;
                };
                let latency_ms = now.saturating_sub(ktime) as f64 / 1e6;
                if tx
                    .send(Arrival {
                        pid: pid as u32,
                        ktime_ns: ktime,
                        latency_ms,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut agent = Agent {
            child,
            port,
            log,
            output: self.tmp.join("unused.jsonl"),
            stopped: false,
        };
        agent.wait_ready()?;
        Ok((agent, rx))
    }
}

/// CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The run time of every thread of `pid` (`/proc/PID/task/*/schedstat`, first field), in ns.
pub(super) fn agent_cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let path = task?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(&path) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// `/proc/vmstat` `oom_kill`: the kernel's count of OOM kills since boot.
pub(super) fn vmstat_oom_kill() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").context("cannot read /proc/vmstat")?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .context("no oom_kill in /proc/vmstat")
}

fn metrics_text(port: u16) -> String {
    if http_status(port, "/healthz") != Some(200) {
        return String::new();
    }
    super::http_get(port, "/metrics").unwrap_or_default()
}

/// One unlabelled sample; "?" when absent.
fn metric(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or("?")
        .to_string()
}

/// The sum of every sample of a family.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}
