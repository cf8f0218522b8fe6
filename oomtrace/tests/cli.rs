//! The oomtrace binary as a user runs it: `tail -o json`, `tail --demo`, `check`, and the
//! one-line errors for bad input.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{killed_by, start_hog, Harness};
use oomtrace::{
    capture::probes::AttachMode, testing::kernel_report, testing::sandbox::SpawnOptions, timefmt,
};
use serde_json::Value;

/// Tests in this binary that provoke kills take turns, so that a `tail` started by one sees
/// only its own kills.
static KILLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    KILLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn oomtrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oomtrace"))
}

/// Starts `oomtrace ARGS` and returns once it reports its hooks attached.
/// A child killed and reaped when dropped, so a failing test leaves no oomtrace running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_attached(args: &[&str], stdout: Stdio) -> Reaped {
    let mut child = oomtrace()
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("oomtrace starts");
    let stderr = child.stderr.take().expect("stderr");
    let lines = common::read_until(stderr, "info: attached:", "oomtrace");
    // Keep draining stderr so oomtrace never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Reaped(child)
}

/// Asserts `out` failed with exit status 1 and exactly one stderr line containing each of
/// `needles`.
fn assert_one_line_error(out: &std::process::Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} in {err}");
    }
}

/// Runs oomtrace as uid/gid 65534.
fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(65534).gid(65534)
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = oomtrace()
        .args(["tail", "--no-such-flag"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn not_root_is_one_clear_line() {
    if !oomtrace::capture::tracer::is_root() {
        eprintln!("SKIPPED: dropping to another uid needs root");
        return;
    }
    let exe = common::WorldExecutable::new("nobody");
    let out = common::spawn_retrying_busy(|| {
        as_nobody(&mut Command::new(exe.path()))
            .arg("tail")
            .output()
    })
    .expect("runs");
    assert_one_line_error(&out, &["must run as root", "sudo"]);
}

#[test]
fn missing_and_unreadable_btf_files() {
    require_host!();
    let out = oomtrace()
        .args(["tail", "--btf", "/nonexistent/vmlinux"])
        .output()
        .expect("runs");
    assert_one_line_error(&out, &["/nonexistent/vmlinux", "--btf"]);

    let garbage = std::env::temp_dir().join(format!("oomtrace-garbage-btf-{}", std::process::id()));
    std::fs::write(&garbage, b"this is not BTF").expect("write");
    let out = oomtrace()
        .args(["tail", "--btf"])
        .arg(&garbage)
        .output()
        .expect("runs");
    let _ = std::fs::remove_file(&garbage);
    assert_one_line_error(&out, &[&garbage.to_string_lossy(), "--btf"]);
}

#[test]
fn check_reports_each_probe() {
    require_host!();
    let out = oomtrace().arg("check").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("release");
    assert!(text.contains(release.trim()));
    assert!(text.contains("probe victim"), "{text}");
    assert!(text.contains("probe oom_context"), "{text}");
    // Every failure reason, counted since this check loaded the programs: none yet.
    let failures: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("failures: "))
        .skip(1)
        .collect();
    let names: Vec<&str> = oomtrace_common::Failure::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(
        failures
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        names.iter().map(|n| vec![*n, "0"]).collect::<Vec<_>>(),
        "{text}"
    );
    // Every hook not chosen says why.
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("skipped"))
    {
        assert!(
            line.split_once(": ")
                .is_some_and(|(_, why)| !why.is_empty()),
            "{line}"
        );
    }
}

#[test]
fn forced_tracepoint_path_records_from_the_classic_tracepoint() {
    require_host!();
    let _turn = take_turn();
    let mut h = Harness::start(AttachMode::Tracepoint);
    let cg = h.cgroup("classic", 40);
    let (_, ev, report) = h.kill_hog(&cg, &["--comm", "oomt-classic"], &SpawnOptions::default());
    let k = &report.killed;
    assert_eq!(ev.hooks, ["tracepoint/oom/mark_victim"]);
    assert_eq!(ev.victim.task.comm.as_deref(), Some(k.comm.as_str()));
    assert_eq!(
        ev.victim.anon_rss_bytes.map(|b| b >> 10),
        Some(k.anon_rss_kb)
    );
    assert_eq!(
        ev.victim.total_vm_bytes.map(|b| b >> 10),
        Some(k.total_vm_kb)
    );
    assert_eq!(
        ev.victim.pgtables_bytes.map(|b| b >> 10),
        Some(k.pgtables_kb)
    );
    assert_eq!(ev.victim.uid, Some(k.uid));
    // The tracepoint carries no task: what it cannot know is absent, not 0.
    assert_eq!(ev.victim.task.tgid, None);
    assert_eq!(ev.victim.sigkill_pending, None);
    assert_eq!(
        ev.oom.memcg.as_ref().and_then(|m| m.cgroup.path.as_deref()),
        Some(cg.path())
    );
}

/// `tail -o json` in a separate process: one flushed line per kill, every core key present and
/// equal to the kernel's report; prints the kernel-to-line latency of each.
#[test]
fn tail_json_lines_match_the_kernel_and_arrive_promptly() {
    require_host!();
    let _turn = take_turn();
    const KILLS: usize = 3;
    let count = KILLS.to_string();
    let mut tail = spawn_attached(&["tail", "-o", "json", "--count", &count], Stdio::piped());
    let stdout = tail.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<(Value, u64)>();
    let test = common::test_name();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let now = timefmt::monotonic_now_ns();
            let v = common::parse_json_line(&line, &test).expect("each line is one JSON object");
            if v["event"] != "oom_kill" {
                // Each 32 MiB hog crosses 90% of its limit on its way to the kill.
                assert_eq!(v["event"], "memory_pressure", "{v}");
                continue;
            }
            if tx.send((v, now)).is_err() {
                break;
            }
        }
    });

    let mut kmsg = kernel_report::Kmsg::open_at_end().expect("kmsg");
    let h = oomtrace::cgroup::MemoryHierarchy::detect().expect("hierarchy");
    let mut pids = Vec::new();
    for i in 0..KILLS {
        let name = format!("oomtrace-test-json-{}-{i}", std::process::id());
        let cg = oomtrace::testing::sandbox::MemoryCgroup::create(&h, &name, Some(32 << 20))
            .expect("cg");
        let mut child = start_hog(
            &cg,
            &["--comm", "oomt-json"],
            &SpawnOptions::default(),
            false,
        );
        pids.push(child.id());
        assert_eq!(killed_by(&mut child, Duration::from_secs(30)), Some(9));
    }
    let mut reports = std::collections::HashMap::new();
    while reports.len() < KILLS {
        let found = kmsg
            .wait_for(Duration::from_secs(30), |r| {
                kernel_report::parse_killed_process(&r.message).filter(|k| pids.contains(&k.pid))
            })
            .expect("kmsg")
            .expect("a kernel report for each kill");
        reports.insert(found.pid, found);
    }
    let mut latencies = Vec::new();
    for _ in 0..KILLS {
        let (v, received) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a JSON line per kill");
        let pid = v["victim"]["pid"].as_u64().expect("victim.pid") as u32;
        assert!(
            pids.contains(&pid),
            "record for a pid this test started: {v}"
        );
        let report = &reports[&pid];
        assert_eq!(v["event"], "oom_kill");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["victim"]["comm"], report.comm);
        assert_eq!(v["victim"]["anon_rss_bytes"], report.anon_rss_kb << 10);
        assert_eq!(v["victim"]["file_rss_bytes"], report.file_rss_kb << 10);
        assert_eq!(v["victim"]["shmem_rss_bytes"], report.shmem_rss_kb << 10);
        assert_eq!(v["victim"]["total_vm_bytes"], report.total_vm_kb << 10);
        assert_eq!(v["victim"]["pgtables_bytes"], report.pgtables_kb << 10);
        assert_eq!(v["victim"]["uid"], report.uid);
        assert_eq!(v["victim"]["oom_score_adj"], report.oom_score_adj);
        assert_eq!(v["oom"]["constraint"], "memcg");
        let source = if common::expect_kernel_context() {
            "kernel"
        } else {
            "inferred"
        };
        assert_eq!(v["oom"]["constraint_source"], source);
        assert_eq!(v["action"], "killed");
        if let Some(hooks) = common::expected_hooks() {
            assert_eq!(v["capture"]["hooks"], serde_json::json!(hooks));
        }
        assert_eq!(v["oom"]["memcg"]["limit_bytes"], 32u64 << 20);
        assert_eq!(v["trigger"]["pid"], pid);
        for key in ["time", "ktime_ns", "incident", "host", "capture"] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        let time = v["time"].as_str().expect("time");
        assert!(time.ends_with('Z') && time.len() == 30, "{time}");
        let ktime = v["ktime_ns"].as_u64().expect("ktime_ns");
        latencies.push(received.saturating_sub(ktime) / 1000);
    }
    let status = oomtrace::testing::sandbox::wait_or_kill(&mut tail.0, Duration::from_secs(10))
        .expect("wait");
    assert!(
        status.success(),
        "tail exits 0 after --count records: {status}"
    );
    eprintln!("latency kernel mark_victim → JSON line read (µs): {latencies:?}");
}

/// `tail --demo --count 1` — the README's first command — shows a real kill and exits 0.
#[test]
fn tail_demo_shows_one_real_kill() {
    require_host!();
    let _turn = take_turn();
    let out = oomtrace()
        .args(["tail", "--demo", "--count", "1"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].contains("CONSTRAINT"));
    // The kill's verdict headline follows its row.
    let why = lines.pop().expect("a verdict line");
    assert!(why.starts_with("  why: victim_anon_at_limit: "), "{text}");
    // The kill, after at most one near-limit warning for the demo's cgroup.
    let (kill, warnings) = lines[1..].split_last().expect("a kill row");
    assert!(warnings.len() <= 1, "one warning at most: {text}");
    for w in warnings {
        assert!(
            w.contains(" pressure ") && w.contains("/oomtrace-demo-") && w.contains("/32.0M"),
            "{text}"
        );
    }
    assert!(
        kill.contains("/oomtrace-demo-") && kill.contains("memcg") && kill.contains("killed"),
        "{text}"
    );
    assert!(kill.contains("32.0M"), "the demo cgroup's limit: {text}");
}

/// SIGTERM detaches and exits 0.
#[test]
fn sigterm_exits_zero() {
    require_host!();
    let mut tail = spawn_attached(&["tail", "-o", "json"], Stdio::null());
    // SAFETY: kill on a child we started.
    unsafe { libc::kill(tail.0.id() as i32, libc::SIGTERM) };
    let status = oomtrace::testing::sandbox::wait_or_kill(&mut tail.0, Duration::from_secs(10))
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// `tail -o wide --namespace beta` with a kubelet-style log tree: of two kills in pods of two
/// namespaces, only beta's is printed, with its names and scope.
#[test]
fn tail_filters_by_namespace_and_wide_shows_names() {
    require_host!();
    let _turn = take_turn();
    const UA: &str = "11111111-2222-4333-8444-555555555555";
    const UB: &str = "66666666-7777-4888-9999-aaaaaaaaaaaa";
    const IA: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
    const IB: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    let tree = common::KubeletTree::new("filter");
    tree.add("alpha", "api-0", UA, "app", IA);
    tree.add("beta", "worker-0", UB, "app", IB);
    let dir = tree.0.to_string_lossy().into_owned();
    let mut tail = spawn_attached(
        &[
            "tail",
            "-o",
            "wide",
            "--namespace",
            "beta",
            "--count",
            "1",
            "--color",
            "never",
            "--host-log-dir",
            &dir,
        ],
        Stdio::piped(),
    );
    let stdout = tail.0.stdout.take().expect("stdout");
    let h = oomtrace::cgroup::MemoryHierarchy::detect().expect("hierarchy");
    let mut root = oomtrace::testing::sandbox::MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-filter-{}", std::process::id()),
        None,
    )
    .expect("cgroup");
    let kubepods = root.child(&h, "kubepods.slice", None).expect("kubepods");
    for (uid, id, comm) in [(UA, IA, "oomt-alpha"), (UB, IB, "oomt-beta")] {
        let pod = kubepods
            .child(
                &h,
                &format!("kubepods-pod{}.slice", common::systemd_pod(uid)),
                None,
            )
            .expect("pod");
        let ctr = pod
            .child(&h, &format!("cri-containerd-{id}.scope"), Some(32 << 20))
            .expect("container");
        let mut hog = start_hog(ctr, &["--comm", comm], &SpawnOptions::default(), false);
        assert_eq!(killed_by(&mut hog, Duration::from_secs(30)), Some(9));
    }
    let status = oomtrace::testing::sandbox::wait_or_kill(&mut tail.0, Duration::from_secs(30))
        .expect("wait");
    assert!(
        status.success(),
        "tail exits after its one matching record: {status}"
    );
    let mut out = String::new();
    let mut stdout = stdout;
    std::io::Read::read_to_string(&mut stdout, &mut out).expect("read");
    let mut lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].contains("NAMESPACE/POD/CONTAINER"));
    // The kill's verdict headline follows its row: the hog is not its "container"'s PID 1.
    let why = lines.pop().expect("a verdict line");
    assert!(why.starts_with("  why: not_container_init: "), "{out}");
    // Near-limit warnings pass the same filter (beta's only) and come before its kill.
    let (row, warnings) = lines[1..].split_last().expect("a kill row");
    for w in warnings {
        assert!(
            w.contains(" pressure ") && w.contains("beta/worker-0/app"),
            "{out}"
        );
    }
    let row = *row;
    assert!(row.contains("beta/worker-0/app"), "{row}");
    assert!(
        row.contains("oomt-beta") && row.contains(" container "),
        "{row}"
    );
    assert!(!out.contains("alpha"), "{out}");
    assert!(!row.contains('\x1b'), "no colour with --color never");
}

/// `tail -v` forwards the eBPF programs' warnings: a victim whose cgroup name is longer than
/// the kernel side keeps gets one `ebpf:` warning naming it, and its record the whole path.
#[test]
fn verbose_tail_forwards_ebpf_warnings() {
    require_host!();
    let _turn = take_turn();
    let mut tail = oomtrace()
        .args(["tail", "-v", "-o", "json", "--no-pressure", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oomtrace starts");
    let stderr = tail.stderr.take().expect("stderr");
    let lines = common::read_until(stderr, "info: attached:", "oomtrace tail -v");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("ebpf:") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut tail = Reaped(tail);

    let h = oomtrace::cgroup::MemoryHierarchy::detect().expect("hierarchy");
    let name = format!(
        "oomtrace-test-verbose-{}-{}",
        std::process::id(),
        "v".repeat(160)
    );
    let cg =
        oomtrace::testing::sandbox::MemoryCgroup::create(&h, &name, Some(32 << 20)).expect("cg");
    let mut child = start_hog(
        &cg,
        &["--comm", "oomt-verbose"],
        &SpawnOptions::default(),
        false,
    );
    let pid = child.id();
    assert_eq!(killed_by(&mut child, Duration::from_secs(30)), Some(9));
    let warning = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("an eBPF warning");
    assert_eq!(
        warning,
        format!(
            "oomtrace: warning: ebpf: victim {pid}: cgroup path deeper than 8 levels or with a \
             name of 127+ bytes, sent incomplete: userspace names the cgroup by id"
        )
    );
    let stdout = tail.0.stdout.take().expect("stdout");
    let record: Value = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).expect("a JSON line"))
        .find(|v: &Value| v["event"] == "oom_kill")
        .expect("the kill record");
    assert_eq!(record["victim"]["pid"], pid);
    assert_eq!(record["victim"]["cgroup"]["path"], cg.path());
    let status = oomtrace::testing::sandbox::wait_or_kill(&mut tail.0, Duration::from_secs(10))
        .expect("wait");
    assert!(status.success(), "tail exits 0 after --count 1: {status}");
    assert!(
        rx.try_recv().is_err(),
        "one warning, for this victim's path only"
    );
}

/// With `-v` the programs keep their log calls (the verifier no longer prunes them): they must
/// still load, so every probe chooses the same hook as without it, in each attach mode.
#[test]
fn verbose_loads_the_same_hooks() {
    require_host!();
    let hooks = |args: &[&str]| {
        let out = oomtrace().arg("check").args(args).output().expect("runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let probes: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("probe ") || l.trim_start().starts_with("skipped "))
            .map(String::from)
            .collect();
        assert!(!probes.is_empty(), "{text}");
        // What the verifier made of each program, for the record (-v only).
        for line in String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.ends_with("instructions verified"))
        {
            eprintln!("check {args:?}: {line}");
        }
        (out.status.code(), probes)
    };
    for mode in [
        &[][..],
        &["--attach", "kprobe"][..],
        &["--skip-hook", "tp_btf/mark_victim"][..],
    ] {
        let verbose: Vec<&str> = ["-v"].iter().chain(mode).copied().collect();
        assert_eq!(
            hooks(&verbose),
            hooks(mode),
            "check {mode:?} with and without -v"
        );
    }
}
