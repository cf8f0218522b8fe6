//! Who else held the budget at a kill (`oom.tasks`, `oom.memcg.children`), from `oomtrace tail
//! -o json` as a user runs it, against the kernel's own task table for the same kill (pid, RSS
//! by type, page tables, swap entries, `oom_score_adj`, and the badness the kernel computes from
//! them), the processes the test started (their `/proc`) and the cgroup files.
mod common;

use std::{sync::mpsc, time::Duration};

use common::{expected_totalpages, kernel_log_of, killed_by, start_hog, Reaped};
use oomtrace::{
    cgroup::{CgroupVersion, MemoryHierarchy},
    testing::{
        kernel_report::{Kmsg, OomReport, TaskRow},
        sandbox::{MemoryCgroup, SpawnOptions},
    },
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

fn tail_one_kill(cgroup: &str) -> (Reaped, mpsc::Receiver<Value>) {
    common::tail_kills(cgroup, 1, &[])
}

/// The kernel's badness of a task-table row: RSS + swap entries + page-table pages +
/// `oom_score_adj` × (totalpages / 1000).
fn table_points(row: &TaskRow, totalpages: u64) -> i64 {
    (row.rss_pages + row.swapents + row.pgtables_bytes / page_size()) as i64
        + i64::from(row.oom_score_adj) * (totalpages / 1000) as i64
}

fn row(report: &OomReport, pid: u32) -> &TaskRow {
    report
        .tasks
        .iter()
        .find(|t| t.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} in the kernel's task table: {:?}", report.tasks))
}

fn task(v: &Value, pid: u32) -> &Value {
    v["oom"]["tasks"]["top"]
        .as_array()
        .expect("oom.tasks.top")
        .iter()
        .find(|t| t["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} in oom.tasks.top: {v}"))
}

/// A process's own `/proc/PID/status` value in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} of {pid}"))
}

/// How far an mm's RSS counter may read from its exact value, in pages. Since 6.2 the counters
/// are per-CPU: the kernel's task table reads their approximate value (`get_mm_counter`), off by
/// less than the batch (`max(32, 2 × CPUs)`) on each CPU; since 6.16 `/proc/PID/status` sums
/// them exactly. Before 6.16 both read the same number.
fn percpu_slack() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as u64;
    cpus * (2 * cpus).max(32)
}

/// Asserts `ours` (exact) and the kernel's table value `theirs` agree within [`percpu_slack`].
fn assert_near(ours: u64, theirs: u64, slack: u64, what: &str) {
    assert!(
        ours.abs_diff(theirs) < slack,
        "{what}: oomtrace {ours}, the kernel's table {theirs}, more than {slack} apart"
    );
}

/// A process that is not the victim, in oomtrace's table: equal to its own `/proc` (it sits
/// idle, holding its memory), and to its row in the kernel's table (RSS within the per-CPU
/// counters' slack, the rest exactly).
fn assert_bystander(v: &Value, report: &OomReport, pid: u32, comm: &str, cgroup: &str) {
    let t = task(v, pid);
    let k = row(report, pid);
    let page = page_size();
    let totalpages = expected_totalpages(report);
    assert_eq!(t["comm"], comm);
    assert_eq!(k.name, comm);
    assert_eq!(t["cgroup"]["path"], cgroup);
    assert_eq!(t["victim"], false);
    let anon = t["anon_rss_bytes"].as_u64().expect("anon");
    let file = t["file_rss_bytes"].as_u64().expect("file");
    let shmem = t["shmem_rss_bytes"].as_u64().expect("shmem");
    assert_eq!(anon, status_kb(pid, "RssAnon") << 10, "{comm}: its /proc");
    assert_eq!(file, status_kb(pid, "RssFile") << 10, "{comm}: its /proc");
    assert_eq!(shmem, status_kb(pid, "RssShmem") << 10, "{comm}: its /proc");
    let slack = percpu_slack();
    assert_near((anon + file + shmem) / page, k.rss_pages, 3 * slack, "rss");
    if let (Some(a), Some(f), Some(s)) = (k.rss_anon_pages, k.rss_file_pages, k.rss_shmem_pages) {
        assert_near(anon / page, a, slack, "rss_anon");
        assert_near(file / page, f, slack, "rss_file");
        assert_near(shmem / page, s, slack, "rss_shmem");
    }
    assert_eq!(t["pgtables_bytes"], k.pgtables_bytes, "{comm}: pgtables");
    let swap = t["swap_bytes"].as_u64().expect("swap");
    assert_near(swap / page, k.swapents, slack, "swapents");
    assert_eq!(t["oom_score_adj"], k.oom_score_adj, "{comm}: oom_score_adj");
    let points = t["points"].as_i64().expect("points");
    let theirs = table_points(k, totalpages);
    assert_near(
        points.unsigned_abs(),
        theirs.unsigned_abs(),
        4 * slack,
        "points",
    );
    assert_eq!(points.signum(), theirs.signum(), "{comm}: points' sign");
    eprintln!(
        "{comm}: points {points}, the kernel's table {theirs}; rss {} vs {} pages",
        (anon + file + shmem) / page,
        k.rss_pages
    );
}

/// The victim's row: the kill record's numbers (the kernel's `Killed process` line), and the
/// points the kernel chose it with.
fn assert_victim(v: &Value, report: &OomReport, pid: u32, cgroup: &str) {
    let t = task(v, pid);
    let k = &report.killed;
    assert_eq!(t["victim"], true);
    assert_eq!(t["comm"], k.comm);
    assert_eq!(t["cgroup"]["path"], cgroup);
    assert_eq!(t["anon_rss_bytes"], k.anon_rss_kb << 10);
    assert_eq!(t["file_rss_bytes"], k.file_rss_kb << 10);
    assert_eq!(t["shmem_rss_bytes"], k.shmem_rss_kb << 10);
    assert_eq!(t["pgtables_bytes"], k.pgtables_kb << 10);
    assert_eq!(t["oom_score_adj"], k.oom_score_adj);
    let totalpages = expected_totalpages(report);
    let points = if common::expect_kernel_context() {
        // The kernel's own chosen_points: its task table's numbers at the choice.
        table_points(row(report, pid), totalpages)
    } else {
        // Computed from the record, which the kernel took a moment after choosing.
        let rss = (k.anon_rss_kb + k.file_rss_kb + k.shmem_rss_kb) << 10;
        ((rss + (k.pgtables_kb << 10)) / page_size()) as i64
            + i64::from(k.oom_score_adj) * (totalpages / 1000) as i64
    };
    assert_eq!(t["points"], points, "victim points: {v}");
}

/// The usage file of a cgroup directory.
fn usage(dir: &std::path::Path, version: CgroupVersion) -> u64 {
    let file = match version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    std::fs::read_to_string(dir.join(file))
        .expect("usage file")
        .trim()
        .parse()
        .expect("usage")
}

/// A pod-like parent with a 64 MiB limit: a sidecar child holding 36 MiB (most of the budget
/// once the app's share of the binary's pages is counted) and an app child growing until the
/// kernel kills it. The app's `oom_score_adj` is 500 (a container with no memory request), so
/// the kernel picks it over the larger sidecar.
#[test]
fn a_sidecar_holding_most_of_a_pod_budget() {
    require_host!();
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let name = format!("oomtrace-test-domain-pod-{}", std::process::id());
    let mut pod = MemoryCgroup::create(&h, &name, Some(64 * MIB)).expect("pod cgroup");
    let pod_path = pod.path().to_string();
    let (tail, records) = tail_one_kill(&pod_path);
    let mut kmsg = Kmsg::open_at_end().expect("/dev/kmsg");

    let sidecar_cg = pod.child(&h, "sidecar", None).expect("sidecar cgroup");
    let sidecar_path = sidecar_cg.path().to_string();
    let sidecar_dir = sidecar_cg.dir().to_path_buf();
    let sidecar = Reaped(start_hog(
        sidecar_cg,
        &["--comm", "oomt-sidecar", "--anon-mb", "36"],
        &SpawnOptions::default(),
        true,
    ));
    let sidecar_pid = sidecar.0.id();
    let app_cg = pod.child(&h, "app", None).expect("app cgroup");
    let app_path = app_cg.path().to_string();
    let opts = SpawnOptions {
        oom_score_adj: Some(500),
        uid: None,
    };
    let mut app = start_hog(app_cg, &["--comm", "oomt-app"], &opts, false);
    let app_pid = app.id();
    assert_eq!(
        killed_by(&mut app, WAIT),
        Some(9),
        "the kernel kills the app"
    );

    let v = records.recv_timeout(WAIT).expect("oomtrace's record");
    let (report, log) = kernel_log_of(&mut kmsg, app_pid, WAIT);
    eprintln!("oom: {}", v["oom"]);
    assert_eq!(v["victim"]["pid"], app_pid);
    assert_eq!(v["oom"]["memcg"]["path"], pod_path);

    // oom.tasks: the kernel's task table, the processes this test started.
    let tasks = &v["oom"]["tasks"];
    assert_eq!(tasks["source"], "proc");
    let age = tasks["age_ms"].as_f64().expect("age_ms");
    assert!((0.0..1000.0).contains(&age), "read within a second: {age}");
    let mut table: Vec<u32> = report.tasks.iter().map(|t| t.pid).collect();
    table.sort();
    let mut expected = vec![sidecar_pid, app_pid];
    expected.sort();
    assert_eq!(table, expected, "the kernel's table: the two hogs");
    assert_eq!(tasks["count"], 2);
    let top: Vec<u64> = tasks["top"]
        .as_array()
        .expect("top")
        .iter()
        .map(|t| t["pid"].as_u64().expect("pid"))
        .collect();
    assert_eq!(
        top,
        [u64::from(app_pid), u64::from(sidecar_pid)],
        "by points"
    );
    assert_bystander(&v, &report, sidecar_pid, "oomt-sidecar", &sidecar_path);
    assert_victim(&v, &report, app_pid, &app_path);
    assert!(
        task(&v, sidecar_pid)["anon_rss_bytes"].as_u64()
            > task(&v, app_pid)["anon_rss_bytes"].as_u64(),
        "the sidecar holds more than the app it outlived"
    );

    // oom.memcg.children: the cgroup files, read here while the sidecar still holds its memory.
    let children = &v["oom"]["memcg"]["children"];
    assert_eq!(children["source"], "cgroup_files");
    let top = children["top"].as_array().expect("children.top");
    assert_eq!(top.len(), 2, "{children}");
    assert_eq!(top[0]["path"], sidecar_path, "the sidecar uses the most");
    let sidecar_usage = usage(&sidecar_dir, h.version);
    assert_eq!(top[0]["usage_bytes"], sidecar_usage);
    assert!(top[0].get("limit_bytes").is_none(), "no limit of its own");
    let share = (sidecar_usage as f64 / (64 * MIB) as f64 * 10_000.0).round() / 10_000.0;
    assert_eq!(top[0]["share"], share);
    assert!(share > 0.5, "most of the budget: {share}");
    assert_eq!(top[1]["path"], app_path);
    match h.version {
        CgroupVersion::V2 => assert_eq!(v["oom"]["group_kill"], false),
        CgroupVersion::V1 => assert!(v["oom"].get("group_kill").is_none()),
    }
    assert!(v["oom"].get("overcommit").is_none(), "a memcg OOM");

    // The verdict: the sidecar held the pod's budget (its usage as the cgroup file says, its
    // share of the pod's usage at the kill); the +500 also made the app the victim.
    let top = &v["diagnosis"][0];
    assert_eq!(top["code"], "sidecar_share", "{}", v["diagnosis"]);
    assert_eq!(top["severity"], "critical");
    let ev = &top["evidence"];
    assert_eq!(ev["sidecar_cgroup"], sidecar_path);
    assert_eq!(ev["sidecar_usage_bytes"], sidecar_usage);
    assert_eq!(ev["victim_cgroup"], app_path);
    assert_eq!(ev["oom_memcg"], pod_path);
    // The pod's usage at the kill, as the record and (within 1% of the limit, printed a moment
    // later) the kernel's report give it.
    assert_eq!(ev["budget_bytes"], v["oom"]["memcg"]["usage_bytes"]);
    let budget = ev["budget_bytes"].as_u64().expect("budget");
    let kernel = report.memcg_usage.as_ref().expect("memory: line").usage_kb * 1024;
    assert!(
        budget.abs_diff(kernel) <= 64 * MIB / 100,
        "{kernel} vs {budget}"
    );
    assert_eq!(
        ev["victim_anon_rss_bytes"],
        report.killed.anon_rss_kb * 1024
    );
    let not_largest = v["diagnosis"]
        .as_array()
        .and_then(|d| d.iter().find(|f| f["code"] == "victim_not_largest"))
        .unwrap_or_else(|| panic!("the +500 named: {}", v["diagnosis"]));
    assert_eq!(not_largest["evidence"]["largest_pid"], sidecar_pid);
    assert_eq!(not_largest["evidence"]["victim_oom_score_adj"], 500);
    common::assert_kernel_log_agrees(&v, &log);
    drop((sidecar, tail));
}

/// Whether this process may lower `oom_score_adj` below 0 (`CAP_SYS_RESOURCE`).
fn can_protect() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// A large process protected with `oom_score_adj` -500 beside a smaller one that grows: the
/// kernel kills the smaller. oomtrace's table shows the larger with the higher RSS and the
/// lower points, as the kernel's own table does. Without `CAP_SYS_RESOURCE` (this host's
/// container) no process may go below 0, so the same ranking is made from the other side: the
/// large one at 0 and the small one at +500.
#[test]
fn a_protected_large_process_beside_a_smaller_victim() {
    require_host!();
    let (large_adj, small_adj) = if can_protect() {
        (-500, 0)
    } else {
        eprintln!("no CAP_SYS_RESOURCE: the large process at 0, the victim at +500 instead");
        (0, 500)
    };
    let h = MemoryHierarchy::detect().expect("hierarchy");
    let name = format!("oomtrace-test-domain-adj-{}", std::process::id());
    let cg = MemoryCgroup::create(&h, &name, Some(64 * MIB)).expect("cgroup");
    let (tail, records) = tail_one_kill(cg.path());
    let mut kmsg = Kmsg::open_at_end().expect("/dev/kmsg");
    let large = Reaped(start_hog(
        &cg,
        &["--comm", "oomt-large", "--anon-mb", "40"],
        &SpawnOptions {
            oom_score_adj: Some(large_adj),
            uid: None,
        },
        true,
    ));
    let large_pid = large.0.id();
    let opts = SpawnOptions {
        oom_score_adj: Some(small_adj),
        uid: None,
    };
    let mut small = start_hog(&cg, &["--comm", "oomt-small"], &opts, false);
    let small_pid = small.id();
    assert_eq!(
        killed_by(&mut small, WAIT),
        Some(9),
        "the kernel kills the small one"
    );

    let v = records.recv_timeout(WAIT).expect("oomtrace's record");
    let (report, log) = kernel_log_of(&mut kmsg, small_pid, WAIT);
    eprintln!("oom.tasks: {}", v["oom"]["tasks"]);
    assert_eq!(v["victim"]["pid"], small_pid);
    assert_eq!(v["oom"]["tasks"]["count"], 2);
    assert_bystander(&v, &report, large_pid, "oomt-large", cg.path());
    assert_victim(&v, &report, small_pid, cg.path());
    let (l, s) = (task(&v, large_pid), task(&v, small_pid));
    let rss = |t: &Value| {
        ["anon_rss_bytes", "file_rss_bytes", "shmem_rss_bytes"]
            .iter()
            .map(|k| t[k].as_u64().expect("rss"))
            .sum::<u64>()
    };
    assert!(rss(l) > rss(s), "the large one holds more: {l} {s}");
    assert!(
        l["points"].as_i64() < s["points"].as_i64(),
        "and has fewer points: {l} {s}"
    );
    assert_eq!(
        v["oom"]["tasks"]["top"][0]["pid"], small_pid,
        "the victim first"
    );
    // The kernel's table says the same.
    let (kl, ks) = (row(&report, large_pid), row(&report, small_pid));
    let totalpages = expected_totalpages(&report);
    assert!(kl.rss_pages > ks.rss_pages);
    assert!(table_points(kl, totalpages) < table_points(ks, totalpages));
    assert_eq!((kl.oom_score_adj, ks.oom_score_adj), (large_adj, small_adj));
    // The victim sat in the OOM memcg itself: no children to show.
    assert!(v["oom"]["memcg"].get("children").is_none());

    // The verdict: the adjustment, not the size, chose the victim; its numbers are the kernel
    // table's adj values and the sizes of the processes this test started.
    let top = &v["diagnosis"][0];
    assert_eq!(top["code"], "victim_not_largest", "{}", v["diagnosis"]);
    let ev = &top["evidence"];
    assert_eq!(ev["victim_pid"], small_pid);
    assert_eq!(ev["largest_pid"], large_pid);
    assert_eq!(ev["largest_comm"], "oomt-large");
    assert_eq!(ev["largest_oom_score_adj"], kl.oom_score_adj);
    assert_eq!(ev["victim_oom_score_adj"], ks.oom_score_adj);
    assert_eq!(ev["largest_points"], l["points"]);
    assert_eq!(ev["victim_points"], s["points"]);
    let from_log = common::assert_kernel_log_agrees(&v, &log);
    // The kernel log's verdict rests on the kernel's own table.
    let klog_top = &from_log["diagnosis"][0];
    assert_eq!(klog_top["code"], "victim_not_largest", "{from_log}");
    assert_eq!(klog_top["evidence"]["largest_pid"], large_pid);
    assert_eq!(
        klog_top["evidence"]["largest_points"],
        table_points(kl, totalpages)
    );
    drop((large, tail));
}
