//! `victim.process` from real kills: `tail -o json` in its own process records who each victim
//! was, taken while it lived. Checked against what the test started (argv, environment) and
//! what `/proc` said of the process while the test held it.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::Reaped;

use oomtrace::{
    cgroup::MemoryHierarchy,
    testing::sandbox::{wait_or_kill, MemoryCgroup, SpawnOptions},
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn oomtrace_exe() -> &'static str {
    env!("CARGO_BIN_EXE_oomtrace")
}

/// `oomtrace tail -o json` for the kills in `cg`, once it has attached and read the processes
/// that already run; its `oom_kill` records arrive on the receiver.
fn tail(cg: &MemoryCgroup, count: usize) -> (Reaped, mpsc::Receiver<Value>) {
    common::tail_kills(cg.path(), count, &["--no-pressure"])
}

fn cgroup(test: &str) -> MemoryCgroup {
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    let name = format!("oomtrace-test-{test}-{}", std::process::id());
    MemoryCgroup::create(&h, &name, Some(32 << 20)).expect("cgroup")
}

/// `oomtrace hog ARGS` with exactly the environment `env` (nothing inherited).
fn hog(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(oomtrace_exe());
    cmd.arg("hog")
        .args(args)
        .env_clear()
        .envs(env.iter().copied());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// What `/proc` says of a live process the test started: its argv and executable.
fn proc_identity(pid: u32) -> (Vec<String>, u64, String) {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline of our child");
    let args = raw
        .strip_suffix(&[0])
        .unwrap_or(&raw)
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe of our child");
    (args, raw.len() as u64, exe.to_string_lossy().into_owned())
}

fn redacted(args: &[String]) -> Vec<String> {
    let mut out = args.to_vec();
    for i in 0..out.len() {
        match out[i].as_str() {
            "--password" => out[i + 1] = "***".into(),
            a if a.starts_with("--api-key=") => out[i] = "--api-key=***".into(),
            _ => {}
        }
    }
    out
}

/// The record of victim `pid`.
fn record_of(rx: &mpsc::Receiver<Value>, pid: u32) -> Value {
    let v = rx.recv_timeout(WAIT).expect("a kill record");
    assert_eq!(v["victim"]["pid"], pid, "{v}");
    v
}

const ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/bin:/bin"),
    (
        "NODE_OPTIONS",
        "--max-old-space-size=4096 --max-semi-space-size=16",
    ),
    ("SECRET_X", "do-not-keep-this"),
    (
        "JAVA_TOOL_OPTIONS",
        "-Xmx1g -Djavax.net.ssl.keyStorePassword=changeit",
    ),
];

/// Started after oomtrace attached: read at its exec, redacted, only allowlisted variables.
#[test]
fn victim_started_after_attach_is_read_at_its_exec() {
    require_host!();
    let cg = cgroup("proc-exec");
    let (mut tail, rx) = tail(&cg, 1);
    common::wait_for_oom_report_budget();
    let mut child = cg
        .spawn(
            hog(
                &[
                    "--step-ms",
                    "10",
                    "--comm",
                    "oomt-exec",
                    "--",
                    "--password",
                    "hunter2",
                    "--api-key=abc123",
                ],
                ENV,
            ),
            &SpawnOptions::default(),
        )
        .expect("hog starts");
    let pid = child.id();
    let (argv, cmdline_len, exe) = proc_identity(pid);
    assert_eq!(argv[0], oomtrace_exe(), "argv[0] is the path given");
    assert_eq!(common::killed_by(&mut child, WAIT), Some(9));

    let v = record_of(&rx, pid);
    let p = &v["victim"]["process"];
    let args = redacted(&argv);
    assert_eq!(args[args.len() - 2..], ["***", "--api-key=***"]);
    assert_eq!(
        *p,
        json!({
            "executable": exe,
            "command_line": args.join(" "),
            "args": args,
            "command_line_bytes": cmdline_len,
            "command_line_truncated": false,
            "env": {
                "JAVA_TOOL_OPTIONS": "-Xmx1g -Djavax.net.ssl.keyStorePassword=***",
                "NODE_OPTIONS": "--max-old-space-size=4096 --max-semi-space-size=16",
            },
            "container_init": false,
            "source": "exec",
        }),
        "{v}"
    );
    let argv_bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    assert_eq!(cmdline_len, argv_bytes as u64);
    let line = v.to_string();
    for secret in [
        "hunter2",
        "abc123",
        "do-not-keep-this",
        "changeit",
        "SECRET_X",
    ] {
        assert!(!line.contains(secret), "{secret} leaked: {line}");
    }
    let status = wait_or_kill(&mut tail.0, WAIT).expect("wait");
    assert!(status.success(), "tail exits 0 after --count 1: {status}");
}

/// Started before oomtrace: read by the start-up scan. It idles at 24 MiB and a small
/// allocator started later in its 32 MiB cgroup makes the kernel kill it, the biggest.
#[test]
fn victim_started_before_attach_is_read_at_start_up() {
    require_host!();
    let cg = cgroup("proc-seed");
    let mut idle = cg
        .spawn(
            hog(
                &[
                    "--anon-mb",
                    "24",
                    "--comm",
                    "oomt-seeded",
                    "--",
                    "--password",
                    "x1",
                ],
                ENV,
            ),
            &SpawnOptions::default(),
        )
        .expect("hog starts");
    let out = idle.stdout.take().expect("stdout");
    common::read_until(out, "ready", "the idle hog");
    let pid = idle.id();
    let (argv, cmdline_len, exe) = proc_identity(pid);

    let (mut tail, rx) = tail(&cg, 1);
    common::wait_for_oom_report_budget();
    let mut allocator = Reaped(
        cg.spawn(
            hog(&["--anon-mb", "12", "--comm", "oomt-alloc"], ENV),
            &SpawnOptions::default(),
        )
        .expect("allocator starts"),
    );
    assert_eq!(common::killed_by(&mut idle, WAIT), Some(9));
    let v = record_of(&rx, pid);
    let p = &v["victim"]["process"];
    assert_eq!(p["source"], "seed", "{v}");
    assert_eq!(p["args"], json!(redacted(&argv)));
    assert_eq!(p["executable"], exe);
    assert_eq!(p["command_line_bytes"], cmdline_len);
    assert_eq!(p["container_init"], false);
    assert_eq!(
        p["env"]["NODE_OPTIONS"],
        "--max-old-space-size=4096 --max-semi-space-size=16"
    );
    assert_eq!(
        v["trigger"]["pid"],
        allocator.0.id(),
        "the allocator triggered"
    );
    let status = wait_or_kill(&mut tail.0, WAIT).expect("wait");
    assert!(status.success(), "{status}");
    let _ = allocator.0.kill();
}

/// Starts `hog --fork` (with `pre` run in the parent before its exec) and returns the parent
/// and the pid of the child it forked, which allocates until killed.
fn forking_hog(
    cg: &MemoryCgroup,
    comm: &str,
    pre: Option<fn() -> std::io::Result<()>>,
) -> (Reaped, u32) {
    let mut cmd = hog(
        &[
            "--fork",
            "--step-ms",
            "10",
            "--comm",
            comm,
            "--",
            "--api-key=abc123",
        ],
        ENV,
    );
    if let Some(pre) = pre {
        // SAFETY: `pre` makes one raw syscall, no allocation or locking.
        unsafe { cmd.pre_exec(pre) };
    }
    let mut parent = cg.spawn(cmd, &SpawnOptions::default()).expect("hog starts");
    let out = parent.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let child: u32 = first
        .strip_prefix("child ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("`child PID` from the forking hog, got {first:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    (Reaped(parent), child)
}

/// A child forked without exec: its own command line is gone once it is killed (it is held
/// as a zombie), so it has its parent's identity, or its own read while still there — the
/// same argv either way.
#[test]
fn forked_child_victim_has_its_parents_command_line() {
    require_host!();
    let cg = cgroup("proc-fork");
    let (mut tail, rx) = tail(&cg, 1);
    common::wait_for_oom_report_budget();
    let (mut parent, child) = forking_hog(&cg, "oomt-fork", None);
    let (argv, cmdline_len, exe) = proc_identity(parent.0.id());
    let v = record_of(&rx, child);
    let p = &v["victim"]["process"];
    let source = p["source"].as_str().unwrap_or_default();
    eprintln!("forked child's identity came from: {source}");
    assert!(
        ["parent", "kill", "scan"].contains(&source),
        "a forked child's identity is its parent's argv: {v}"
    );
    assert_eq!(p["args"], json!(redacted(&argv)));
    assert_eq!(p["command_line_bytes"], cmdline_len);
    assert_eq!(p["container_init"], false);
    // Read at the kill, the exe link may already be gone (it goes with the memory).
    assert!(
        p["executable"] == exe || (source == "kill" && p.get("executable").is_none()),
        "the parent's exe, which is the child's: {v}"
    );
    // The parent held the child as a zombie until now: it reaps it and says how it ended.
    let stdin = parent.0.stdin.as_mut().expect("stdin");
    stdin.write_all(b"\n").expect("release the child");
    let status = wait_or_kill(&mut parent.0, WAIT).expect("parent exits");
    assert!(status.success(), "{status}");
    let status = wait_or_kill(&mut tail.0, WAIT).expect("wait");
    assert!(status.success(), "{status}");
}

/// The first child forked after `unshare(CLONE_NEWPID)` is PID 1 of a new PID namespace, as a
/// container's init is: `container_init` is true for it, whose parent's is false.
#[test]
fn init_of_a_pid_namespace_is_a_container_init() {
    require_host!();
    let cg = cgroup("proc-init");
    let (mut tail, rx) = tail(&cg, 1);
    common::wait_for_oom_report_budget();
    fn new_pid_namespace() -> std::io::Result<()> {
        // SAFETY: unshare takes flags only.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    let (mut parent, child) = forking_hog(&cg, "oomt-init", Some(new_pid_namespace));
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).expect("status");
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid");
    assert_eq!(
        nspid.split_whitespace().collect::<Vec<_>>(),
        [child.to_string().as_str(), "1"]
    );
    let v = record_of(&rx, child);
    assert_eq!(v["victim"]["process"]["container_init"], true, "{v}");
    let stdin = parent.0.stdin.as_mut().expect("stdin");
    stdin.write_all(b"\n").expect("release the child");
    let status = wait_or_kill(&mut parent.0, WAIT).expect("parent exits");
    assert!(status.success(), "{status}");
    let status = wait_or_kill(&mut tail.0, WAIT).expect("wait");
    assert!(status.success(), "{status}");
}

/// A bad `--redact-args` is a usage error of one line.
#[test]
fn bad_redact_regex_is_a_usage_error() {
    let out = Command::new(oomtrace_exe())
        .args(["tail", "--redact-args", "(unclosed"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "error: invalid value '(unclosed' for '--redact-args <REGEX>': not a valid regular \
         expression: unclosed group",
        "{err}"
    );
}
