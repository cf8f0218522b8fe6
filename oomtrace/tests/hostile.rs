//! Hostile names through the real binary: a process the test starts names itself with an
//! escape sequence and a newline, inside a memory cgroup whose name holds control and bidi
//! characters, and is OOM-killed. `tail`'s table shows the kill as exactly one row with every
//! such byte escaped; `tail -o json` gives the exact bytes back; and the kill is not lost.
mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use common::{killed_by, Reaped};
use oomtrace::{
    cgroup::MemoryHierarchy,
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};

const WAIT: Duration = Duration::from_secs(30);

/// What the victim calls itself (prctl PR_SET_NAME: 15 bytes at most): a "reverse video"
/// escape sequence and a newline.
const COMM: &str = "x\x1b[7mE\nrow";

/// What the kernel allows in a cgroup name that a terminal should never get raw (it refuses a
/// newline: cgroup_mkdir returns EINVAL): ESC and a "clear screen" sequence, a carriage return,
/// a tab, DEL, a C1 control (NEL) and a right-to-left override.
fn hostile_name() -> String {
    format!(
        "oomtrace-test-hostile-{}-\x1b[2J\r\t\x7f\u{85}\u{202e}gpj",
        std::process::id()
    )
}

/// The `oom_kill` count of a v1 memory cgroup's `memory.oom_control` (kernel 4.13+).
fn oom_kills(cg: &MemoryCgroup) -> u64 {
    let text = std::fs::read_to_string(cg.dir().join("memory.oom_control")).expect("oom_control");
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .expect("oom_kill in memory.oom_control")
}

/// `oomtrace tail` (the table) for one kill in `cgroup`, once attached; its whole stdout.
fn tail_table(cgroup: &str) -> (Reaped, std::thread::JoinHandle<Vec<u8>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .args([
            "tail",
            "--color",
            "always",
            "--hide-pressure",
            "--no-pressure",
        ])
        .args(["--count", "1", "--cgroup", cgroup])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oomtrace starts");
    let stderr = child.stderr.take().expect("stderr");
    let lines = common::read_until(stderr, "process identities:", "oomtrace tail");
    std::thread::spawn(move || lines.for_each(drop));
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    (Reaped(child), reader)
}

#[test]
fn hostile_comm_and_cgroup_name_are_one_escaped_row_and_exact_json() {
    require_host!();
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    if h.version != oomtrace::cgroup::CgroupVersion::V1 {
        eprintln!("SKIPPED: reads cgroup v1's memory.oom_control");
        return;
    }
    let name = hostile_name();
    let cg = MemoryCgroup::create(&h, &name, Some(32 << 20)).expect("the kernel allows the name");
    let path = cg.path().to_string();
    assert_eq!(path, format!("/{name}"));
    let kills_before = oom_kills(&cg);

    let (_json_tail, records) = common::tail_kills(&path, 1, &["--no-pressure"]);
    let (table_tail, table) = tail_table(&path);

    let mut hog = common::start_hog(&cg, &["--comm", COMM], &SpawnOptions::default(), false);
    let pid = hog.id();
    assert_eq!(
        killed_by(&mut hog, WAIT),
        Some(libc::SIGKILL),
        "the hog was OOM-killed"
    );

    // JSON: the exact bytes, and the pid the test started.
    let v = records.recv_timeout(WAIT).expect("the kill's JSON record");
    assert_eq!(v["victim"]["pid"], pid, "{v}");
    assert_eq!(v["victim"]["comm"], COMM, "{v}");
    assert_eq!(v["victim"]["cgroup"]["path"], path.as_str(), "{v}");
    assert_eq!(
        oom_kills(&cg) - kills_before,
        1,
        "the kernel counted one kill"
    );

    // The table: `--count 1` ends it after the kill.
    let mut table_tail = table_tail;
    let status = oomtrace::testing::sandbox::wait_or_kill(&mut table_tail.0, WAIT).expect("wait");
    assert!(status.success(), "oomtrace tail: {status}");
    let out = String::from_utf8(table.join().expect("reader")).expect("UTF-8 table");
    // Colour is on: the only ESC bytes are the action's own colour codes.
    let without_colour = out.replace("\x1b[31m", "").replace("\x1b[0m", "");
    for bad in ['\x1b', '\r', '\t', '\x7f', '\u{85}', '\u{202e}'] {
        assert!(!without_colour.contains(bad), "raw {bad:?} in {out:?}");
    }
    let rows: Vec<&str> = without_colour
        .lines()
        .filter(|l| !l.starts_with("TIME ") && !l.starts_with("  why: "))
        .collect();
    assert_eq!(rows.len(), 1, "one row for one kill: {out:?}");
    let row = rows[0];
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[1], "killed", "{row:?}");
    assert_eq!(fields[2], pid.to_string(), "{row:?}");
    assert_eq!(fields[3], "x\\e[7mE\\nrow", "{row:?}");
    let shown = format!(
        "/oomtrace-test-hostile-{}-\\e[2J\\r\\t\\x7f\\u{{85}}\\u{{202e}}gpj",
        std::process::id()
    );
    assert_eq!(fields[4], shown, "{row:?}");
    drop(cg);
}
