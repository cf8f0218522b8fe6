//! Near-limit means memory that reclaim cannot easily free, and a cgroup stuck at its limit is
//! reported, through the real agent:
//! - a cgroup full of page cache (a reader of a big file) raises no `memory_pressure` record,
//!   though its usage is at the limit: its working set (usage − inactive file) is small;
//! - a real Node.js process whose heap holds the cgroup just under its limit thrashes (its own
//!   code pages evicted and faulted back, no OOM kill): a `memory_pressure` record with a
//!   `thrashing` object within seconds, `oomtrace_memory_thrashing_seconds_total` under its
//!   Kubernetes names, and `explain` on the record.
//!
//! Each figure is checked against the cgroup's own files (`memory.stat`, `memory.oom_control`).
mod common;

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{systemd_pod, KubeletTree};
use oomtrace::{
    cgroup::MemoryHierarchy,
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

type Agent = common::agent::AgentProcess;

/// One test at a time: every agent watches every cgroup, and the stat hooks attach for any
/// cgroup in trouble (the thrashing one would attach them for the page-cache test's agent).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

const UID: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
const NODE_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const READER_ID: &str = "beef0000beef0000beef0000beef0000beef0000beef0000beef0000beef0000";

fn start_agent(tree: &Path, out: &Path) -> Agent {
    let (tree, out) = (tree.to_str().expect("UTF-8"), out.to_str().expect("UTF-8"));
    let args = [
        "--no-pin",
        "--no-stdout",
        "--node-name",
        "node-a",
        "--host-log-dir",
        tree,
        "--output-file",
        out,
    ];
    Agent::start(&args, Stdio::null(), None)
}

fn records(path: &Path) -> Vec<Value> {
    let test = common::test_name();
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| common::parse_json_line(l, &test).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// One `name value` line of a cgroup file.
fn keyed(dir: &Path, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file)).expect("cgroup file");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} in {file}"))
}

/// The cgroup's usage, and (v1 `total_`/v2 plain) lines of its `memory.stat`.
struct Files {
    dir: PathBuf,
    v1: bool,
}

impl Files {
    fn usage(&self) -> u64 {
        let f = if self.v1 {
            "memory.usage_in_bytes"
        } else {
            "memory.current"
        };
        std::fs::read_to_string(self.dir.join(f))
            .expect("usage")
            .trim()
            .parse()
            .expect("number")
    }

    fn stat(&self, name: &str) -> u64 {
        let name = if self.v1 {
            format!("total_{name}")
        } else {
            name.to_string()
        };
        keyed(&self.dir, "memory.stat", &name)
    }

    fn refaults(&self) -> u64 {
        self.stat("workingset_refault_anon") + self.stat("workingset_refault_file")
    }

    fn oom_kills(&self) -> u64 {
        if self.v1 {
            keyed(&self.dir, "memory.oom_control", "oom_kill")
        } else {
            keyed(&self.dir, "memory.events", "oom_kill")
        }
    }
}

/// The Kubernetes-shaped cgroup of one container (systemd driver), limited to `limit` bytes.
fn container<'a>(
    h: &MemoryHierarchy,
    root: &'a mut MemoryCgroup,
    id: &str,
    limit: u64,
) -> &'a mut MemoryCgroup {
    let pod = root
        .child(h, "kubepods.slice", None)
        .and_then(|k| k.child(h, "kubepods-burstable.slice", None))
        .and_then(|q| {
            q.child(
                h,
                &format!("kubepods-burstable-pod{}.slice", systemd_pod(UID)),
                None,
            )
        })
        .expect("pod cgroup");
    pod.child(h, &format!("cri-containerd-{id}.scope"), Some(limit))
        .expect("container cgroup")
}

fn files_of(c: &MemoryCgroup) -> Files {
    Files {
        dir: c.dir().to_path_buf(),
        v1: c.dir().join("memory.usage_in_bytes").exists(),
    }
}

fn spawn_in(c: &MemoryCgroup, cmd: Command) -> Child {
    c.spawn(cmd, &SpawnOptions::default()).expect("spawn")
}

/// A file on a disk filesystem (not tmpfs) whose page cache is dropped, so that a process in
/// the test cgroup charges its pages there when it reads or maps them.
fn uncached_copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy");
    let f = std::fs::File::open(to).expect("open copy");
    f.sync_all().expect("sync");
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd; posix_fadvise has no memory-safety preconditions.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "fadvise DONTNEED");
}

/// A scratch directory on the root filesystem (page cache is reclaimable there; tmpfs pages
/// are shmem and are not, without swap).
fn scratch(tag: &str) -> PathBuf {
    let base = Path::new("/var/tmp");
    let dir = base.join(format!("oomtrace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let root_dev = std::fs::metadata("/").expect("/").dev();
    assert_eq!(
        std::fs::metadata(&dir).expect("scratch").dev(),
        root_dev,
        "/var/tmp on the root filesystem"
    );
    dir
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_cgroup_full_of_page_cache_raises_no_warning() {
    require_host!();
    let _turn = take_turn();
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let tree = KubeletTree::new("pagecache");
    tree.add("shop", "reader-0", UID, "reader", READER_ID);
    let out = tree.0.join("oomtrace.jsonl");
    let dir = Scratch(scratch("pagecache"));
    // 160 MiB of data, read through a 64 MiB cgroup: its usage sits at the limit, all cache.
    let big = dir.0.join("big");
    {
        let f = std::fs::File::create(&big).expect("big file");
        f.set_len(0).expect("truncate");
        let chunk = vec![0x5au8; 1 << 20];
        let mut w = std::io::BufWriter::new(f);
        for _ in 0..160 {
            std::io::Write::write_all(&mut w, &chunk).expect("write");
        }
        let f = w.into_inner().expect("flush");
        f.sync_all().expect("sync");
        use std::os::fd::AsRawFd;
        // SAFETY: as in `uncached_copy`.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let agent = start_agent(&tree.0, &out);
    let mut root = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-ws-{}", std::process::id()),
        None,
    )
    .expect("test root");
    let limit = 64u64 << 20;
    let cg = container(&h, &mut root, READER_ID, limit);
    let files = files_of(cg);
    let id = std::fs::metadata(&files.dir).expect("cgroup").ino();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("for i in 1 2 3; do cat {} > /dev/null; done", big.display()),
    ]);
    let mut reader = spawn_in(cg, cmd);
    assert!(reader.wait().expect("reader").success(), "the reader ran");
    // The cache stays charged after the reader exits: usage at the limit, working set small.
    let usage = files.usage();
    let inactive = files.stat("inactive_file");
    eprintln!(
        "usage {usage} of {limit}, inactive_file {inactive}, active_file {}",
        files.stat("active_file")
    );
    assert!(usage * 10 >= limit * 9, "usage at the limit: {usage}");
    assert!(
        usage.saturating_sub(inactive) * 2 < limit,
        "mostly inactive cache"
    );
    // The 1 s samples see it for a few seconds.
    std::thread::sleep(Duration::from_secs(4));
    let metrics = agent.get("/metrics").1;
    let labels = "{namespace=\"shop\",pod=\"reader-0\",container=\"reader\"}";
    let usage_ratio = metric_f64(&metrics, &format!("oomtrace_memory_usage_ratio{labels}"));
    let ws_ratio = metric_f64(
        &metrics,
        &format!("oomtrace_memory_working_set_ratio{labels}"),
    );
    eprintln!("usage ratio {usage_ratio:?}, working set ratio {ws_ratio:?}");
    let now_ws = (files.usage().saturating_sub(files.stat("inactive_file"))) as f64 / limit as f64;
    assert!(usage_ratio.is_some_and(|r| r >= 0.9), "{metrics}");
    assert!(
        ws_ratio.is_some_and(|r| r < 0.5 && (r - now_ws).abs() < 0.05),
        "working set ratio {ws_ratio:?} against the cgroup's {now_ws}"
    );
    // Nor does it keep the per-page stat hooks attached (adaptive, the default).
    assert_eq!(
        common::agent::metric(&metrics, "oomtrace_stat_hooks_attached").unwrap_or(0),
        0,
        "stat hooks attached for a cgroup full of cache: {}",
        agent.log_text()
    );
    let warned: Vec<Value> = records(&out)
        .into_iter()
        .filter(|r| r["event"] == "memory_pressure" && r["cgroup"]["id"] == id)
        .collect();
    assert!(warned.is_empty(), "no warning for page cache: {warned:?}");
    drop(root);
}

fn metric_f64(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The JavaScript of the stuck process: it retains heap until its RSS reaches `target` MiB,
/// then only makes garbage, which keeps its collector and code busy.
const STUCK_JS: &str = "\
const target = (+process.argv[2]) * 1048576;
const keep = [];
setInterval(() => {
  const chunk = [];
  for (let i = 0; i < 16384; i++) chunk.push({ i, s: 'x' + i });
  if (process.memoryUsage().rss < target) keep.push(chunk);
}, 10);
";

/// Copies `node` (and a `libnode` it links, if any) to `dir`, uncached: its code pages are
/// then charged to the cgroup that runs it, where reclaim can evict them.
fn node_copy(dir: &Path) -> Option<(PathBuf, Option<PathBuf>)> {
    let node = ["/usr/bin/node", "/usr/local/bin/node", "/usr/bin/nodejs"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let copy = dir.join("node");
    uncached_copy(&node, &copy);
    let ldd = Command::new("ldd").arg(&node).output().ok()?;
    let mut lib_dir = None;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(lib) = line
            .split("=>")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        if lib.contains("libnode") {
            let libs = dir.join("lib");
            std::fs::create_dir_all(&libs).ok()?;
            let name = Path::new(lib).file_name()?;
            uncached_copy(Path::new(lib), &libs.join(name));
            lib_dir = Some(libs);
        }
    }
    Some((copy, lib_dir))
}

#[test]
fn a_node_process_stuck_at_its_limit_is_reported_as_thrashing() {
    require_host!();
    let _turn = take_turn();
    let dir = Scratch(scratch("thrash"));
    let Some((node, lib_dir)) = node_copy(&dir.0) else {
        skip_test!("no node binary: `cargo xtask bootstrap` installs nodejs");
    };
    let script = dir.0.join("stuck.js");
    std::fs::write(&script, STUCK_JS).expect("script");
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let tree = KubeletTree::new("thrash");
    tree.add("shop", "web-0", UID, "node", NODE_ID);
    let out = tree.0.join("oomtrace.jsonl");
    let agent = start_agent(&tree.0, &out);
    let mut root = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-thrash-{}", std::process::id()),
        None,
    )
    .expect("test root");
    let limit = 96u64 << 20;
    let cg = container(&h, &mut root, NODE_ID, limit);
    let files = files_of(cg);
    let id = std::fs::metadata(&files.dir).expect("cgroup").ino();
    let refaults_before = files.refaults();
    let mut cmd = Command::new(&node);
    // A heap cap far above the limit: V8 does not know the cgroup's limit.
    cmd.args(["--max-old-space-size=256"])
        .arg(&script)
        .arg("90")
        .stdout(Stdio::null());
    if let Some(l) = &lib_dir {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    let started = Instant::now();
    let mut proc = spawn_in(cg, cmd);
    let deadline = started + Duration::from_secs(60);
    let record = loop {
        if let Some(r) = records(&out).into_iter().find(|r| {
            r["event"] == "memory_pressure" && r["cgroup"]["id"] == id && r["thrashing"].is_object()
        }) {
            break r;
        }
        if let Some(status) = proc.try_wait().expect("wait") {
            panic!(
                "node ended ({status}) before a thrashing record; oom_kill {}",
                files.oom_kills()
            );
        }
        assert!(
            Instant::now() < deadline,
            "a thrashing record within 60 s; refaults {} since start, usage {}; records: {:?}",
            files.refaults() - refaults_before,
            files.usage(),
            records(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let found_after = started.elapsed();
    eprintln!("after {found_after:?}: {record}");
    let t = &record["thrashing"];
    // The cgroup's own counters agree: refaults, no OOM kill, the process alive.
    let refaults = files.refaults() - refaults_before;
    let stuck_s = t["stuck_ms"].as_f64().expect("stuck_ms") / 1000.0;
    let per_s = t["refaults_per_s"].as_f64().expect("refaults_per_s");
    assert!(stuck_s >= 2.0, "stuck at least the confirming samples");
    assert!(
        per_s > 0.0 && per_s * 1.0 <= refaults as f64,
        "refaults/s {per_s} within the cgroup's {refaults} since start"
    );
    assert!(
        t["refault_bytes_per_s"].as_f64().expect("bytes") >= 0.01 * limit as f64,
        "at least 1% of the limit a second"
    );
    if let Some(ms) = t["reclaim_stall_ms_per_s"].as_f64() {
        assert!(ms >= 50.0, "reclaim stalls {ms} ms/s");
    }
    let ws = record["working_set_bytes"].as_u64().expect("working set");
    assert!(ws * 10 >= limit * 8 && ws <= limit, "working set {ws}");
    assert_eq!(record["limit_bytes"], limit);
    assert_eq!(record["k8s"]["pod"]["name"], "web-0");
    assert_eq!(files.oom_kills(), 0, "thrashing, not killed");
    assert!(proc.try_wait().expect("wait").is_none(), "node still runs");
    // The metric counts the stuck seconds under the container's names.
    std::thread::sleep(Duration::from_secs(2));
    let metrics = agent.get("/metrics").1;
    let series = "oomtrace_memory_thrashing_seconds_total{namespace=\"shop\",pod=\"web-0\",container=\"node\"}";
    let seconds = metric_f64(&metrics, series).unwrap_or(0.0);
    assert!(
        seconds >= stuck_s && seconds <= started.elapsed().as_secs_f64(),
        "{series} = {seconds}, stuck {stuck_s} s"
    );
    assert!(
        metrics.contains("oomtrace_memory_pressure_records_total{source=\"thrashing\"}"),
        "counted by kind"
    );
    // `explain` tells what it means.
    let saved = dir.0.join("record.jsonl");
    std::fs::write(&saved, format!("{record}\n")).expect("save record");
    let explained = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .arg("explain")
        .arg(&saved)
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&explained.stdout);
    eprintln!("{text}");
    assert!(explained.status.success());
    assert!(text.starts_with("THRASHING at "), "{text}");
    assert!(text.contains("shop/web-0/node"), "{text}");
    assert!(text.contains("why no kill"), "{text}");
    let _ = proc.kill();
    let _ = proc.wait();
    drop(root);
}
