//! `--stat-hooks` through the real binary: the per-page memcg stat tracepoints are attached
//! only while a memory cgroup is in trouble (adaptive, the default), from start (`always`) or
//! never. The oracle for "attached" is the agent's own file descriptors: a raw tracepoint
//! bpf_link on `mod_memcg_lruvec_state` / `mod_memcg_state` in `/proc/AGENT/fdinfo`, which the
//! kernel writes; `/metrics` must agree with it. A kill that follows the pressure carries the
//! kernel's charge deltas in its kill point, bounded by what the test's hogs could charge.
//!
//! Every agent watches every memory cgroup of the machine: while another cgroup (not this
//! test's) is near its limit the idle and detach checks are skipped, with the reason printed.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{agent::AgentProcess, killed_by, start_hog};
use oomtrace::{
    cgroup::memory::{scan_limited, MemoryFiles},
    cgroup::MemoryHierarchy,
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// The cgroup limit of every test here.
const LIMIT: u64 = 64 * MIB;
/// What the holding hog allocates: with its own few MiB, about 85% of [`LIMIT`].
const HOLD_MB: u64 = 50;
/// `--stat-hooks-quiet` of the adaptive agents.
const QUIET_S: u64 = 3;
/// The stat tracepoints (`link_type: raw_tracepoint`, `tp_name:` in a link's fdinfo).
const STAT_TRACEPOINTS: [&str; 2] = ["mod_memcg_lruvec_state", "mod_memcg_state"];

/// The tests of this binary take turns: each agent sees every cgroup, the others' hogs too.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this kernel has the stat tracepoints (6.13+); the tests skip without them.
fn has_stat_tracepoints() -> bool {
    oomtrace::capture::tracefs::root()
        .is_ok_and(|t| t.join("events/memcg/mod_memcg_lruvec_state").exists())
}

fn hierarchy() -> MemoryHierarchy {
    MemoryHierarchy::detect().expect("memory hierarchy")
}

fn cgroup(tag: &str) -> MemoryCgroup {
    let name = format!("oomtrace-stathooks-{tag}-{}", std::process::id());
    MemoryCgroup::create(&hierarchy(), &name, Some(LIMIT)).expect("cgroup")
}

/// A scratch directory for an agent's output and log.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("oomtrace-stathooks-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An agent writing records to `dir/NAME.jsonl` and its log to `dir/NAME.log`, with `extra`
/// arguments (unpinned unless they say `--pin-dir`).
fn agent(dir: &Path, name: &str, extra: &[&str]) -> AgentProcess {
    let out = dir.join(format!("{name}.jsonl"));
    let log = dir.join(format!("{name}.log"));
    let out = out.to_str().expect("UTF-8");
    let mut args = vec!["--no-stdout", "--sigkill", "none", "--output-file", out];
    if !extra.contains(&"--pin-dir") {
        args.push("--no-pin");
    }
    args.extend(extra);
    AgentProcess::start(&args, Stdio::null(), Some(&log))
}

/// Raw tracepoint links on the stat tracepoints that process `pid` holds, read from the
/// kernel's fdinfo of each of its bpf_link fds.
fn stat_links(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return found;
    };
    for fd in fds.flatten() {
        let is_link = std::fs::read_link(fd.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf_link");
        if !is_link {
            continue;
        }
        let name = fd.file_name().to_string_lossy().into_owned();
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{name}")).unwrap_or_default();
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        if field("link_type:").as_deref() != Some("raw_tracepoint") {
            continue;
        }
        if let Some(tp) = field("tp_name:").filter(|t| STAT_TRACEPOINTS.contains(&t.as_str())) {
            found.push(tp);
        }
    }
    found.sort();
    found
}

/// `oomtrace_stat_hooks_attached` and `oomtrace_stat_hooks_attached_seconds_total`.
fn hooks_metrics(agent: &AgentProcess) -> (u64, f64) {
    let m = agent.get("/metrics").1;
    let attached = common::agent::metric(&m, "oomtrace_stat_hooks_attached")
        .unwrap_or_else(|| panic!("no oomtrace_stat_hooks_attached in /metrics:\n{m}"));
    let seconds = m
        .lines()
        .find_map(|l| l.strip_prefix("oomtrace_stat_hooks_attached_seconds_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no oomtrace_stat_hooks_attached_seconds_total:\n{m}"));
    (attached, seconds)
}

/// Waits until `/metrics` says `attached` (0 or 1), at most `within`; returns how long it took.
fn wait_attached(agent: &AgentProcess, attached: u64, within: Duration) -> Duration {
    let begin = Instant::now();
    loop {
        if hooks_metrics(agent).0 == attached {
            return begin.elapsed();
        }
        assert!(
            begin.elapsed() < within,
            "oomtrace_stat_hooks_attached {attached} within {within:?}; agent log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A limited cgroup other than `ours` whose usage is at 70% of its limit or more (the agent
/// may rightly hold the hooks for it), if any.
fn other_in_trouble(ours: &[&str]) -> Option<String> {
    let h = hierarchy();
    scan_limited(&h, 100_000).into_iter().find_map(|c| {
        if ours.contains(&c.path.as_str()) || c.limit_bytes == 0 {
            return None;
        }
        let usage = MemoryFiles::new(&c.dir, h.version).usage_bytes().ok()?;
        (usage as f64 >= 0.7 * c.limit_bytes as f64).then_some(c.path)
    })
}

/// Lets the monitor's next walk (every 2 s) pick up a freshly made cgroup.
fn let_monitor_see_it() {
    std::thread::sleep(Duration::from_millis(2500));
}

/// A hog holding [`HOLD_MB`] MiB in `cg`; returns it and the cgroup's usage then.
fn hold(cg: &MemoryCgroup) -> (Child, u64) {
    let hog = start_hog(
        cg,
        &[
            "--anon-mb",
            &HOLD_MB.to_string(),
            "--comm",
            "stathooks-hold",
        ],
        &SpawnOptions::default(),
        true,
    );
    let usage = MemoryFiles::new(cg.dir(), hierarchy().version)
        .usage_bytes()
        .expect("usage");
    let ratio = usage as f64 / LIMIT as f64;
    assert!(
        (0.8..0.9).contains(&ratio),
        "setup: the hog should hold the cgroup at ~85% of its limit, holds {ratio:.3}"
    );
    (hog, usage)
}

/// The `oom_kill` record of `pid` in an agent's output, waited for.
fn kill_record(out: &Path, pid: u32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["event"] == "oom_kill" && r["victim"]["pid"] == pid);
        if let Some(r) = found {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no oom_kill record of {pid} in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut hog: Child) {
    let _ = hog.kill();
    let _ = hog.wait();
}

#[test]
fn adaptive_attaches_in_trouble_keeps_kill_deltas_and_detaches_when_quiet() {
    require_host!();
    if !has_stat_tracepoints() {
        skip_test!("no memcg stat tracepoints on this kernel (6.13+)");
    }
    let _turn = take_turn();
    let tmp = Scratch::new("adaptive");
    let quiet = QUIET_S.to_string();
    let started = Instant::now();
    let agent = agent(&tmp.0, "agent", &["--stat-hooks-quiet", &quiet]);
    let pid = agent.child.id();
    let cg = cgroup("adaptive");

    // Idle: loaded, not attached; the agent holds no stat link.
    let_monitor_see_it();
    match other_in_trouble(&[cg.path()]) {
        Some(other) => eprintln!("idle check skipped: cgroup {other} is near its limit"),
        None => {
            assert_eq!(hooks_metrics(&agent), (0, 0.0), "{}", agent.log_text());
            assert_eq!(stat_links(pid), Vec::<String>::new(), "idle agent's links");
        }
    }

    // A process holds ~85% of the limit: attached within a few seconds, links and all.
    let (holder, held) = hold(&cg);
    let took = wait_attached(&agent, 1, Duration::from_secs(4));
    let attached_at = Instant::now();
    assert_eq!(
        stat_links(pid),
        ["mod_memcg_lruvec_state", "mod_memcg_state"],
        "the agent holds a link per stat tracepoint once attached"
    );
    let log = agent.log_text();
    assert!(
        log.contains(&format!(
            "stat hooks: attached: memory cgroup {}",
            cg.path()
        )) || other_in_trouble(&[cg.path()]).is_some(),
        "the log names the cgroup in trouble:\n{log}"
    );
    eprintln!("attached {took:?} after the hog held {held} bytes");
    // `check` names the mode, and the agent as the holder of stat hook links now.
    let check = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .arg("check")
        .output()
        .expect("check runs");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("  stat hooks: adaptive: loaded, attached only while"),
        "{text}"
    );
    assert!(
        text.contains(&format!("(pid {pid})")) && text.contains("by this check: no;"),
        "check names the agent's links: {text}"
    );

    // It grows to an OOM kill: a second hog asks for 20 MiB more; the kernel kills the larger
    // holder. The kill point carries the anon charged since the last sample: positive, and at
    // most the room the holder left (it charged nothing after its sample).
    let holder_pid = holder.id();
    let mut holder = holder;
    let grower = start_hog(
        &cg,
        &["--anon-mb", "20", "--comm", "stathooks-grow"],
        &SpawnOptions::default(),
        false,
    );
    assert_eq!(killed_by(&mut holder, Duration::from_secs(30)), Some(9));
    let killed_at = Instant::now();
    let kill = kill_record(&tmp.0.join("agent.jsonl"), holder_pid);
    let pressure = &kill["pressure"];
    assert!(
        pressure["sources"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "memcg_stat_tracepoints")),
        "{kill}"
    );
    let point = pressure["timeline"]
        .as_array()
        .and_then(|t| t.last())
        .unwrap_or_else(|| panic!("a kill point: {kill}"));
    assert_eq!(point["offset_ms"], 0, "{kill}");
    let anon = point["charged"]["anon_bytes"]
        .as_i64()
        .unwrap_or_else(|| panic!("charged anon at the kill point: {kill}"));
    eprintln!("kill point: {point}");
    let room = (LIMIT - HOLD_MB * MIB) as i64;
    assert!(
        anon > 0 && anon <= room,
        "anon charged since the last sample {anon}, want (0, {room}]: {point}"
    );

    // The hogs gone: detached within the quiet period and 2 s.
    stop(grower);
    let gone = Instant::now();
    drop(cg);
    if let Some(other) = other_in_trouble(&[]) {
        eprintln!("detach check skipped: cgroup {other} is near its limit");
        return;
    }
    wait_attached(&agent, 0, Duration::from_secs(QUIET_S + 2));
    assert_eq!(stat_links(pid), Vec::<String>::new(), "links closed");
    // Attached at least from when /metrics first said so to the kill, and then through a
    // quiet period (less the second between samples); never longer than the agent ran.
    let (_, seconds) = hooks_metrics(&agent);
    let least = (killed_at - attached_at).as_secs_f64() + (QUIET_S - 1) as f64;
    assert!(
        seconds >= least && seconds <= started.elapsed().as_secs_f64(),
        "attached seconds {seconds}: at least {least}, at most {:?}; detached {:?} after the hogs went",
        started.elapsed(),
        gone.elapsed()
    );
    assert!(
        agent.log_text().contains(&format!(
            "stat hooks: detached: no memory cgroup in trouble for {QUIET_S} s"
        )),
        "{}",
        agent.log_text()
    );
}

#[test]
fn never_and_no_stat_hooks_never_attach() {
    require_host!();
    if !has_stat_tracepoints() {
        skip_test!("no memcg stat tracepoints on this kernel (6.13+)");
    }
    let _turn = take_turn();
    let tmp = Scratch::new("never");
    let never = agent(&tmp.0, "never", &["--stat-hooks", "never"]);
    let alias = agent(&tmp.0, "alias", &["--no-stat-hooks"]);
    let cg = cgroup("never");
    let_monitor_see_it();
    let (holder, _) = hold(&cg);
    std::thread::sleep(Duration::from_secs(3));
    for a in [&never, &alias] {
        assert_eq!(hooks_metrics(a), (0, 0.0), "{}", a.log_text());
        assert_eq!(stat_links(a.child.id()), Vec::<String>::new());
        assert!(
            a.log_text()
                .contains("probe memcg_lruvec_stat: not attached (--stat-hooks never)"),
            "{}",
            a.log_text()
        );
    }
    stop(holder);
}

#[test]
fn always_is_attached_from_start() {
    require_host!();
    if !has_stat_tracepoints() {
        skip_test!("no memcg stat tracepoints on this kernel (6.13+)");
    }
    let _turn = take_turn();
    let tmp = Scratch::new("always");
    let started = Instant::now();
    let agent = agent(&tmp.0, "always", &["--stat-hooks", "always"]);
    assert_eq!(
        stat_links(agent.child.id()),
        ["mod_memcg_lruvec_state", "mod_memcg_state"],
        "attached at start"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (attached, seconds) = hooks_metrics(&agent);
    assert_eq!(attached, 1);
    assert!(
        seconds >= 1.0 && seconds <= started.elapsed().as_secs_f64(),
        "attached seconds {seconds} vs {:?} since start",
        started.elapsed()
    );
}

/// The entries of the one pinned state in `pins`.
fn pinned_entries(pins: &Path) -> Vec<String> {
    let states: Vec<PathBuf> = std::fs::read_dir(pins)
        .expect("pin dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(states.len(), 1, "one pinned state: {states:?}");
    let mut names: Vec<String> = std::fs::read_dir(&states[0])
        .expect("state")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn adaptive_attach_works_after_a_restart_that_adopts_the_pins() {
    require_host!();
    if !has_stat_tracepoints() {
        skip_test!("no memcg stat tracepoints on this kernel (6.13+)");
    }
    let _turn = take_turn();
    let pins = common::agent::PinDir::new("stathooks");
    let tmp = Scratch::new("restart");
    let dir = pins.0.to_str().expect("UTF-8");
    let quiet = QUIET_S.to_string();
    let args = ["--pin-dir", dir, "--stat-hooks-quiet", quiet.as_str()];

    // The first agent pins the stat programs themselves, and no link of theirs.
    let mut first = agent(&tmp.0, "first", &args);
    assert!(
        first.log_text().contains("pinned the programs and maps at"),
        "{}",
        first.log_text()
    );
    let names = pinned_entries(&pins.0);
    let stat: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("@memcg_lruvec_stat@") || n.contains("@memcg_stat@"))
        .collect();
    assert_eq!(
        stat,
        [
            "prog@memcg_lruvec_stat@tp_btf:mod_memcg_lruvec_state@oomtrace_tp_btf_mod_memcg_lruvec_state",
            "prog@memcg_stat@tp_btf:mod_memcg_state@oomtrace_tp_btf_mod_memcg_state",
        ],
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("link@victim@")),
        "{names:?}"
    );
    assert!(first.terminate().success(), "first agent exits cleanly");

    // The second adopts them (no aya program objects) and still attaches on demand.
    let second = agent(&tmp.0, "second", &args);
    assert!(
        second
            .log_text()
            .contains("adopting the programs pinned at"),
        "{}",
        second.log_text()
    );
    let pid = second.child.id();
    let cg = cgroup("restart");
    let_monitor_see_it();
    if other_in_trouble(&[cg.path()]).is_none() {
        assert_eq!(hooks_metrics(&second).0, 0, "{}", second.log_text());
        assert_eq!(stat_links(pid), Vec::<String>::new());
    }
    let (holder, _) = hold(&cg);
    wait_attached(&second, 1, Duration::from_secs(4));
    assert_eq!(
        stat_links(pid),
        ["mod_memcg_lruvec_state", "mod_memcg_state"]
    );
    // The on-demand links are the agent's, never pinned.
    assert!(
        !pinned_entries(&pins.0)
            .iter()
            .any(|n| n.starts_with("link@memcg_")),
        "no stat link pinned"
    );
    stop(holder);
    drop(cg);
    if other_in_trouble(&[]).is_none() {
        wait_attached(&second, 0, Duration::from_secs(QUIET_S + 2));
        assert_eq!(stat_links(pid), Vec::<String>::new());
    }
}
