//! Section 3 of `cargo xtask bench`: what the SIGKILL hook costs a signal-heavy workload.
//!
//! The hook sits on `signal:signal_generate`, which fires for every signal generated on the
//! machine; it tests the signal number first, so for anything but SIGKILL its cost should be
//! the tracepoint's dispatch and a compare. The workload (`oomtrace hog --signal-loop N
//! --fork-loop M`) generates nothing but such signals: N kill(2)s of an ignored SIGUSR1 to
//! itself, then M children forked, exited and reaped (one SIGCHLD each). It is timed without
//! the agent, with the agent under `--sigkill none` (no signal hook: what the other hooks cost
//! it) and with the agent by default (the hook attached), in rounds whose order rotates. Each
//! run reports its whole time and that of its fastest hundredth, the part least disturbed by
//! the other work of a shared machine. Then the kernel's own account (`bpf_stats`) of the
//! programs on `signal_generate`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{
    check_interrupted, load_average, median, programs, report_field, run_workload, Bench, BpfStats,
    Cgroup, Program, MIB,
};

/// The tracepoint the SIGKILL hook attaches to (tp_btf or classic).
const SIGNAL_TRACEPOINT: &str = "signal_generate";

/// One way to run the workload: without the agent, or with it and these flags.
struct Setup {
    label: &'static str,
    agent: Option<&'static [&'static str]>,
}

const WITHOUT: Setup = Setup {
    label: "without the agent",
    agent: None,
};

/// A cost per operation, in ns.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PerOp {
    signal: f64,
    fork: f64,
}

/// One run's costs: over the whole run, and in its fastest hundredth.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    whole: PerOp,
    best: PerOp,
}

impl Bench {
    /// Times the signal workload without the agent, with `--sigkill none` and with the
    /// default (signal hook attached), then reads the hook's run time from `bpf_stats`.
    pub(super) fn signals(&self, rounds: u32, signals: u64, forks: u64) -> Result<()> {
        let has_flag = agent_has_sigkill_flag(&self.bin)?;
        let setups: Vec<Setup> = if has_flag {
            vec![
                WITHOUT,
                Setup {
                    label: "with --sigkill none",
                    agent: Some(&["--sigkill", "none"]),
                },
                Setup {
                    label: "with the signal hook (default)",
                    agent: Some(&[]),
                },
            ]
        } else {
            println!(
                "bench: signals: note: this agent has no --sigkill flag (no signal hook): \
                 timing without it and with it as it is"
            );
            vec![
                WITHOUT,
                Setup {
                    label: "with the agent (no signal hook)",
                    agent: Some(&[]),
                },
            ]
        };
        let cg = Cgroup::create(
            &self.hierarchy,
            &format!("{}-signals", self.prefix),
            128 * MIB,
        )?;
        warn_of_other_hooks()?;
        println!(
            "bench: signals: `oomtrace hog --signal-loop {signals} --fork-loop {forks}` in a 128 MiB cgroup \
             (kill(2) of an ignored SIGUSR1 to itself, then fork, exit and wait: one SIGCHLD each), \
             {rounds} rounds of: {} (order rotated)",
            setups.iter().map(|s| s.label).collect::<Vec<_>>().join(", ")
        );
        // One untimed run first: page cache, binary, allocator.
        self.signal_workload(&cg, signals, forks)?;
        let mut results: Vec<Vec<Run>> = vec![Vec::new(); setups.len()];
        for round in 0..rounds as usize {
            let mut line = Vec::new();
            for i in 0..setups.len() {
                let c = (round + i) % setups.len();
                check_interrupted()?;
                let r = match setups[c].agent {
                    Some(flags) => {
                        let mut agent = self.start_agent_with(flags)?;
                        let r = self.signal_workload(&cg, signals, forks)?;
                        agent.stop()?;
                        r
                    }
                    None => self.signal_workload(&cg, signals, forks)?,
                };
                results[c].push(r);
                line.push(format!(
                    "{:.1} (best {:.1}) ns/signal {:.1} (best {:.1}) µs/fork {}",
                    r.whole.signal,
                    r.best.signal,
                    r.whole.fork / 1e3,
                    r.best.fork / 1e3,
                    setups[c].label
                ));
            }
            println!("bench:   round {}: {}", round + 1, line.join(", "));
        }
        warn_of_other_hooks()?;
        print_summary(&setups, &results, has_flag);
        drop(cg);
        self.signal_program_cost(signals, forks)
    }

    /// `bpf_stats` over one signals-only run and one forks-only run under the default agent:
    /// runs and ns per run of the programs on `signal_generate`, and all programs' ns per
    /// operation. The stats' own clock reads are included in each run's time, and the
    /// tracepoint's dispatch is not (the timed rounds above show it).
    fn signal_program_cost(&self, signals: u64, forks: u64) -> Result<()> {
        let _stats = BpfStats::enable()?;
        let cg = Cgroup::create(
            &self.hierarchy,
            &format!("{}-signal-cost", self.prefix),
            128 * MIB,
        )?;
        let mut agent = self.start_agent()?;
        let before = programs(agent.pid())?;
        self.signal_workload(&cg, signals, 0)?;
        let after_signals = programs(agent.pid())?;
        self.signal_workload(&cg, 0, forks)?;
        let after_forks = programs(agent.pid())?;
        agent.stop()?;

        let hooked = hook_programs(&after_forks);
        let parts = [
            ("signals", signals, &before, &after_signals),
            ("forks", forks, &after_signals, &after_forks),
        ];
        for (what, n, from, to) in parts {
            let one = if what == "signals" { "signal" } else { "fork" };
            let (all_runs, all_ns) = delta(from, to, |_| true);
            let (runs, ns) = delta(from, to, |id| hooked.contains(&id));
            let hook = if hooked.is_empty() {
                format!("no program on {SIGNAL_TRACEPOINT}")
            } else {
                format!(
                    "{runs} runs on {SIGNAL_TRACEPOINT} ({:.2} per {one}), {:.1} ns per run, {:.1} ns per {one}",
                    runs as f64 / n as f64,
                    ns as f64 / runs.max(1) as f64,
                    ns as f64 / n as f64
                )
            };
            println!(
                "bench: signals eBPF cost (bpf_stats) over {n} {what}: {hook}; \
                 all the agent's programs: {all_runs} runs, {:.1} ns per {one}",
                all_ns as f64 / n as f64
            );
        }
        Ok(())
    }

    /// `hog --signal-loop SIGNALS --fork-loop FORKS` in `cg`: ns per signal and per fork (NaN
    /// for a part of zero operations), whole and in the fastest hundredth.
    fn signal_workload(&self, cg: &Cgroup, signals: u64, forks: u64) -> Result<Run> {
        let (n, m) = (signals.to_string(), forks.to_string());
        let mut cmd = self.hog(&[
            "--comm",
            "bench-signals",
            "--signal-loop",
            &n,
            "--fork-loop",
            &m,
        ]);
        let out = run_workload(cg, &mut cmd)?;
        parse_signal_loop(&out).with_context(|| {
            format!("an incomplete signal-loop line in the workload's output: {out:?}")
        })
    }
}

/// Medians, noise and differences of the timed rounds; `results[i]` are `setups[i]`'s runs,
/// `setups[0]` is without the agent and, with `has_flag`, 1 and 2 are `--sigkill none` and
/// the default.
fn print_summary(setups: &[Setup], results: &[Vec<Run>], has_flag: bool) {
    let medians: Vec<Run> = results.iter().map(|v| median_run(v)).collect();
    let base = medians[0];
    let without = &results[0];
    println!(
        "bench:   noise: runs without the agent spread {:.1}% per signal, {:.1}% per fork; \
         fastest hundredths {:.1}%, {:.1}% (max−min over median); load average {}",
        spread(without.iter().map(|r| r.whole.signal), base.whole.signal),
        spread(without.iter().map(|r| r.whole.fork), base.whole.fork),
        spread(without.iter().map(|r| r.best.signal), base.best.signal),
        spread(without.iter().map(|r| r.best.fork), base.best.fork),
        load_average()
    );
    println!(
        "bench: signals {} (medians of {} rounds): whole runs {:.1} ns per signal, \
         {:.2} µs per fork; fastest hundredths {:.1} ns, {:.2} µs",
        WITHOUT.label,
        without.len(),
        base.whole.signal,
        base.whole.fork / 1e3,
        base.best.signal,
        base.best.fork / 1e3
    );
    for (setup, m) in setups.iter().zip(&medians).skip(1) {
        println!(
            "bench: signals {}: whole runs {}; fastest hundredths {}",
            setup.label,
            compare(base.whole, m.whole),
            compare(base.best, m.best)
        );
    }
    if has_flag {
        let (none, hook) = (medians[1], medians[2]);
        println!(
            "bench: signals: the signal hook's share (default − --sigkill none): whole runs {}; \
             fastest hundredths {}",
            difference(none.whole, hook.whole),
            difference(none.best, hook.best)
        );
    }
}

/// `signal-loop signals=N forks=M signals_ns=S forks_ns=F signal_batch=B
/// best_signal_batch_ns=X fork_batch=C best_fork_batch_ns=Y` → ns per signal and per fork, over
/// the whole run (S / N, F / M) and in the fastest batch (X / B, Y / C).
fn parse_signal_loop(out: &str) -> Option<Run> {
    let field = |key| report_field(out, "signal-loop", key).map(|v| v as f64);
    Some(Run {
        whole: PerOp {
            signal: field("signals_ns")? / field("signals")?,
            fork: field("forks_ns")? / field("forks")?,
        },
        best: PerOp {
            signal: field("best_signal_batch_ns")? / field("signal_batch")?,
            fork: field("best_fork_batch_ns")? / field("fork_batch")?,
        },
    })
}

/// Whether `oomtrace agent` knows `--sigkill` (the signal hook's switch).
fn agent_has_sigkill_flag(bin: &Path) -> Result<bool> {
    let mut cmd = Command::new(bin);
    cmd.args(["agent", "--help"]).stderr(Stdio::null());
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", crate::util::describe(&cmd)))?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--sigkill"))
}

/// The ids of the programs linked to `signal_generate`.
fn hook_programs(progs: &std::collections::BTreeMap<u64, Program>) -> Vec<u64> {
    progs
        .iter()
        .filter(|(_, p)| p.tracepoints.iter().any(|t| t == SIGNAL_TRACEPOINT))
        .map(|(id, _)| *id)
        .collect()
}

/// Runs and ns the programs that `pick` selects gained between two snapshots.
fn delta(
    from: &std::collections::BTreeMap<u64, Program>,
    to: &std::collections::BTreeMap<u64, Program>,
    pick: impl Fn(u64) -> bool,
) -> (u64, u64) {
    to.iter()
        .filter(|(id, _)| pick(**id))
        .fold((0, 0), |(runs, ns), (id, p)| {
            let old = from.get(id).cloned().unwrap_or_default();
            (
                runs + p.runs.saturating_sub(old.runs),
                ns + p.ns.saturating_sub(old.ns),
            )
        })
}

fn median_run(v: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    Run {
        whole: PerOp {
            signal: m(|r| r.whole.signal),
            fork: m(|r| r.whole.fork),
        },
        best: PerOp {
            signal: m(|r| r.best.signal),
            fork: m(|r| r.best.fork),
        },
    }
}

/// `812.3 ns per signal (+12.3 ns, +1.5%), 190.00 µs per fork (+1.23 µs, +0.6%)`
fn compare(base: PerOp, x: PerOp) -> String {
    format!(
        "{:.1} ns per signal ({}), {:.2} µs per fork ({})",
        x.signal,
        diff_ns(base.signal, x.signal),
        x.fork / 1e3,
        diff_us(base.fork, x.fork)
    )
}

/// `+12.3 ns, +1.5% per signal, +1.23 µs, +0.6% per fork`
fn difference(base: PerOp, x: PerOp) -> String {
    format!(
        "{} per signal, {} per fork",
        diff_ns(base.signal, x.signal),
        diff_us(base.fork, x.fork)
    )
}

/// Says which other processes hold a program on `signal_generate`: it runs on every signal
/// of the machine, so it slows every setup alike and shrinks the measured differences.
fn warn_of_other_hooks() -> Result<()> {
    let mut holders = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot read /proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit meanwhile: skip what cannot be read.
        let Ok(progs) = programs(pid) else {
            continue;
        };
        if !hook_programs(&progs).is_empty() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            holders.push(format!("{pid} ({})", comm.trim()));
        }
    }
    if !holders.is_empty() {
        println!(
            "bench: signals: warning: other processes hold a program on {SIGNAL_TRACEPOINT}, which \
             every setup pays for: {}",
            holders.join(", ")
        );
    }
    Ok(())
}

/// (max − min) / median, in percent.
fn spread(values: impl Iterator<Item = f64> + Clone, median: f64) -> f64 {
    let max = values.clone().fold(f64::MIN, f64::max);
    let min = values.fold(f64::MAX, f64::min);
    (max - min) / median * 100.0
}

/// `+12.3 ns, +1.5%`
fn diff_ns(base: f64, x: f64) -> String {
    format!("{:+.1} ns, {:+.1}%", x - base, (x / base - 1.0) * 100.0)
}

/// `+1.23 µs, +0.8%` from ns.
fn diff_us(base: f64, x: f64) -> String {
    format!(
        "{:+.2} µs, {:+.1}%",
        (x - base) / 1e3,
        (x / base - 1.0) * 100.0
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn parses_the_signal_loop_line() {
        let out = "signal-loop signals=1000 forks=10 signals_ns=500000 forks_ns=2000000 \
                   signal_batch=10 best_signal_batch_ns=4000 fork_batch=1 best_fork_batch_ns=150000\n";
        assert_eq!(
            parse_signal_loop(out),
            Some(Run {
                whole: PerOp {
                    signal: 500.0,
                    fork: 200_000.0
                },
                best: PerOp {
                    signal: 400.0,
                    fork: 150_000.0
                },
            })
        );
        assert_eq!(parse_signal_loop("fault-loop elapsed_ns=1\n"), None);
    }

    #[test]
    fn counts_only_the_hooks_programs_and_only_what_they_gained() {
        let prog = |runs, ns, tp: &str| Program {
            runs,
            ns,
            tracepoints: vec![tp.to_string()],
        };
        let from = BTreeMap::from([(1, prog(10, 100, "signal_generate")), (2, prog(5, 50, "x"))]);
        let to = BTreeMap::from([
            (1, prog(30, 700, "signal_generate")),
            (2, prog(6, 60, "x")),
            (3, prog(4, 40, "signal_generate")),
        ]);
        let hooked = hook_programs(&to);
        assert_eq!(hooked, vec![1, 3]);
        assert_eq!(delta(&from, &to, |id| hooked.contains(&id)), (24, 640));
        assert_eq!(delta(&from, &to, |_| true), (25, 650));
    }

    #[test]
    fn spread_and_differences() {
        assert_eq!(spread([90.0, 110.0, 100.0].into_iter(), 100.0), 20.0);
        assert_eq!(diff_ns(100.0, 110.0), "+10.0 ns, +10.0%");
        assert_eq!(diff_us(2000.0, 1000.0), "-1.00 µs, -50.0%");
    }
}
