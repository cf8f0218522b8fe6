//! `oomtrace agent` as a separate process: real OOM kills in memory cgroups named as the
//! kubelet's systemd driver names them, with a kubelet-style log tree in a temp dir passed by
//! `--host-log-dir`. Checks the records' Kubernetes names and scope, `/metrics`, `/healthz`,
//! SIGTERM, and file rotation, against the cgroups and names the test made.
mod common;

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{killed_by, start_hog, systemd_pod, KubeletTree};
use oomtrace::{
    cgroup::MemoryHierarchy,
    testing::sandbox::{MemoryCgroup, SpawnOptions},
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

type Agent = common::agent::AgentProcess;

/// One test at a time: every agent records every kill on the machine, so one test's kills
/// (the storm's 24) would land in another's output, and push the rotation test's lines past
/// its ten 1 KiB files.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// An agent with the kubelet-style log tree `tree`, writing `out`, stdout to nowhere.
fn start_agent(tree: &Path, out: &Path, extra: &[&str]) -> Agent {
    spawn_agent(tree, out, extra, Stdio::null(), true)
}

/// An agent whose stdout is `stdout` (with `--no-stdout` when `no_stdout`).
fn spawn_agent(tree: &Path, out: &Path, extra: &[&str], stdout: Stdio, no_stdout: bool) -> Agent {
    let (tree, out) = (tree.to_str().expect("UTF-8"), out.to_str().expect("UTF-8"));
    // --no-pin: a test leaves nothing attached behind (tests/restart.rs tests pinning).
    let mut args = vec!["--no-pin", "--node-name", "node-a", "--host-log-dir", tree];
    args.extend(["--output-file", out]);
    args.extend(no_stdout.then_some("--no-stdout"));
    args.extend(extra);
    Agent::start(&args, stdout, None)
}

/// The value of one sample line of `/metrics`, 0 when absent.
fn sample(metrics: &str, series: &str) -> u64 {
    common::agent::metric(metrics, series).unwrap_or(0)
}

/// The value of one sample line of `/metrics` as a float.
fn sample_f64(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Every JSON line of `path` and its rotated siblings `path.N`, oldest first.
fn records(path: &Path) -> Vec<Value> {
    let test = common::test_name();
    let mut files: Vec<PathBuf> = (1..=20)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", path.display())))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_path_buf());
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .map(|l| {
            common::parse_json_line(&l, &test)
                .unwrap_or_else(|e| panic!("a whole JSON line: {e}: {l}"))
        })
        .collect()
}

/// Waits until the output files hold a record for each of `pids`.
fn wait_records(path: &Path, pids: &[u32]) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = records(path);
        let found: Vec<Value> = pids
            .iter()
            .filter_map(|&p| all.iter().find(|r| r["victim"]["pid"] == p).cloned())
            .collect();
        if found.len() == pids.len() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "records for {pids:?} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const U1: &str = "5f0a8c1e-3b2d-4c6e-9f7a-1b2c3d4e5f60";
const U2: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const A1: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
const S1: &str = "aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";
const A2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const S2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

#[test]
fn agent_names_kubernetes_kills_counts_them_and_exits_cleanly() {
    require_host!();
    let _turn = take_turn();
    let tree = KubeletTree::new("names");
    tree.add("shop", "cart-7d9f8b6c5-x2x4z", U1, "app", A1);
    tree.add("shop", "cart-7d9f8b6c5-x2x4z", U1, "istio-proxy", S1);
    tree.add("search", "search-0", U2, "app", A2);
    tree.add("search", "search-0", U2, "sidecar", S2);
    let out = tree.0.join("oomtrace.jsonl");
    let mut agent = start_agent(&tree.0, &out, &[]);
    let before = agent.get("/metrics").1;

    let h = MemoryHierarchy::detect().expect("hierarchy");
    // The kubelet's systemd-driver layout, under a unique test root.
    let mut root = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-k8s-{}", std::process::id()),
        None,
    )
    .expect("test root");
    let kubepods = root.child(&h, "kubepods.slice", None).expect("kubepods");

    // 1. A burstable pod whose app container has its own 40 MiB limit: scope container.
    let burstable = kubepods
        .child(&h, "kubepods-burstable.slice", None)
        .expect("qos");
    let pod1 = burstable
        .child(
            &h,
            &format!("kubepods-burstable-pod{}.slice", systemd_pod(U1)),
            None,
        )
        .expect("pod");
    let app1 = pod1
        .child(&h, &format!("cri-containerd-{A1}.scope"), Some(40 << 20))
        .expect("container");
    let mut hog1 = start_hog(
        app1,
        &["--comm", "oomt-cart"],
        &SpawnOptions::default(),
        false,
    );
    let pid1 = hog1.id();
    assert_eq!(killed_by(&mut hog1, WAIT), Some(9));

    // The cart pod's proxy held at half its 32 MiB limit: its usage ratio, as the cgroup
    // file says, under the container's names (checked below).
    let proxy = pod1
        .child(&h, &format!("cri-containerd-{S1}.scope"), Some(32 << 20))
        .expect("proxy");
    let mut holder = start_hog(
        proxy,
        &["--comm", "oomt-proxy", "--anon-mb", "16"],
        &SpawnOptions::default(),
        true,
    );
    let held_since = std::time::Instant::now();
    let proxy_dir = proxy.dir().to_path_buf();

    // 2. A guaranteed pod limited to 64 MiB as a whole: an idle sidecar and an app that grows.
    let pod2 = kubepods
        .child(
            &h,
            &format!("kubepods-pod{}.slice", systemd_pod(U2)),
            Some(64 << 20),
        )
        .expect("pod");
    let side = pod2
        .child(&h, &format!("cri-containerd-{S2}.scope"), None)
        .expect("sidecar");
    let mut sidecar = start_hog(
        side,
        &["--comm", "oomt-sidecar", "--anon-mb", "12"],
        &SpawnOptions::default(),
        true,
    );
    let app2 = pod2
        .child(&h, &format!("cri-containerd-{A2}.scope"), None)
        .expect("app");
    let mut hog2 = start_hog(
        app2,
        &["--comm", "oomt-search"],
        &SpawnOptions::default(),
        false,
    );
    let pid2 = hog2.id();
    assert_eq!(killed_by(&mut hog2, WAIT), Some(9));
    assert_eq!(
        sidecar.try_wait().expect("wait"),
        None,
        "the small sidecar lives"
    );

    let recs = wait_records(&out, &[pid1, pid2]);
    let (r1, r2) = (&recs[0], &recs[1]);
    eprintln!("container-limit record: {r1}\npod-limit record: {r2}");
    assert_eq!(r1["k8s"]["namespace"]["name"], "shop", "{r1}");
    assert_eq!(r1["k8s"]["pod"]["name"], "cart-7d9f8b6c5-x2x4z");
    assert_eq!(r1["k8s"]["pod"]["uid"], U1);
    assert_eq!(r1["k8s"]["pod"]["qos_class"], "burstable");
    assert_eq!(r1["k8s"]["container"]["name"], "app");
    assert_eq!(r1["k8s"]["node"]["name"], "node-a");
    assert_eq!(r1["container"]["id"], A1);
    assert_eq!(r1["container"]["runtime"], "containerd");
    assert_eq!(r1["oom"]["scope"], "container");
    assert_eq!(r1["oom"]["memcg"]["k8s"]["container"]["name"], "app");

    assert_eq!(r2["k8s"]["namespace"]["name"], "search", "{r2}");
    assert_eq!(r2["k8s"]["pod"]["name"], "search-0");
    assert_eq!(r2["k8s"]["pod"]["qos_class"], "guaranteed");
    assert_eq!(r2["k8s"]["container"]["name"], "app");
    assert_eq!(r2["container"]["id"], A2);
    assert_eq!(r2["oom"]["scope"], "pod", "the pod's limit was hit");
    assert_eq!(r2["oom"]["memcg"]["k8s"]["pod"]["name"], "search-0");
    assert!(r2["oom"]["memcg"]["k8s"].get("container").is_none(), "{r2}");
    assert_eq!(r2["oom"]["memcg"]["limit_bytes"], 64u64 << 20);

    // /metrics moved by exactly the kills made here.
    let after = agent.get("/metrics").1;
    for (pod, container, scope, ns, record) in [
        ("cart-7d9f8b6c5-x2x4z", "app", "container", "shop", &r1),
        ("search-0", "app", "pod", "search", &r2),
    ] {
        // The reason label is the record's top verdict code.
        let reason = record["diagnosis"][0]["code"].as_str().unwrap_or("none");
        let series = format!(
            "oomtrace_oom_kills_total{{namespace=\"{ns}\",pod=\"{pod}\",container=\"{container}\",constraint=\"memcg\",scope=\"{scope}\",reason=\"{reason}\"}}"
        );
        assert_eq!(
            sample(&after, &series) - sample(&before, &series),
            1,
            "{series}\n{after}"
        );
    }
    assert!(after.contains("oomtrace_build_info{"), "{after}");
    assert_eq!(agent.get("/healthz"), (200, "ok\n".to_string()));
    // The monitor walks the hierarchy every 2 s and samples every second.
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(held_since.elapsed()));
    let usage = oomtrace::cgroup::memory::MemoryFiles::new(&proxy_dir, h.version)
        .usage_bytes()
        .expect("usage");
    let metrics = agent.get("/metrics").1;
    let series = "oomtrace_memory_usage_ratio{namespace=\"shop\",pod=\"cart-7d9f8b6c5-x2x4z\",container=\"istio-proxy\"}";
    let ratio = sample_f64(&metrics, series).unwrap_or_else(|| panic!("{series}\n{metrics}"));
    eprintln!("metrics with a container held at half its limit:\n{metrics}");
    let want = usage as f64 / f64::from(32u32 << 20);
    assert!(
        (ratio - want).abs() < 0.01,
        "{ratio} vs {want} from the cgroup file"
    );
    // Both kills reclaimed first, and the cart container's kill is one of its own events
    // (made after the agent started, so counted from zero).
    assert!(
        sample(&metrics, "oomtrace_memory_reclaims_total") >= 2,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "oomtrace_memory_events_total{event=\"oom_kill\"}") >= 1,
        "{metrics}"
    );
    let _ = holder.kill();
    let _ = holder.wait();

    let status = agent.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    assert_eq!(
        wait_records(&out, &[pid1, pid2]).len(),
        2,
        "every record written"
    );
    let _ = sidecar.kill();
    let _ = sidecar.wait();
}

#[test]
fn agent_rotates_and_reopens_without_losing_a_line() {
    require_host!();
    let _turn = take_turn();
    let tree = KubeletTree::new("rotate");
    let out = tree.0.join("oomtrace.jsonl");
    // Records are over 512 bytes and files at most 1 KiB: every second write rotates.
    let mut agent = start_agent(
        &tree.0,
        &out,
        &["--max-file-size", "1K", "--max-files", "10"],
    );
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let mut pids = Vec::new();
    for i in 0..4 {
        if i == 2 {
            // An external rotation: move the file away and signal SIGHUP.
            std::fs::rename(&out, tree.0.join("moved.jsonl")).expect("move");
            // SAFETY: signalling our own child.
            unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
            std::thread::sleep(Duration::from_millis(200));
        }
        let cg = MemoryCgroup::create(
            &h,
            &format!("oomtrace-test-rot-{}-{i}", std::process::id()),
            Some(32 << 20),
        )
        .expect("cgroup");
        let mut hog = start_hog(
            &cg,
            &["--comm", "oomt-rotate"],
            &SpawnOptions::default(),
            false,
        );
        pids.push(hog.id());
        assert_eq!(killed_by(&mut hog, WAIT), Some(9));
        let _ = wait_records(&out, &pids[pids.len() - 1..]);
    }
    assert_eq!(agent.terminate().code(), Some(0));
    let mut all = records(&tree.0.join("moved.jsonl"));
    all.extend(records(&out));
    for pid in &pids {
        assert_eq!(
            all.iter().filter(|r| r["victim"]["pid"] == *pid).count(),
            1,
            "exactly one whole line for victim {pid}"
        );
    }
    let listing: Vec<String> = std::fs::read_dir(&tree.0)
        .expect("dir")
        .flatten()
        .map(|e| {
            format!(
                "{:?} {}",
                e.file_name(),
                e.metadata().map(|m| m.len()).unwrap_or(0)
            )
        })
        .collect();
    assert!(
        out.with_extension("jsonl.1").exists(),
        "the file rotated: {listing:?}"
    );
}

/// A fake Kubernetes API server: answers the pod list with one pod, holds watches open, takes
/// Event POSTs, and keeps every request (head and body) for the test to inspect.
struct FakeApi {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start(list_body: String) -> FakeApi {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                let list_body = list_body.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream);
                    let mut head = String::new();
                    while reader.read_line(&mut head).is_ok_and(|n| n > 0)
                        && !head.ends_with("\r\n\r\n")
                    {}
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    let _ = reader.read_exact(&mut body);
                    let request = format!("{head}{}", String::from_utf8_lossy(&body));
                    seen.lock().expect("lock").push(request.clone());
                    let mut out = reader.into_inner();
                    let first = request.lines().next().unwrap_or_default().to_string();
                    if first.contains("watch=true") {
                        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                        // Hold the watch open; the agent is killed at the end of the test.
                        std::thread::sleep(Duration::from_secs(120));
                    } else if first.starts_with("GET /api/v1/pods") {
                        let _ = out.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{list_body}", list_body.len()).as_bytes());
                    } else {
                        let _ = out.write_all(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
                    }
                });
            }
        });
        FakeApi { port, requests }
    }

    /// Waits for a request whose text contains `needle`, and returns it.
    fn wait_request(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = self
                .requests
                .lock()
                .expect("lock")
                .iter()
                .find(|r| r.contains(needle))
            {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "no API request with {needle:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// With `--kube-api` (the in-cluster path, pointed at a fake API server) and no kubelet log
/// tree: names, labels and the owning Deployment come from the pod watch, and `--k8s-events`
/// posts an OOMKilling Event on the victim's Pod.
#[test]
fn agent_takes_labels_and_owner_from_the_api_and_posts_an_event() {
    require_host!();
    let _turn = take_turn();
    let tree = KubeletTree::new("api");
    let token = tree.0.join("token");
    std::fs::write(&token, "test-token-123\n").expect("token");
    let pod = serde_json::json!({
        "metadata": {
            "name": "cart-7d9f8b6c5-x2x4z", "namespace": "shop", "uid": U1,
            "labels": { "app": "cart", "pod-template-hash": "7d9f8b6c5" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "cart-7d9f8b6c5", "uid": "0f0f0f0f-0000-4000-8000-000000000001", "controller": true }]
        },
        "spec": { "nodeName": "node-a", "containers": [{ "name": "app" }] },
        "status": { "containerStatuses": [{ "name": "app", "containerID": format!("containerd://{A1}") }] }
    });
    let list = serde_json::json!({ "kind": "PodList", "apiVersion": "v1",
        "metadata": { "resourceVersion": "100" }, "items": [pod] });
    let api = FakeApi::start(list.to_string());
    let out = tree.0.join("oomtrace.jsonl");
    let url = format!("http://127.0.0.1:{}", api.port);
    let token_arg = token.to_string_lossy().into_owned();
    let _agent = start_agent(
        &tree.0,
        &out,
        &[
            "--kube-api",
            &url,
            "--kube-token-file",
            &token_arg,
            "--k8s-events",
        ],
    );
    let listed = api.wait_request("GET /api/v1/pods");
    assert!(
        listed.contains("fieldSelector=spec.nodeName%3Dnode-a"),
        "{listed}"
    );
    assert!(listed.contains("Bearer test-token-123"), "{listed}");
    api.wait_request("watch=true");

    let h = MemoryHierarchy::detect().expect("hierarchy");
    let mut root = MemoryCgroup::create(
        &h,
        &format!("oomtrace-test-k8sapi-{}", std::process::id()),
        None,
    )
    .expect("test root");
    let ctr = root
        .child(&h, "kubepods.slice", None)
        .and_then(|k| k.child(&h, "kubepods-burstable.slice", None))
        .and_then(|q| {
            q.child(
                &h,
                &format!("kubepods-burstable-pod{}.slice", systemd_pod(U1)),
                None,
            )
        })
        .and_then(|p| p.child(&h, &format!("cri-containerd-{A1}.scope"), Some(32 << 20)))
        .expect("container cgroup");
    let mut hog = start_hog(
        ctr,
        &["--comm", "oomt-apicart"],
        &SpawnOptions::default(),
        false,
    );
    let pid = hog.id();
    assert_eq!(killed_by(&mut hog, WAIT), Some(9));
    let r = &wait_records(&out, &[pid])[0];
    assert_eq!(r["k8s"]["namespace"]["name"], "shop", "{r}");
    assert_eq!(r["k8s"]["pod"]["name"], "cart-7d9f8b6c5-x2x4z");
    assert_eq!(r["k8s"]["pod"]["labels"]["app"], "cart");
    assert_eq!(r["k8s"]["container"]["name"], "app");
    assert_eq!(r["k8s"]["deployment"]["name"], "cart");
    assert_eq!(r["k8s"]["owner"]["kind"], "Deployment");

    let posted = api.wait_request("/apis/events.k8s.io/v1/namespaces/shop/events");
    assert!(posted.starts_with("POST "), "{posted}");
    let body = &posted[posted.find("\r\n\r\n").expect("body") + 4..];
    let event: Value = serde_json::from_str(body).expect("Event JSON");
    assert_eq!(event["reason"], "OOMKilling", "{event}");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["uid"], U1);
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|m| m.contains("oomt-apicart")),
        "{event}"
    );
    // The note starts with the verdict's headline: the record's top code and its summary.
    let headline = format!(
        "{}: {}",
        r["diagnosis"][0]["code"].as_str().expect("a verdict"),
        r["diagnosis"][0]["summary"].as_str().expect("a summary")
    );
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|m| m.starts_with(&headline[..headline.len().min(200)])),
        "{event}\n{headline}"
    );
}

/// A log shipper that stops reading the agent's stdout (a pipe of one page, never read while the
/// kills happen): every kill still reaches `--output-file` at once, `/healthz` and `/metrics`
/// answer, and once the reader comes back stdout has every kill too, in order, none dropped.
#[test]
fn a_stalled_stdout_stops_neither_capture_nor_the_file_nor_health() {
    require_host!();
    let _turn = take_turn();
    use std::os::fd::AsRawFd;
    let tree = KubeletTree::new("stall");
    let out = tree.0.join("oomtrace.jsonl");
    let mut agent = spawn_agent(&tree.0, &out, &[], Stdio::piped(), false);
    let mut stdout = agent.child.stdout.take().expect("stdout pipe");
    // SAFETY: fcntl on a pipe fd we own; the smallest pipe the kernel allows (one page).
    let size = unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(
        size >= 4096,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let mut pids = Vec::new();
    // Kill records are over 1 KiB: the pipe is full after the first few.
    for i in 0..6 {
        let cg = MemoryCgroup::create(
            &h,
            &format!("oomtrace-test-stall-{}-{i}", std::process::id()),
            Some(32 << 20),
        )
        .expect("cgroup");
        let mut hog = start_hog(
            &cg,
            &["--comm", "oomt-stall"],
            &SpawnOptions::default(),
            false,
        );
        pids.push(hog.id());
        assert_eq!(killed_by(&mut hog, WAIT), Some(9));
        // Each kill reaches the file while stdout is stalled.
        let _ = wait_records(&out, &pids[pids.len() - 1..]);
        let (status, _) = agent.get("/healthz");
        assert_eq!(status, 200, "/healthz answers while stdout is stalled");
    }
    let (status, metrics) = agent.get("/metrics");
    assert_eq!(status, 200);
    let kills: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("oomtrace_oom_kills_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(kills >= pids.len() as u64, "every kill counted: {metrics}");
    assert_eq!(
        sample(&metrics, "oomtrace_records_dropped_total{sink=\"stdout\"}"),
        0,
        "the stdout queue held every record"
    );
    assert_eq!(sample(&metrics, "oomtrace_events_lost_total"), 0);
    // The reader comes back: the queued records flow, then SIGTERM ends the agent cleanly.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.terminate().code(), Some(0));
    let text = reader.join().expect("reader");
    assert!(
        text.len() > 2 * 4096,
        "more than the pipe holds was written, so the writer was stalled: {} bytes",
        text.len()
    );
    let test = common::test_name();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| common::parse_json_line(l, &test).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let stdout_pids: Vec<u32> = lines
        .iter()
        .filter(|r| {
            r["event"] == "oom_kill"
                && pids.contains(&(r["victim"]["pid"].as_u64().unwrap_or(0) as u32))
        })
        .map(|r| r["victim"]["pid"].as_u64().unwrap_or(0) as u32)
        .collect();
    assert_eq!(stdout_pids, pids, "stdout has every kill once, in order");
}

/// The kernel's count of OOM kills in one memory cgroup: `oom_kill` in v2's `memory.events`
/// or v1's `memory.oom_control` (kernels since 4.13).
fn cgroup_oom_kills(cg: &MemoryCgroup) -> Option<u64> {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cg.dir().join(f)).ok())?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// A storm: 24 cgroups whose hogs all start allocating at the same moment, so the kernel kills
/// them back to back. Every victim the test started has exactly one record, the kernel's own
/// per-cgroup kill counts agree, and nothing was lost or dropped.
#[test]
fn a_storm_of_simultaneous_kills_loses_none() {
    require_host!();
    let _turn = take_turn();
    const N: usize = 24;
    let tree = KubeletTree::new("storm");
    let out = tree.0.join("oomtrace.jsonl");
    let agent = start_agent(&tree.0, &out, &["--reconcile-interval", "1"]);
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let cgroups: Vec<MemoryCgroup> = (0..N)
        .map(|i| {
            MemoryCgroup::create(
                &h,
                &format!("oomtrace-test-storm-{}-{i}", std::process::id()),
                Some(16 << 20),
            )
            .expect("cgroup")
        })
        .collect();
    let start_at = Instant::now() + Duration::from_millis(1500);
    let mut hogs: Vec<Child> = cgroups
        .iter()
        .map(|cg| {
            let delay = start_at.saturating_duration_since(Instant::now());
            cg.spawn(
                common::hog(&[
                    "--comm",
                    "oomt-storm",
                    "--delay-ms",
                    &delay.as_millis().to_string(),
                ]),
                &SpawnOptions::default(),
            )
            .expect("hog starts")
        })
        .collect();
    let pids: Vec<u32> = hogs.iter().map(Child::id).collect();
    for hog in &mut hogs {
        assert_eq!(
            killed_by(hog, WAIT),
            Some(9),
            "the kernel kills hog {}",
            hog.id()
        );
    }
    let found = wait_records(&out, &pids);
    for pid in &pids {
        assert_eq!(
            records(&out)
                .iter()
                .filter(|r| r["event"] == "oom_kill" && r["victim"]["pid"] == *pid)
                .count(),
            1,
            "one record for victim {pid}"
        );
    }
    for (cg, pid) in cgroups.iter().zip(&pids) {
        let record = found
            .iter()
            .find(|r| r["victim"]["pid"] == *pid)
            .expect("record");
        assert_eq!(
            record["oom"]["memcg"]["path"].as_str(),
            Some(cg.path()),
            "victim {pid}'s cgroup"
        );
        if let Some(n) = cgroup_oom_kills(cg) {
            assert_eq!(n, 1, "the kernel counted one kill in {}", cg.path());
        }
    }
    // Two reconcile passes after the last kill: the kernel's count and the records agree.
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = agent.get("/metrics").1;
    for (series, want) in [
        ("oomtrace_events_lost_total", 0),
        ("oomtrace_records_dropped_total{sink=\"file\"}", 0),
        ("oomtrace_oom_kills_unrecorded_total", 0),
    ] {
        assert_eq!(sample(&metrics, series), want, "{series}: {metrics}");
    }
    eprintln!("storm: {N} kills, {N} records; lost 0, dropped 0, unrecorded 0");
}
