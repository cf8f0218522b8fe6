//! Bounds, through the real binary, while real OOM kills happen in memory cgroups: the agent's
//! `--output-file` on a full filesystem (a small tmpfs the test mounts), and its metrics port
//! under a flood of idle connections. Nothing the test killed may be lost, and the file stays
//! whole JSON Lines.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use common::{agent::AgentProcess, killed_by, start_hog, systemd_pod, KubeletTree};
use oomtrace::{
    cgroup::MemoryHierarchy,
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A running agent and its JSON lines on stdout.
struct Agent {
    process: AgentProcess,
    stdout: Option<mpsc::Receiver<Value>>,
}

impl std::ops::Deref for Agent {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut AgentProcess {
        &mut self.process
    }
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let mut all = vec!["--no-pin", "--node-name", "node-b"];
        all.extend(args);
        let mut process = AgentProcess::start(&all, Stdio::piped(), None);
        let test = common::test_name();
        let out = process.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v = common::parse_json_line(&line, &test)
                    .unwrap_or_else(|e| panic!("stdout: not a whole JSON line: {e}: {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Agent {
            process,
            stdout: Some(rx),
        }
    }

    /// Waits until stdout has carried a kill record for each of `pids`; every kill record of
    /// those pids seen, in order (other processes' records are skipped).
    fn stdout_kills(&mut self, pids: &[u32]) -> Vec<Value> {
        let rx = self.stdout.as_ref().expect("stdout read");
        let deadline = Instant::now() + WAIT;
        let mut found: Vec<Value> = Vec::new();
        while !pids
            .iter()
            .all(|p| found.iter().any(|r| r["victim"]["pid"] == *p))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => {
                    let pid = v["victim"]["pid"].as_u64().unwrap_or(0);
                    if v["event"] == "oom_kill" && pids.iter().any(|&p| u64::from(p) == pid) {
                        found.push(v);
                    }
                }
                Err(_) => panic!("stdout: records for {pids:?} within {WAIT:?}: {found:?}"),
            }
        }
        // Anything already queued behind them (a duplicate would be there).
        std::thread::sleep(Duration::from_millis(300));
        while let Ok(v) = rx.try_recv() {
            let pid = v["victim"]["pid"].as_u64().unwrap_or(0);
            if v["event"] == "oom_kill" && pids.iter().any(|&p| u64::from(p) == pid) {
                found.push(v);
            }
        }
        found
    }
}

/// The value of one sample line of `/metrics`.
fn sample(metrics: &str, series: &str) -> Option<u64> {
    common::agent::metric(metrics, series)
}

/// A tmpfs of `size` bytes mounted on a fresh temp dir, unmounted and removed on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(tag: &str, size: usize) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("oomtrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}")])
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("mount -t tmpfs failed ({status})"));
        }
        Ok(Self(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the filesystem of `dir` with a file of zeros, then frees `room` bytes of it.
fn fill_leaving(dir: &Path, room: u64) {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let page = [0u8; 4096];
    loop {
        match f.write(&page) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let len = f.metadata().expect("filler size").len();
    f.set_len(len.saturating_sub(room)).expect("free room");
}

#[test]
fn enospc_keeps_the_file_whole_and_stdout_complete() {
    require_host!();
    let fs = match SmallTmpfs::mount("enospc", 64 << 10) {
        Ok(fs) => fs,
        Err(why) => skip_test!("cannot mount a 64 KiB tmpfs: {why}"),
    };
    let out = fs.0.join("oomtrace.jsonl");
    let out_arg = out.to_str().expect("UTF-8 path");
    let mut agent = Agent::start(&["--output-file", out_arg]);
    // Room for a few records: then a write crosses into a page the filesystem cannot give,
    // the kernel writes the part that fits, and the agent must cut it off.
    fill_leaving(&fs.0, 2 * 4096);

    let h = MemoryHierarchy::detect().expect("hierarchy");
    let cg = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-enospc-{}", std::process::id()),
        Some(32 << 20),
    )
    .expect("cgroup");
    let mut pids = Vec::new();
    for _ in 0..6 {
        let mut hog = start_hog(
            &cg,
            &["--comm", "oomt-enospc"],
            &SpawnOptions::default(),
            false,
        );
        pids.push(hog.id());
        assert_eq!(
            killed_by(&mut hog, WAIT),
            Some(9),
            "the kernel kills the hog"
        );
    }
    // stdout: every kill, exactly once.
    let on_stdout = agent.stdout_kills(&pids);
    for pid in &pids {
        assert_eq!(
            on_stdout
                .iter()
                .filter(|r| r["victim"]["pid"] == *pid)
                .count(),
            1,
            "victim {pid} on stdout"
        );
    }
    // The file's writer runs behind its own queue: wait until it has met the full disk.
    let deadline = std::time::Instant::now() + WAIT;
    while sample(
        &agent.get("/metrics").1,
        "oomtrace_output_errors_total{sink=\"file\"}",
    )
    .unwrap_or(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no file error counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The file: whole lines only, however many fitted.
    let text = std::fs::read(&out).expect("read the output file");
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends with a whole line"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a partial line: {e}: {l}")))
        .collect();
    let in_file = lines
        .iter()
        .filter(|r| r["event"] == "oom_kill" && pids.iter().any(|p| r["victim"]["pid"] == *p))
        .count();
    // Which records fitted depends on the order of kills and pressure records.
    assert!(!lines.is_empty(), "some records fitted");
    assert!(in_file < pids.len(), "the filesystem filled up");
    // The failures are counted and exported.
    let metrics = agent.get("/metrics").1;
    let errors = sample(&metrics, "oomtrace_output_errors_total{sink=\"file\"}")
        .unwrap_or_else(|| panic!("the file sink's error counter: {metrics}"));
    assert!(errors > 0, "{metrics}");
    eprintln!(
        "ENOSPC: {} kills on stdout, {in_file} whole in the file ({} lines, {} bytes), \
         oomtrace_output_errors_total{{sink=\"file\"}} {errors}",
        pids.len(),
        lines.len(),
        text.len()
    );
    assert_eq!(agent.terminate().code(), Some(0), "SIGTERM exits 0");
}

/// Keeps `want` connections open to `port` that never send a byte, opening a new one for each
/// that the server closes, until `stop`; counts the connections opened.
fn flood(port: u16, want: usize, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    let connect = || {
        let c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_nonblocking(true).ok()?;
        opened.fetch_add(1, Ordering::Relaxed);
        Some(c)
    };
    let mut open: Vec<TcpStream> = Vec::with_capacity(want);
    while !stop.load(Ordering::Relaxed) {
        let mut byte = [0u8; 1];
        // Closed by the server: EOF (or a reset).
        open.retain_mut(
            |c| matches!(c.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        );
        while open.len() < want {
            match connect() {
                Some(c) => open.push(c),
                None => break,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const FLOOD_UID: &str = "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9";
const FLOOD_ID: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

#[test]
fn idle_connection_flood_leaves_probes_and_kills_intact() {
    require_host!();
    const IDLE: usize = 500;
    const KILLS: usize = 4;
    let pod = format!("flood-{}", std::process::id());
    let tree = KubeletTree::new("flood");
    tree.add("bounds", &pod, FLOOD_UID, "app", FLOOD_ID);
    let out = tree.0.join("oomtrace.jsonl");
    let mut agent = Agent::start(&[
        "--host-log-dir",
        tree.0.to_str().expect("UTF-8 path"),
        "--output-file",
        out.to_str().expect("UTF-8 path"),
    ]);

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, opened, port) = (stop.clone(), opened.clone(), agent.port);
        std::thread::spawn(move || flood(port, IDLE, stop, opened))
    };
    let deadline = Instant::now() + WAIT;
    while opened.load(Ordering::Relaxed) < IDLE as u64 {
        assert!(Instant::now() < deadline, "the flood did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The kubelet's systemd-driver layout, so that the kills have their own metric series.
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let mut root = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-flood-{}", std::process::id()),
        None,
    )
    .expect("test root");
    let app = root
        .child(&h, "kubepods.slice", None)
        .and_then(|k| k.child(&h, "kubepods-burstable.slice", None))
        .and_then(|q| {
            q.child(
                &h,
                &format!("kubepods-burstable-pod{}.slice", systemd_pod(FLOOD_UID)),
                None,
            )
        })
        .and_then(|p| {
            p.child(
                &h,
                &format!("cri-containerd-{FLOOD_ID}.scope"),
                Some(32 << 20),
            )
        })
        .expect("container cgroup");

    let mut probes: Vec<Duration> = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..KILLS {
        let mut hog = start_hog(
            app,
            &["--comm", "oomt-flood"],
            &SpawnOptions::default(),
            false,
        );
        pids.push(hog.id());
        // Probes while the hog grows and is killed.
        let (status, body, took) = agent.get_timed("/healthz");
        assert_eq!(
            (status, body.as_str()),
            (200, "ok\n"),
            "/healthz in the flood"
        );
        probes.push(took);
        assert_eq!(
            killed_by(&mut hog, WAIT),
            Some(9),
            "the kernel kills the hog"
        );
        let (status, body, took) = agent.get_timed("/healthz");
        assert_eq!(
            (status, body.as_str()),
            (200, "ok\n"),
            "/healthz in the flood"
        );
        probes.push(took);
    }
    // Every kill delivered, once, to stdout and to the file.
    let on_stdout = agent.stdout_kills(&pids);
    assert_eq!(on_stdout.len(), KILLS, "one record per kill on stdout");
    let deadline = Instant::now() + WAIT;
    let in_file = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let kills: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a whole JSON line"))
            .filter(|r| pids.iter().any(|p| r["victim"]["pid"] == *p))
            .collect();
        if kills.len() >= KILLS || Instant::now() > deadline {
            break kills;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(in_file.len(), KILLS, "one record per kill in the file");
    for r in &in_file {
        assert_eq!(r["k8s"]["pod"]["name"], pod.as_str(), "{r}");
    }

    // /metrics answers in the flood, and counts exactly these kills under this pod.
    let (status, metrics, took) = agent.get_timed("/metrics");
    assert_eq!(status, 200, "/metrics in the flood");
    probes.push(took);
    let prefix = format!("oomtrace_oom_kills_total{{namespace=\"bounds\",pod=\"{pod}\",");
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, KILLS as u64, "{metrics}");
    let shed = sample(&metrics, "oomtrace_http_connections_shed_total").expect("shed counter");
    assert!(shed > 0, "the flood was over the cap: {metrics}");

    stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flood thread");
    let slowest = probes.iter().max().copied().unwrap_or_default();
    let in_order: Vec<u128> = probes.iter().map(Duration::as_millis).collect();
    eprintln!(
        "flood: {} idle connections opened ({IDLE} held at a time), {shed} shed by the agent; \
         {} probes answered, slowest {slowest:?} (ms, in order: /healthz at each hog's start \
         and after its kill, then /metrics: {in_order:?}); {KILLS} kills recorded",
        opened.load(Ordering::Relaxed),
        probes.len()
    );
    assert_eq!(agent.terminate().code(), Some(0), "SIGTERM exits 0");
}
