//! Who sent each SIGKILL: `oomtrace tail -o json` in its own process, and real senders the test
//! starts, each checked against the process the test killed and the sender it used: a process
//! named like a userspace OOM killer, a shell's `kill -9`, containerd stopping a container; and
//! what must not give a record: the kernel's OOM killer (its `oom_kill` record says it), a
//! target outside any container or limit, and `--sigkill none`.
mod common;

use std::{
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{
    containerd::{self, Containerd},
    killed_by, Reaped,
};
use oomtrace::{
    cgroup::{memory::MemoryFiles, MemoryHierarchy},
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

fn tail(extra: &[&str]) -> (Reaped, mpsc::Receiver<Value>) {
    common::tail_records(extra)
}

/// Every record for target (or victim) `pid` that arrives within `window`.
fn records_for(rx: &mpsc::Receiver<Value>, pid: u32, window: Duration) -> Vec<Value> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(v) => {
                let of = |k: &str| v[k]["tgid"] == pid || v[k]["pid"] == pid;
                if of("target") || of("victim") {
                    out.push(v);
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// The first `sigkill` record for `pid`.
fn sigkill_for(rx: &mpsc::Receiver<Value>, pid: u32) -> Value {
    let end = Instant::now() + WAIT;
    loop {
        let left = end
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no sigkill record for {pid}"));
        let v = rx.recv_timeout(left).expect("a record");
        if v["event"] == "sigkill" && v["target"]["tgid"] == pid {
            return v;
        }
    }
}

fn limited(test: &str) -> (MemoryHierarchy, MemoryCgroup) {
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    let name = format!("oomtrace-sigkill-{test}-{}", std::process::id());
    let cg = MemoryCgroup::create(&h, &name, Some(64 * MIB)).expect("cgroup");
    (h, cg)
}

/// A hog holding 24 MiB, idle until killed.
fn idle_hog(cg: &MemoryCgroup) -> Child {
    common::start_hog(
        cg,
        &["--comm", "oomt-target", "--anon-mb", "24"],
        &SpawnOptions::default(),
        true,
    )
}

/// Sends SIGKILL to `pid` from a child of this test named `name` (its comm), and returns the
/// child's pid. The child sets its name and kills in `pre_exec`, then exits without exec.
fn kill_as(name: &'static str, pid: u32) -> u32 {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/nonexistent-never-executed");
    // SAFETY: prctl, kill and _exit are async-signal-safe, as code after fork must be.
    unsafe {
        cmd.pre_exec(move || {
            let mut comm = [0u8; 16];
            comm[..name.len()].copy_from_slice(name.as_bytes());
            libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
            libc::kill(pid as i32, libc::SIGKILL);
            libc::_exit(0)
        });
    }
    let mut child = cmd.spawn().expect("sender forks");
    let sender = child.id();
    assert!(child.wait().expect("sender exits").success());
    sender
}

#[test]
fn userspace_oom_killer_names_the_pressure() {
    require_host!();
    let (h, cg) = limited("earlyoom");
    let (_tail, rx) = tail(&[]);
    let mut target = idle_hog(&cg);
    let pid = target.id();
    let sender = kill_as("earlyoom", pid);
    assert_eq!(killed_by(&mut target, WAIT), Some(9));
    let v = sigkill_for(&rx, pid);
    assert_eq!(v["cause"], "userspace_oom_killer", "{v}");
    assert_eq!(v["memory"], true);
    assert_eq!(v["sender"]["comm"], "earlyoom");
    assert_eq!(v["sender"]["tgid"], sender);
    assert_eq!(v["target"]["comm"], "oomt-target");
    assert_eq!(v["target"]["cgroup"]["path"], cg.path());
    assert_eq!(v["si_code"], 0, "kill(2): SI_USER");
    let p = &v["pressure"];
    assert_eq!(p["path"], cg.path());
    assert_eq!(
        p["source"], "kernel",
        "read at the signal, before the kill freed it"
    );
    assert_eq!(p["limit_bytes"], 64 * MIB);
    let usage = p["usage_bytes"].as_u64().expect("usage");
    assert!(
        (24 * MIB..=64 * MIB).contains(&usage),
        "the hog's 24 MiB and under the limit: {usage}"
    );
    let now = MemoryFiles::new(cg.dir(), h.version)
        .usage_bytes()
        .expect("usage");
    assert!(now < usage, "the kill freed it: {now} < {usage}");
}

#[test]
fn kill_from_a_shell_is_a_user() {
    require_host!();
    let (_h, cg) = limited("shell");
    let (_tail, rx) = tail(&[]);
    let mut target = idle_hog(&cg);
    let pid = target.id();
    let mut sh = Command::new("sh")
        .args(["-c", &format!("kill -9 {pid}; echo $$")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut out = String::new();
    std::io::Read::read_to_string(sh.stdout.as_mut().expect("stdout"), &mut out).expect("read");
    assert!(sh.wait().expect("sh").success());
    let sh_pid: u64 = out.trim().parse().expect("the shell's pid");
    assert_eq!(killed_by(&mut target, WAIT), Some(9));
    let v = sigkill_for(&rx, pid);
    assert_eq!(v["cause"], "user", "{v}");
    assert_eq!(v["memory"], false);
    assert_eq!(v["sender"]["tgid"], sh_pid, "{v}");
    assert_eq!(v["sender"]["comm"], "sh");
    assert!(v.get("pressure").is_none());
    // Every kernel of the matrix has the BTF tracepoint.
    assert_eq!(
        v["capture"]["hooks"],
        serde_json::json!(["tp_btf/signal_generate"]),
        "{v}"
    );
}

#[test]
fn kernel_oom_kill_has_no_sigkill_record() {
    require_host!();
    let (_h, cg) = limited("oom");
    let (_tail, rx) = tail(&[]);
    common::wait_for_oom_report_budget();
    let mut hog = common::start_hog(
        &cg,
        &["--comm", "oomt-oom"],
        &SpawnOptions::default(),
        false,
    );
    let pid = hog.id();
    assert_eq!(killed_by(&mut hog, WAIT), Some(9));
    // The kernel's SIGKILL is held 250 ms for its oom_kill record; wait well past it.
    let records = records_for(&rx, pid, Duration::from_secs(3));
    let events: Vec<&str> = records.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(events, ["oom_kill"], "{records:#?}");
}

/// A `memory.oom.group` kill (cgroup v2): every member gets its `oom_kill` record and none a
/// `sigkill` record, although the kernel sent each its SIGKILL.
#[test]
fn oom_group_kill_has_only_oom_kill_records() {
    require_host!();
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    if h.version != oomtrace::cgroup::CgroupVersion::V2 {
        skip_test!("memory.oom.group needs cgroup v2 (this host has v1)");
    }
    let (_h, cg) = limited("group");
    std::fs::write(cg.dir().join("memory.oom.group"), "1").expect("memory.oom.group");
    let (_tail, rx) = tail(&[]);
    common::wait_for_oom_report_budget();
    let mut members: Vec<Child> = (0..2)
        .map(|i| {
            common::start_hog(
                &cg,
                &["--comm", &format!("oomt-member{i}"), "--anon-mb", "8"],
                &SpawnOptions::default(),
                true,
            )
        })
        .collect();
    members.push(common::start_hog(
        &cg,
        &["--comm", "oomt-grower"],
        &SpawnOptions::default(),
        false,
    ));
    let pids: Vec<u32> = members.iter().map(Child::id).collect();
    for m in &mut members {
        assert_eq!(killed_by(m, WAIT), Some(9), "every member is killed");
    }
    let end = Instant::now() + Duration::from_secs(3);
    let mut seen: Vec<(u32, String)> = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(v) = rx.recv_timeout(left) else { break };
        for &p in &pids {
            if v["victim"]["tgid"] == p || v["target"]["tgid"] == p {
                seen.push((p, v["event"].as_str().unwrap_or("?").to_string()));
            }
        }
    }
    seen.sort();
    let want: Vec<(u32, String)> = {
        let mut w: Vec<(u32, String)> = pids.iter().map(|&p| (p, "oom_kill".to_string())).collect();
        w.sort();
        w
    };
    assert_eq!(seen, want, "one oom_kill record each, no sigkill record");
}

#[test]
fn outside_any_container_or_limit_is_not_recorded_by_default() {
    require_host!();
    let (_tail, rx) = tail(&[]);
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    // A cgroup without a limit, under the root (no limited ancestor), not a container's.
    let name = format!("oomtrace-sigkill-free-{}", std::process::id());
    let cg = MemoryCgroup::create(&h, &name, None).expect("cgroup");
    let mut target = idle_hog(&cg);
    let pid = target.id();
    // SAFETY: kill(2) on a child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert_eq!(killed_by(&mut target, WAIT), Some(9));
    let records = records_for(&rx, pid, Duration::from_secs(2));
    assert!(records.is_empty(), "{records:#?}");
    // `--sigkill all` records it.
    let (_all, rx) = tail(&["--sigkill", "all"]);
    let mut target = idle_hog(&cg);
    let pid = target.id();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert_eq!(killed_by(&mut target, WAIT), Some(9));
    let v = sigkill_for(&rx, pid);
    assert_eq!(v["cause"], "user");
    assert_eq!(v["sender"]["tgid"], std::process::id());
}

#[test]
fn sigkill_none_records_nothing() {
    require_host!();
    let (_h, cg) = limited("none");
    let (_tail, rx) = tail(&["--sigkill", "none"]);
    let mut target = idle_hog(&cg);
    let pid = target.id();
    // SAFETY: kill(2) on a child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert_eq!(killed_by(&mut target, WAIT), Some(9));
    let records = records_for(&rx, pid, Duration::from_secs(2));
    assert!(records.is_empty(), "{records:#?}");
    let check = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .args(["check", "--sigkill", "none"])
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("--sigkill none"), "{text}");
}

#[test]
fn containerd_stop_is_a_runtime_stop() {
    require_host!();
    if let Some(missing) = containerd::missing() {
        skip_test!(
            "{missing} not installed: `cargo xtask test` installs Debian's containerd and runc"
        );
    }
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    let dir = std::env::temp_dir().join(format!("oomtrace-sigkill-ctr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = Containerd::start(&dir, &h.root);
    let rootfs = containerd::rootfs(&dir);
    let id = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        std::process::id(),
        0x7369_676bu64,
        0x0069_6c6c_u64,
        3u64
    );
    let (_tail, rx) = tail(&[]);
    let mut run = d.run(
        &rootfs,
        &id,
        None,
        &["/oomtrace", "hog", "--comm", "oomt-ctr", "--anon-mb", "8"],
    );
    // Wait for the container's task to run, then stop it the way an eviction ends.
    let deadline = Instant::now() + WAIT;
    let pid = loop {
        let out = d.ctr().args(["task", "ls"]).output().expect("task ls");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(pid) = text
            .lines()
            .find(|l| l.starts_with(&id) && l.contains("RUNNING"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the container runs: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed = d
        .ctr()
        .args(["task", "kill", "--signal", "SIGKILL", &id])
        .status()
        .expect("ctr task kill");
    assert!(killed.success());
    let v = sigkill_for(&rx, pid);
    let _ = oomtrace::testing::sandbox::wait_or_kill(&mut run, WAIT);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(v["cause"], "runtime_stop", "{v}");
    assert_eq!(v["memory"], false);
    let sender = v["sender"]["comm"].as_str().expect("sender comm");
    assert!(
        ["runc", "containerd-shim", "containerd"].contains(&sender),
        "the runtime or its shim sent it: {v}"
    );
    assert_eq!(v["container"]["id"], id.as_str());
    assert_eq!(v["target"]["cgroup"]["path"], format!("/default/{id}"));
}
