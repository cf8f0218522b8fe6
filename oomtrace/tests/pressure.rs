//! Memory pressure as a user sees it through `oomtrace tail -o json`: a near-limit record for a
//! cgroup held just under its limit (and no kill), and the timelines of a slow leak and of a
//! sudden spike, each ending in a real kill, told apart by their numbers.
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{killed_by, start_hog};
use oomtrace::{
    cgroup::memory::MemoryFiles,
    cgroup::MemoryHierarchy,
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The tests of this binary take turns: each reads one `tail` of its own.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// `oomtrace tail -o json` with its JSON lines on a channel; killed and reaped on drop.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Tail {
    /// `tail -o json` with the default flags, or `extra`.
    fn start() -> Tail {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
            .args(["tail", "-o", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("oomtrace starts");
        let stderr = child.stderr.take().expect("stderr");
        let rest = common::read_until(stderr, "info: pressure sources:", "oomtrace tail");
        std::thread::spawn(move || rest.for_each(drop));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let test = common::test_name();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = common::parse_json_line(&line, &test)
                    .unwrap_or_else(|e| panic!("one JSON object per line: {e}: {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines: rx }
    }

    /// The first record `pred` accepts within `timeout`; every record is kept in `seen`.
    fn wait_for(
        &self,
        seen: &mut Vec<Value>,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = seen.iter().find(|v| pred(v)) {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => seen.push(v),
                Err(_) => panic!("no {what} within {timeout:?}; records seen: {seen:#?}"),
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hierarchy() -> MemoryHierarchy {
    MemoryHierarchy::detect().expect("memory hierarchy")
}

fn cgroup(test: &str, limit: u64) -> MemoryCgroup {
    let name = format!("oomtrace-pressure-{test}-{}", std::process::id());
    MemoryCgroup::create(&hierarchy(), &name, Some(limit)).expect("cgroup")
}

/// The near-limit sources this kernel may use: the kernel where the memcg stat tracepoints
/// exist (6.13+) and are attached (adaptive: once a working set passes 0.75 of its limit, so the
/// 1 s samples may see 0.9 first), the cgroup-file samples everywhere.
fn expected_sources() -> &'static [&'static str] {
    let tracefs = oomtrace::capture::tracefs::root().expect("tracefs");
    if tracefs.join("events/memcg/mod_memcg_lruvec_state").exists() {
        &["kernel_stat", "cgroup_files"]
    } else {
        &["cgroup_files"]
    }
}

fn is_for(v: &Value, event: &str, id: u64) -> bool {
    v["event"] == event && (v["cgroup"]["id"] == id || v["oom"]["memcg"]["id"] == id)
}

/// Lets the monitor pick up a freshly made cgroup (inotify, at the next 1 s tick) before it is
/// used.
fn let_monitor_see_it() {
    std::thread::sleep(Duration::from_millis(2500));
}

#[test]
fn near_limit_record_and_no_kill() {
    require_host!();
    let _turn = take_turn();
    let tail = Tail::start();
    let limit = 64 * MIB;
    let cg = cgroup("near", limit);
    let id = cg.id().expect("cgroup id");
    let_monitor_see_it();
    // Slowly (40 ms per MiB) to about 94% of the limit with the hog's own few MiB, then hold.
    let mut hog = start_hog(
        &cg,
        &["--anon-mb", "58", "--step-ms", "40"],
        &SpawnOptions::default(),
        true,
    );
    let files = MemoryFiles::new(cg.dir(), hierarchy().version);
    let held = files.usage_bytes().expect("usage");
    let ratio = held as f64 / limit as f64;
    assert!(
        (0.905..0.99).contains(&ratio),
        "setup: the hog should hold the cgroup at ~94% of its limit, holds {ratio:.3}"
    );
    let mut seen = Vec::new();
    let rec = tail.wait_for(
        &mut seen,
        "memory_pressure record",
        Duration::from_secs(10),
        |v| is_for(v, "memory_pressure", id),
    );
    assert_eq!(rec["limit_bytes"], limit, "{rec}");
    assert_eq!(rec["cgroup"]["path"], cg.path(), "{rec}");
    let source = rec["source"].as_str().expect("source");
    assert!(expected_sources().contains(&source), "{rec}");
    assert_eq!(rec["threshold"], 0.9, "{rec}");
    let usage = rec["usage_bytes"].as_u64().expect("usage_bytes");
    // Seen when usage crossed 90% (kernel) or while held (files): never above what is held now
    // (plus a page-counter batch), never under the threshold.
    assert!(
        usage * 10 >= limit * 9,
        "usage {usage} under 90% of {limit}"
    );
    assert!(usage <= held + MIB, "usage {usage} above the {held} held");
    let want_ratio = (usage as f64 / limit as f64 * 10_000.0).round() / 10_000.0;
    assert_eq!(rec["ratio"].as_f64(), Some(want_ratio), "{rec}");
    // Judged by the working set: anonymous memory, nearly all of the usage.
    let ws = rec["working_set_bytes"]
        .as_u64()
        .expect("working_set_bytes");
    let inactive_now = files
        .stat()
        .ok()
        .and_then(|s| s.inactive_file)
        .expect("inactive_file");
    assert!(
        ws <= usage && ws * 10 >= limit * 9 && usage - ws <= inactive_now + MIB,
        "working set {ws} of usage {usage}, inactive file now {inactive_now}: {rec}"
    );
    let want_ws_ratio = (ws as f64 / limit as f64 * 10_000.0).round() / 10_000.0;
    assert_eq!(rec["working_set_ratio"].as_f64(), Some(want_ws_ratio));
    if rec["source"] == "kernel_stat" {
        assert_eq!(
            rec["task"]["pid"],
            hog.id(),
            "the charging task is the hog: {rec}"
        );
    }
    // Held for a few seconds more: still alive, no kill, and one record only (rate limit).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        hog.try_wait().expect("try_wait").is_none(),
        "the hog was killed"
    );
    while let Ok(v) = tail.lines.try_recv() {
        seen.push(v);
    }
    assert!(
        !seen.iter().any(|v| is_for(v, "oom_kill", id)),
        "no kill expected: {seen:#?}"
    );
    let records = seen
        .iter()
        .filter(|v| is_for(v, "memory_pressure", id))
        .count();
    assert_eq!(records, 1, "rate-limited to one per 30 s: {seen:#?}");
    let _ = hog.kill();
    let _ = hog.wait();
}

/// Usage of each timeline point before the kill point, and the kill point's.
fn usages(kill: &Value) -> (Vec<u64>, u64) {
    let timeline = kill["pressure"]["timeline"]
        .as_array()
        .unwrap_or_else(|| panic!("a pressure timeline: {kill}"));
    let (last, before) = timeline.split_last().expect("at least the kill point");
    assert_eq!(last["offset_ms"], 0, "the kill point ends the timeline");
    let before: Vec<u64> = before
        .iter()
        .map(|s| s["usage_bytes"].as_u64().expect("usage"))
        .collect();
    (before, last["usage_bytes"].as_u64().expect("usage"))
}

fn steps(points: &[u64], end: u64) -> Vec<i64> {
    let mut all = points.to_vec();
    all.push(end);
    all.windows(2).map(|w| w[1] as i64 - w[0] as i64).collect()
}

/// The kernel reclaims (and fails) before every memcg OOM kill: the section counts it, and the
/// kill point holds the passes since the last sample.
fn assert_reclaimed_before(kill: &Value) {
    let reclaims = kill["pressure"]["reclaim"]["count"].as_u64();
    assert!(
        reclaims.is_some_and(|n| n >= 1),
        "reclaim before the kill: {kill}"
    );
    let last = kill["pressure"]["timeline"]
        .as_array()
        .and_then(|t| t.last());
    assert!(
        last.and_then(|p| p["reclaims"].as_u64())
            .is_some_and(|n| n >= 1),
        "reclaim since the last sample, at the kill point: {kill}"
    );
}

fn kill_in(tail: &Tail, seen: &mut Vec<Value>, cg: &MemoryCgroup, args: &[&str]) -> Value {
    let id = cg.id().expect("cgroup id");
    let mut hog = start_hog(cg, args, &SpawnOptions::default(), false);
    assert_eq!(killed_by(&mut hog, Duration::from_secs(60)), Some(9));
    tail.wait_for(seen, "oom_kill record", Duration::from_secs(10), |v| {
        is_for(v, "oom_kill", id)
    })
}

#[test]
fn slow_leak_and_sudden_spike_have_different_timelines() {
    require_host!();
    let _turn = take_turn();
    // The stat hooks from start: a spike reaches the limit within a second, before adaptive
    // hooks could attach, and this test reads its charges (tests/stat_hooks.rs covers the
    // adaptive kill point).
    let tail = Tail::start_with(&["--stat-hooks", "always"]);
    let limit = 48 * MIB;
    let mut seen = Vec::new();

    // A leak: 1 MiB every 200 ms (5 MiB/s) until killed, about 9 s.
    let leak_cg = cgroup("leak", limit);
    let_monitor_see_it();
    let leak = kill_in(&tail, &mut seen, &leak_cg, &["--step-ms", "200"]);
    let (points, end) = usages(&leak);
    let leak_steps = steps(&points, end);
    let rising = leak_steps.iter().filter(|d| **d > 0).count();
    assert!(
        rising >= 6,
        "a leak rises a little every second: {leak_steps:?}"
    );
    let biggest = leak_steps.iter().copied().max().unwrap_or(0);
    assert!(
        biggest < (limit / 4) as i64,
        "no step of a leak is a quarter of the limit: {leak_steps:?}"
    );
    let growth = leak["pressure"]["growth_bytes_per_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("a growth rate: {leak}"));
    assert!(
        (2.0 * MIB as f64..8.0 * MIB as f64).contains(&growth),
        "the leak grows about 5 MiB/s: {growth}"
    );
    assert_eq!(leak["pressure"]["limit_bytes"], limit);
    assert_reclaimed_before(&leak);

    // A spike: sits small for 4 s, then allocates everything at once.
    let spike_cg = cgroup("spike", limit);
    let_monitor_see_it();
    let spike = kill_in(&tail, &mut seen, &spike_cg, &["--delay-ms", "4000"]);
    let (points, end) = usages(&spike);
    let spike_steps = steps(&points, end);
    let small = points.iter().filter(|u| **u < limit / 4).count();
    assert!(small >= 3, "a spike sits small first: {points:?}");
    let jump = spike_steps.iter().copied().max().unwrap_or(0);
    assert!(
        jump >= (limit * 6 / 10) as i64,
        "a spike jumps most of the limit in one step: {spike_steps:?}"
    );
    // The rise starts at the last sample that sat small: the hog's own start-up before it
    // (its binary's pages, charged here when the root filesystem is tmpfs as in the VMs: more
    // than 1 MiB since the binary carries the Kubernetes client) is not the spike.
    let rise_from = points.iter().rposition(|u| *u < limit / 4).unwrap_or(0);
    let rising = spike_steps[rise_from..]
        .iter()
        .filter(|d| **d >= MIB as i64)
        .count();
    assert!(
        rising <= 2,
        "a spike rises in one or two steps after sitting small: {spike_steps:?}"
    );
    assert_reclaimed_before(&spike);
    let spike_last = &spike["pressure"]["timeline"][spike_steps.len()];
    if expected_sources().contains(&"kernel_stat") {
        // The charges since the last sample are mostly the spike's anonymous memory.
        let anon = spike_last["charged"]["anon_bytes"].as_i64().unwrap_or(0);
        assert!(
            anon >= (limit / 2) as i64,
            "anon charged in the spike: {spike_last}"
        );
    }
    // The leak's growth is spread, the spike's concentrated: its biggest step is larger.
    assert!(
        jump > biggest * 2,
        "leak {leak_steps:?} vs spike {spike_steps:?}"
    );

    assert_verdicts(&leak, &spike, limit);
}

/// The verdict names each shape with its numbers, from the same timeline the test checked;
/// `oomtrace explain` prints both from the saved records.
fn assert_verdicts(leak: &Value, spike: &Value, limit: u64) {
    let top = &leak["diagnosis"][0];
    assert_eq!(top["code"], "leak", "{leak}");
    let ev = &top["evidence"];
    assert_eq!(ev["limit_bytes"], limit);
    let rise = ev["time_to_limit_ms"].as_i64().expect("time to limit");
    assert!(rise >= 4000, "a leak rises for seconds: {top}");
    let rate = ev["growth_bytes_per_s"].as_f64().expect("rate") / MIB as f64;
    assert!((3.0..=7.0).contains(&rate), "about 5 MiB/s: {top}");
    assert!(
        ev["from_bytes"].as_u64().is_some_and(|b| b < limit / 2),
        "{top}"
    );
    assert_eq!(
        leak["sizing"]["suggested_limit_bytes"],
        Value::Null,
        "{leak}"
    );
    assert!(
        leak["sizing"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("leak")),
        "{leak}"
    );

    let top = &spike["diagnosis"][0];
    assert_eq!(top["code"], "spike", "{spike}");
    let ev = &top["evidence"];
    let from = ev["from_bytes"].as_u64().expect("from");
    let jump = ev["jump_bytes"].as_u64().expect("jump");
    assert!(from < limit / 2, "it sat below half: {top}");
    assert!(
        jump * 10 >= limit * 4,
        "it jumped at least 40% of the limit: {top}"
    );
    assert!(
        ev["small_ms"].as_i64().is_some_and(|ms| ms >= 2000),
        "{top}"
    );
    let (points, end) = usages(spike);
    let mut all = points;
    all.push(end);
    assert!(
        all.windows(2).any(|w| w[0] == from && w[1] - w[0] == jump),
        "the jump is one step of the timeline: {all:?} {top}"
    );
    let needed = spike["sizing"]["needed_bytes"].as_u64().expect("needed");
    assert_eq!(
        needed,
        spike["oom"]["memcg"]["usage_bytes"]
            .as_u64()
            .expect("usage")
            + spike["sizing"]["failed_charge_bytes"].as_u64().unwrap_or(0)
    );
    assert!(
        spike["sizing"]["suggested_limit_bytes"]
            .as_u64()
            .is_some_and(|s| s >= needed),
        "{spike}"
    );

    // `explain` reads the saved records back.
    let dir = std::env::temp_dir().join(format!("oomtrace-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("kills.jsonl");
    std::fs::write(&file, format!("{leak}\nnot a record\n{spike}\n")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .arg("explain")
        .arg(&file)
        .output()
        .expect("explain runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("explain:\n{text}");
    let reports: Vec<&str> = text.split("OOM kill at ").skip(1).collect();
    assert_eq!(reports.len(), 2, "{text}");
    assert!(
        reports[0].contains("verdict     [warning] leak: usage rose steadily"),
        "{text}"
    );
    assert!(
        reports[0].contains("no suggested limit: usage grew steadily"),
        "{text}"
    );
    assert!(
        reports[1].contains("verdict     [warning] spike: usage jumped"),
        "{text}"
    );
    assert!(reports[1].contains("suggested limit "), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skipped 1 lines"),
        "{out:?}"
    );
}

#[test]
fn check_names_the_pressure_sources() {
    require_host!();
    let out = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .arg("check")
        .output()
        .expect("check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let want = match std::env::var("OOMTRACE_TEST_EXPECT_PRESSURE") {
        Ok(v) if !v.is_empty() => v.replace(',', ", "),
        _ if expected_sources().contains(&"kernel_stat") => {
            "memcg_stat_tracepoints, reclaim_tracepoints, cgroup_files".to_string()
        }
        _ => "reclaim_tracepoints, cgroup_files".to_string(),
    };
    assert!(
        text.contains(&format!("pressure: sources {want}\n")),
        "{text}"
    );
}
