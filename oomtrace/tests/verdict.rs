//! Why it died, from real kills through `oomtrace tail -o json`: a Node.js heap cap above the
//! limit (as a flag and through `NODE_OPTIONS`), a tmpfs filler, and a container's non-init
//! process. Each record's top code and its evidence are checked against the cgroup files, the
//! kernel's own report of the same kill and the process the test started; where a kernel log
//! can tell, `explain --kernel-log` reaches the same verdict.
//! (The sidecar and `oom_score_adj` cases are in `domain.rs`, the leak and the spike in
//! `pressure.rs`, the global OOM in `oom_shapes.rs`.)
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    containerd::{self, Containerd},
    kernel_log_of, killed_by, tail_kills,
};
use oomtrace::{
    cgroup::{memory::MemoryFiles, MemoryHierarchy},
    testing::{
        kernel_report::{Kmsg, OomReport},
        sandbox::{MemoryCgroup, SpawnOptions},
    },
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

fn cgroup(test: &str, limit: u64) -> (MemoryHierarchy, MemoryCgroup) {
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    let name = format!("oomtrace-verdict-{test}-{}", std::process::id());
    let cg = MemoryCgroup::create(&h, &name, Some(limit)).expect("cgroup");
    (h, cg)
}

fn node() -> Option<PathBuf> {
    ["/usr/bin/node", "/usr/bin/nodejs", "/usr/local/bin/node"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A Node.js program that grows its heap (an 8 MB array kept every 5 ms) until something stops
/// it. Big steps: small objects make the kernel thrash Node's own file pages near the limit for
/// a minute (measured: 52 s of reclaim) before it kills.
const GROW: &str =
    "const keep = []; setInterval(() => { keep.push(new Array(1000000).fill(keep.length)); }, 5);";

/// A Node.js kill in a 96 MiB cgroup: the record, the kernel's report and log of it, and the
/// cgroup's limit as its file says.
struct NodeKill {
    v: Value,
    report: OomReport,
    limit: u64,
    /// V8's own heap cap, as the process printed it at start.
    heap_size_limit: u64,
}

/// Node with `args` and `env`, growing its heap in a 96 MiB cgroup until the kernel kills it;
/// `explain --kernel-log` over the kernel's log of it must agree with the record.
fn node_kill(node: &Path, test: &str, args: &[&str], env: &[(&str, &str)]) -> NodeKill {
    let limit = 96 * MIB;
    let (h, cg) = cgroup(test, limit);
    let (_tail, records) = tail_kills(cg.path(), 1, &[]);
    let mut kmsg = Kmsg::open_at_end().expect("/dev/kmsg");
    common::wait_for_oom_report_budget();
    let script = format!("console.log(require('v8').getHeapStatistics().heap_size_limit); {GROW}");
    let mut cmd = Command::new(node);
    cmd.args(args)
        .envs(env.iter().copied())
        .args(["-e", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cg
        .spawn(cmd, &SpawnOptions::default())
        .expect("node starts");
    let pid = child.id();
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first)
        .expect("node prints its heap cap");
    let heap_size_limit = first.trim().parse().expect("a number");
    assert_eq!(
        killed_by(&mut child, WAIT),
        Some(9),
        "the kernel's SIGKILL, not V8's heap limit"
    );
    let v = records.recv_timeout(WAIT).expect("oomtrace's record");
    assert_eq!(v["victim"]["tgid"], pid, "{v}");
    let (report, log) = kernel_log_of(&mut kmsg, pid, WAIT);
    let limit_file = MemoryFiles::new(cg.dir(), h.version)
        .limit_bytes()
        .expect("limit file")
        .expect("a limit");
    assert_eq!(limit_file, limit);
    common::assert_kernel_log_agrees(&v, &log);
    NodeKill {
        v,
        report,
        limit: limit_file,
        heap_size_limit,
    }
}

/// Node with a 512 MiB heap cap in a 96 MiB cgroup, killed by the kernel, not by V8.
fn node_heap_cap_kill(node: &Path, test: &str, flag: bool) -> Value {
    let k = if flag {
        node_kill(node, test, &["--max-old-space-size=512"], &[])
    } else {
        node_kill(
            node,
            test,
            &[],
            &[("NODE_OPTIONS", "--max-old-space-size=512")],
        )
    };
    assert!(
        k.heap_size_limit >= 512 * MIB,
        "V8 took the cap: {}",
        k.heap_size_limit
    );
    let v = k.v;
    let top = &v["diagnosis"][0];
    assert_eq!(
        top["code"], "runtime_heap_cap_above_limit",
        "{}",
        v["diagnosis"]
    );
    assert_eq!(top["severity"], "critical");
    let ev = &top["evidence"];
    assert_eq!(ev["runtime"], "node");
    assert_eq!(ev["setting"], "--max-old-space-size=512");
    assert_eq!(ev["heap_cap_bytes"], 512 * MIB);
    assert_eq!(ev["limit_bytes"], k.limit, "the cgroup's limit file");
    assert_eq!(ev["recommended_cap_bytes"], k.limit * 3 / 4);
    // Node's other threads still fault between the record's read (at mark_victim) and the
    // kernel's printed line; on 6.1 each thread also caches up to 64 pages of counts.
    let anon = ev["victim_anon_rss_bytes"].as_u64().expect("anon");
    let kernel_anon = k.report.killed.anon_rss_kb * 1024;
    assert!(
        anon.abs_diff(kernel_anon) <= MIB,
        "the kernel's anon-rss {kernel_anon} vs {anon}"
    );
    // The limit that fits the cap with 25% headroom.
    assert_eq!(
        v["sizing"]["suggested_limit_bytes"],
        ((512 * MIB) as f64 / 0.75 / MIB as f64).ceil() as u64 * MIB
    );
    v
}

const NO_NODE: &str = "nodejs is not installed: `cargo xtask bootstrap` installs Debian's nodejs";

#[test]
fn node_heap_cap_flag_above_the_limit() {
    require_host!();
    let Some(node) = node() else {
        skip_test!("{NO_NODE}");
    };
    let v = node_heap_cap_kill(&node, "node-flag", true);
    assert_eq!(
        v["diagnosis"][0]["evidence"]["source"], "command line",
        "{v}"
    );
    let args = &v["victim"]["process"]["args"];
    assert_eq!(args[1], "--max-old-space-size=512", "{v}");
}

#[test]
fn node_heap_cap_through_node_options() {
    require_host!();
    let Some(node) = node() else {
        skip_test!("{NO_NODE}");
    };
    let v = node_heap_cap_kill(&node, "node-options", false);
    assert_eq!(
        v["victim"]["process"]["env"]["NODE_OPTIONS"],
        "--max-old-space-size=512"
    );
    assert_eq!(
        v["diagnosis"][0]["evidence"]["source"], "NODE_OPTIONS",
        "{v}"
    );
}

/// An 88 MiB heap cap under a 96 MiB limit: below the limit, but with no room for what lives
/// outside the heap, so the kernel still kills.
#[test]
fn node_heap_cap_without_headroom() {
    require_host!();
    let Some(node) = node() else {
        skip_test!("{NO_NODE}");
    };
    let k = node_kill(&node, "node-headroom", &["--max-old-space-size=88"], &[]);
    let top = &k.v["diagnosis"][0];
    assert_eq!(
        top["code"], "runtime_heap_cap_without_headroom",
        "{}",
        k.v["diagnosis"]
    );
    assert_eq!(top["evidence"]["heap_cap_bytes"], 88 * MIB);
    assert_eq!(top["evidence"]["limit_bytes"], k.limit);
    assert_eq!(
        top["evidence"]["share_of_limit"],
        (88.0_f64 / 96.0 * 10_000.0).round() / 10_000.0
    );
}

/// No heap cap: V8 sizes its heap from the memory it sees, and under a 96 MiB limit that is
/// more than the limit. The estimate the verdict gives is at most what V8 printed.
#[test]
fn node_heap_uncapped() {
    require_host!();
    let Some(node) = node() else {
        skip_test!("{NO_NODE}");
    };
    let k = node_kill(&node, "node-uncapped", &[], &[]);
    let top = &k.v["diagnosis"][0];
    assert_eq!(top["code"], "runtime_heap_uncapped", "{}", k.v["diagnosis"]);
    let estimate = top["evidence"]["estimated_default_cap_bytes"]
        .as_u64()
        .expect("estimate");
    assert!(
        estimate <= k.heap_size_limit && k.heap_size_limit > k.limit * 3 / 4,
        "V8's own cap {} against the estimate {estimate} and the limit {}",
        k.heap_size_limit,
        k.limit
    );
    assert_eq!(k.v["victim"]["process"]["env"], serde_json::json!({}));
}

/// `shmem` of a cgroup's `memory.stat` (v2 `shmem`, v1 `total_shmem`).
fn shmem_bytes(h: &MemoryHierarchy, dir: &Path) -> u64 {
    MemoryFiles::new(dir, h.version)
        .stat()
        .expect("memory.stat")
        .shmem
        .expect("a shmem line")
}

/// The budget is the record's usage at the kill, which the kernel's report (printed a moment
/// later in the same OOM) gives within 1% of the limit.
fn assert_budget(ev: &Value, v: &Value, report: &oomtrace::testing::kernel_report::OomReport) {
    assert_eq!(ev["budget_bytes"], v["oom"]["memcg"]["usage_bytes"], "{v}");
    let ours = ev["budget_bytes"].as_u64().expect("budget");
    let u = report.memcg_usage.as_ref().expect("memory: line");
    let (kernel, limit) = (u.usage_kb * 1024, u.limit_kb * 1024);
    assert!(
        ours.abs_diff(kernel) <= limit / 100,
        "the kernel's usage at the kill: {kernel} vs {ours}"
    );
}

/// A directory on tmpfs: `/dev/shm`, else `/tmp` or `/` (the VM guests' root is tmpfs).
fn tmpfs_dir() -> PathBuf {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    ["/dev/shm", "/tmp", "/"]
        .iter()
        .map(PathBuf::from)
        .find(|d| {
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            // SAFETY: an all-zero statfs is a valid value of this plain C struct.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: a NUL-terminated path and a struct statfs writes into.
            let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0;
            ok && st.f_type == TMPFS_MAGIC
        })
        .expect("a tmpfs directory")
}

/// A process fills a tmpfs file (`/dev/shm`) with most of a 64 MiB budget, then allocates: the
/// kernel kills it, and the tmpfs pages stay charged after it is gone.
#[test]
fn tmpfs_filler_is_named() {
    require_host!();
    let limit = 64 * MIB;
    let (h, cg) = cgroup("tmpfs", limit);
    let file = tmpfs_dir().join(format!("oomtrace-verdict-{}", std::process::id()));
    let (_tail, records) = tail_kills(cg.path(), 1, &[]);
    let mut kmsg = Kmsg::open_at_end().expect("/dev/kmsg");
    // The pressure monitor picks a new cgroup up on its next walk (every 2 s).
    std::thread::sleep(Duration::from_millis(2500));
    common::wait_for_oom_report_budget();
    let shm = file.to_string_lossy().into_owned();
    let mut hog = common::start_hog(
        &cg,
        &[
            "--comm",
            "oomt-tmpfs",
            "--shm-file",
            &shm,
            "--shm-mb",
            "40",
            "--delay-ms",
            "1500",
        ],
        &SpawnOptions::default(),
        false,
    );
    let pid = hog.id();
    assert_eq!(killed_by(&mut hog, WAIT), Some(9));
    let v = records.recv_timeout(WAIT).expect("oomtrace's record");
    let (report, log) = kernel_log_of(&mut kmsg, pid, WAIT);
    // Killing the process freed none of it.
    let shmem_after = shmem_bytes(&h, cg.dir());
    assert!(
        shmem_after >= 40 * MIB,
        "the tmpfs pages stay: {shmem_after}"
    );

    let top = &v["diagnosis"][0];
    assert_eq!(top["code"], "tmpfs_shmem", "{}", v["diagnosis"]);
    assert_eq!(top["severity"], "critical");
    let ev = &top["evidence"];
    assert_eq!(ev["shmem_bytes"], shmem_after, "the cgroup's memory.stat");
    assert_budget(ev, &v, &report);
    assert_eq!(
        ev["victim_shmem_rss_bytes"],
        report.killed.shmem_rss_kb * 1024
    );
    let from_log = common::assert_kernel_log_agrees(&v, &log);
    assert_eq!(from_log["diagnosis"][0]["code"], "tmpfs_shmem");
    let _ = std::fs::remove_file(&file);
    drop(cg);
}

/// A process that is not PID 1 of its PID namespace, in a cgroup shaped as Docker's (systemd
/// driver) names a container's: the verdict says the container would run on without it. The
/// real-container version is `container_non_init_victim`; this one runs in the VM guests too.
#[test]
fn docker_scope_non_init_victim() {
    require_host!();
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    let name = format!("oomtrace-verdict-docker-{}", std::process::id());
    let mut parent = MemoryCgroup::create(&h, &name, None).expect("parent cgroup");
    let id = format!(
        "{:0>64x}",
        0x6f6f_6d74_7261_6365_u64 + u64::from(std::process::id())
    );
    let scope = parent
        .child(&h, &format!("docker-{id}.scope"), Some(32 * MIB))
        .expect("scope cgroup");
    let path = scope.path().to_string();
    let (_tail, records) = tail_kills(&path, 1, &[]);
    common::wait_for_oom_report_budget();
    let mut hog = common::start_hog(
        scope,
        &["--comm", "oomt-worker"],
        &SpawnOptions::default(),
        false,
    );
    let pid = hog.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid");
    assert_ne!(nspid.split_whitespace().last(), Some("1"), "not an init");
    assert_eq!(killed_by(&mut hog, WAIT), Some(9));
    let v = records.recv_timeout(WAIT).expect("oomtrace's record");
    assert_eq!(v["container"]["id"], id.as_str(), "{v}");
    assert_eq!(v["victim"]["process"]["container_init"], false, "{v}");
    let top = &v["diagnosis"][0];
    assert_eq!(top["code"], "not_container_init", "{}", v["diagnosis"]);
    assert_eq!(top["evidence"]["victim_pid"], pid);
    assert_eq!(top["evidence"]["victim_cgroup"], path.as_str());
}

/// In a real container (containerd, runc), PID 1 forks a child that grows: the kernel kills the
/// child, the container keeps running, and the record says the victim was not its init.
#[test]
fn container_non_init_victim() {
    require_host!();
    if let Some(missing) = containerd::missing() {
        skip_test!(
            "{missing} not installed: `cargo xtask test` installs Debian's containerd and runc"
        );
    }
    let h = MemoryHierarchy::detect().expect("memory hierarchy");
    let dir = std::env::temp_dir().join(format!("oomtrace-verdict-ctr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = Containerd::start(&dir, &h.root);
    let rootfs = containerd::rootfs(&dir);
    let id = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        std::process::id(),
        0x6e6f6eu64,
        0x696e6974u64,
        2u64
    );
    let path = format!("/default/{id}");
    let (_tail, records) = tail_kills(&path, 1, &[]);
    common::wait_for_oom_report_budget();
    // PID 1 is the hog's parent: it forks the allocating child and waits on stdin, which stays
    // open, so the container runs on after the kill.
    let mut run = d.run(
        &rootfs,
        &id,
        Some(32 << 20),
        &["/oomtrace", "hog", "--fork", "--comm", "oomt-worker"],
    );
    let v = records.recv_timeout(WAIT).expect("oomtrace's record");
    assert_eq!(v["victim"]["cgroup"]["path"], path.as_str(), "{v}");
    assert_eq!(v["victim"]["process"]["container_init"], false, "{v}");
    // The container's init is still there after its child was killed.
    let tasks = d.ctr().args(["task", "ls"]).output().expect("ctr task ls");
    let listing = String::from_utf8_lossy(&tasks.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING")),
        "the container runs on: {listing}"
    );
    let top = &v["diagnosis"][0];
    assert_eq!(top["code"], "not_container_init", "{}", v["diagnosis"]);
    assert_eq!(top["evidence"]["victim_pid"], v["victim"]["tgid"]);
    assert_eq!(top["evidence"]["victim_cgroup"], path.as_str());
    assert_eq!(v["container"]["id"], id.as_str());

    // End the container: its init gets SIGKILL, `ctr run --rm` returns and removes it.
    drop(run.stdin.take());
    let _ = d
        .ctr()
        .args(["task", "kill", "--signal", "SIGKILL", &id])
        .output();
    let _ = oomtrace::testing::sandbox::wait_or_kill(&mut run, WAIT);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
