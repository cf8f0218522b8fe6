//! Durable capture and the proof of zero loss, through the real binary: an agent pins its
//! programs in a per-test bpffs directory, is SIGTERM'd, kills happen while no agent runs, a
//! second agent adopts the pins. Every process the test OOM-killed (the kernel's SIGKILL is the
//! oracle) must be in the union of both agents' records exactly once, with no lost or
//! unrecorded kill; `oomtrace uninstall` then removes the pins. And the reconciler does report
//! a kill the kernel counted that was never delivered, in the cgroup it happened in. The VM
//! matrix's `restart` step runs them on cgroup v2 (`memory.events.local`) with kprobe links.
mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    agent::{AgentProcess, PinDir},
    killed_by, start_hog,
};
use oomtrace::{
    capture::probes::AttachMode,
    cgroup::MemoryHierarchy,
    reconcile::{Gap, Reconciler},
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The agents' --reconcile-interval, in seconds.
const RECONCILE_S: u64 = 1;

/// A running agent, stderr to a file; killed on drop if still running.
struct Agent(AgentProcess);

impl std::ops::Deref for Agent {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut AgentProcess {
        &mut self.0
    }
}

impl Agent {
    fn start(pins: &Path, out: &Path) -> Agent {
        Self::start_with(pins, out, &[])
    }

    fn start_with(pins: &Path, out: &Path, extra: &[&str]) -> Agent {
        let log = out.with_extension("log");
        let (out, pins) = (out.to_str().expect("UTF-8"), pins.to_str().expect("UTF-8"));
        let interval = RECONCILE_S.to_string();
        let mut args = vec!["--no-stdout", "--no-pressure", "--sigkill", "none"];
        args.extend(["--output-file", out, "--pin-dir", pins]);
        args.extend(["--reconcile-interval", &interval]);
        args.extend(extra);
        Agent(AgentProcess::start(&args, Stdio::null(), Some(&log)))
    }

    /// The lost and unrecorded counters, once two reconcile rounds have passed since now
    /// (a reading is judged one round after it is taken).
    fn loss_counters(&self) -> (u64, u64, u64) {
        std::thread::sleep(Duration::from_secs(3 * RECONCILE_S) + Duration::from_millis(500));
        let m = self.get("/metrics").1;
        (
            sample(&m, "oomtrace_events_lost_total "),
            sample(
                &m,
                "oomtrace_kernel_failures_total{reason=\"kill_ringbuf_reserve\"} ",
            ),
            sample(&m, "oomtrace_oom_kills_unrecorded_total "),
        )
    }
}

fn sample(metrics: &str, series: &str) -> u64 {
    common::agent::metric(metrics, series.trim_end())
        .unwrap_or_else(|| panic!("no {series:?} in /metrics:\n{metrics}"))
}

/// The `oom_kill` records of one output file.
fn kills(path: &Path) -> Vec<Value> {
    let test = common::test_name();
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            common::parse_json_line(l, &test)
                .unwrap_or_else(|e| panic!("a whole JSON line: {e}: {l}"))
        })
        .filter(|r| r["event"] == "oom_kill")
        .collect()
}

/// How many records of `pid` the files hold together.
fn count(files: &[&Path], pid: u32) -> usize {
    files
        .iter()
        .flat_map(|f| kills(f))
        .filter(|r| r["victim"]["pid"] == pid)
        .count()
}

fn wait_records(files: &[&Path], pids: &[u32]) {
    let deadline = Instant::now() + WAIT;
    while pids.iter().any(|&p| count(files, p) == 0) {
        assert!(
            Instant::now() < deadline,
            "records for every one of {pids:?} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts hogs in `cg` one after another and returns the pids the kernel SIGKILLed.
fn oom_kill(cg: &MemoryCgroup, n: usize, comm: &str) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let mut hog = start_hog(cg, &["--comm", comm], &SpawnOptions::default(), false);
            let pid = hog.id();
            assert_eq!(killed_by(&mut hog, WAIT), Some(9), "hog {pid} OOM-killed");
            pid
        })
        .collect()
}

#[test]
fn a_restart_loses_and_doubles_no_kill() {
    require_host!();
    let pins = PinDir::new("restart");
    let tmp = std::env::temp_dir().join(format!("oomtrace-test-restart-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let (out1, out2) = (tmp.join("first.jsonl"), tmp.join("second.jsonl"));
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let cg = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-restart-{}", std::process::id()),
        Some(32 << 20),
    )
    .expect("cgroup");

    // 1. The first agent pins what it loads, and records two kills.
    let mut first = Agent::start(&pins.0, &out1);
    assert!(
        first.log_text().contains("pinned the programs and maps at"),
        "first agent pins: {}",
        first.log_text()
    );
    let before = oom_kill(&cg, 2, "oomt-before");
    wait_records(&[&out1], &before);
    let (lost, reserve, unrecorded) = first.loss_counters();
    assert_eq!((lost, reserve, unrecorded), (0, 0, 0), "first agent's loss");
    assert!(first.terminate().success(), "first agent exits cleanly");
    assert!(pins.0.is_dir(), "SIGTERM leaves the pins in place");

    // 2. Kills while no agent runs: the pinned programs queue them in the pinned ring.
    let between = oom_kill(&cg, 3, "oomt-between");

    // 3. The second agent adopts the pins, writes what was queued, and records one more.
    let mut second = Agent::start(&pins.0, &out2);
    assert!(
        second
            .log_text()
            .contains("adopting the programs pinned at"),
        "second agent adopts: {}",
        second.log_text()
    );
    wait_records(&[&out2], &between);
    let after = oom_kill(&cg, 1, "oomt-after");
    wait_records(&[&out2], &after);
    let (lost, reserve, unrecorded) = second.loss_counters();
    assert_eq!(
        (lost, reserve, unrecorded),
        (0, 0, 0),
        "second agent's loss (queued kills are not gaps): {}",
        second.log_text()
    );
    assert!(second.terminate().success(), "second agent exits cleanly");

    // Every kill exactly once in the union; the queued ones only from the second agent.
    let files = [out1.as_path(), out2.as_path()];
    for pid in before.iter().chain(&between).chain(&after) {
        assert_eq!(
            count(&files, *pid),
            1,
            "records of pid {pid} in both outputs"
        );
    }
    for pid in &between {
        assert_eq!(
            count(&[&out2], *pid),
            1,
            "queued kill {pid} from the second agent"
        );
    }

    // 4. uninstall detaches and removes the pin directory.
    let st = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .arg("uninstall")
        .arg("--pin-dir")
        .arg(&pins.0)
        .output()
        .expect("uninstall runs");
    assert!(st.status.success(), "uninstall: {st:?}");
    assert!(!pins.0.exists(), "uninstall removes {}", pins.0.display());
    drop(cg);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The pinned states (fingerprint directories) in a pin directory.
fn states(pins: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pins)
        .expect("pin dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn perf_event_links_pin_and_another_build_drains_them() {
    require_host!();
    let pins = PinDir::new("upgrade");
    let tmp = std::env::temp_dir().join(format!("oomtrace-test-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let (out1, out2) = (tmp.join("first.jsonl"), tmp.join("second.jsonl"));
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let cg = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-upgrade-{}", std::process::id()),
        Some(32 << 20),
    )
    .expect("cgroup");

    // A classic tracepoint's or a kprobe's link (a perf event link, 5.15+) pins like a BTF
    // hook's. The VM matrix runs this with OOMTRACE_TEST_ATTACH=kprobe (no kprobes here).
    let (mode, victim_link) = match common::attach_mode() {
        AttachMode::Kprobe => ("kprobe", "link@victim@kprobe:mark_oom_victim@"),
        _ => ("tracepoint", "link@victim@tracepoint:oom:mark_victim@"),
    };
    let mut first = Agent::start_with(&pins.0, &out1, &["--attach", mode]);
    let old = states(&pins.0);
    assert_eq!(
        old.len(),
        1,
        "one pinned state: {old:?}: {}",
        first.log_text()
    );
    let links = states(&pins.0.join(&old[0]));
    assert!(
        links.iter().any(|l| l.starts_with(victim_link)),
        "the {mode} link is pinned: {links:?}"
    );
    assert!(first.terminate().success());

    // Kills while no agent runs, then an agent with other settings (another fingerprint, as
    // after an upgrade): it drains the old rings first, then replaces the old pins.
    let queued = oom_kill(&cg, 2, "oomt-queued");
    let mut second = Agent::start(&pins.0, &out2);
    wait_records(&[&out2], &queued);
    let log = second.log_text();
    assert!(
        log.contains("is from another oomtrace object or settings"),
        "the log says why it reloads: {log}"
    );
    let new = states(&pins.0);
    assert_eq!(new.len(), 1, "only the new state is left: {new:?}");
    assert_ne!(new, old, "a new fingerprint");
    let after = oom_kill(&cg, 1, "oomt-upgraded");
    wait_records(&[&out2], &after);
    let (lost, reserve, unrecorded) = second.loss_counters();
    assert_eq!(
        (lost, reserve, unrecorded),
        (0, 0, 0),
        "loss: {}",
        second.log_text()
    );
    assert!(second.terminate().success());
    for pid in queued.iter().chain(&after) {
        assert_eq!(count(&[&out1, &out2], *pid), 1, "records of pid {pid}");
    }
    drop(cg);
    drop(pins);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn two_agents_cannot_share_a_pin_dir() {
    require_host!();
    let pins = PinDir::new("lock");
    let tmp = std::env::temp_dir().join(format!("oomtrace-test-lock-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let mut first = Agent::start(&pins.0, &tmp.join("first.jsonl"));
    let second = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .args([
            "agent",
            "--no-stdout",
            "--listen",
            "127.0.0.1:0",
            "--pin-dir",
        ])
        .arg(&pins.0)
        .output()
        .expect("second agent runs");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "second agent fails: {err}");
    assert!(
        err.contains(&format!(
            "another oomtrace agent holds the pin directory {}",
            pins.0.display()
        )),
        "one clear line: {err}"
    );
    let uninstall = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .arg("uninstall")
        .arg("--pin-dir")
        .arg(&pins.0)
        .output()
        .expect("uninstall runs");
    assert_eq!(
        uninstall.status.code(),
        Some(1),
        "uninstall refuses while it runs"
    );
    assert!(first.terminate().success());
    drop(pins);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_undelivered_kill_is_reported_in_its_cgroup() {
    require_host!();
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let name = format!("oomtrace-test-gap-{}", std::process::id());
    let cg = MemoryCgroup::create(&h, &name, Some(32 << 20)).expect("cgroup");
    let mut r = Reconciler::start(Path::new("/proc")).expect("baseline");
    // Nothing delivers records here: every kill the kernel counts from now on is a gap.
    let pid = oom_kill(&cg, 1, "oomt-gap")[0];
    // The first reading after the kill is judged at the next one.
    let mut gaps: Vec<Gap> = r.tick().expect("tick");
    std::thread::sleep(Duration::from_millis(100));
    gaps.extend(r.tick().expect("tick"));
    let ours: Vec<&Gap> = gaps
        .iter()
        .filter(|g| g.cgroup.as_deref() == Some(format!("/{name}").as_str()))
        .collect();
    assert_eq!(
        ours,
        vec![&Gap {
            cgroup: Some(format!("/{name}")),
            missing: 1
        }],
        "the kill of pid {pid} is reported in its cgroup: {gaps:?}"
    );
    // Other kills on the node (other tests) can only add to the total.
    assert!(r.unrecorded_total() >= 1);
    drop(cg);
}

#[test]
fn uninstall_says_what_there_was() {
    require_host!();
    let uninstall = |dir: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
            .arg("uninstall")
            .arg("--pin-dir")
            .arg(dir)
            .output()
            .expect("uninstall runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let none = PinDir::new("none");
    let (code, out, _) = uninstall(&none.0);
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("nothing pinned at {}\n", none.0.display()));
    let tmp = std::env::temp_dir();
    let (code, _, err) = uninstall(&tmp);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!(
            "oomtrace: {} is not on a bpf filesystem: mount one with `mount -t bpf bpf {}`\n",
            tmp.display(),
            tmp.display()
        )
    );
}
