//! Shared harness for the host integration tests: a live tracer, the kernel log, throwaway
//! memory cgroups and hog children started from the oomtrace binary.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub(crate) mod agent;
pub(crate) mod containerd;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;

use oomtrace::{
    capture::probes::AttachMode,
    capture::tracer::{Tracer, TracerOptions},
    cgroup::{CgroupResolver, MemoryHierarchy},
    enrich::event::{Action, Enricher, OomKillEvent},
    testing::kernel_report::{self, Kmsg, OomKillSummary, OomReport},
    testing::sandbox::{MemoryCgroup, SpawnOptions},
    timefmt,
};

/// Why this machine cannot run the host tests, if it cannot.
pub(crate) fn skip_reason() -> Option<String> {
    let why = host_skip_reason()?;
    if no_skip() {
        panic!("cannot run here ({why}), and OOMTRACE_TEST_NO_SKIP forbids skipping");
    }
    Some(why)
}

/// Set by the VM matrix: there every test must run, so a skip is a failure.
pub(crate) fn no_skip() -> bool {
    std::env::var_os("OOMTRACE_TEST_NO_SKIP").is_some_and(|v| !v.is_empty())
}

/// The kernel series when running inside `cargo xtask vm-test`'s guest.
pub(crate) fn in_vm() -> Option<String> {
    std::env::var("OOMTRACE_TEST_IN_VM")
        .ok()
        .filter(|v| !v.is_empty())
}

/// The attach mode of the tests: `OOMTRACE_TEST_ATTACH` (the VM matrix forces `kprobe` with
/// it), `auto` by default.
pub(crate) fn attach_mode() -> AttachMode {
    match std::env::var("OOMTRACE_TEST_ATTACH") {
        Ok(v) if !v.is_empty() => AttachMode::from_name(&v)
            .unwrap_or_else(|| panic!("OOMTRACE_TEST_ATTACH={v}: not an attach mode")),
        _ => AttachMode::Auto,
    }
}

/// Hooks the tests' tracers must not use (`OOMTRACE_TEST_SKIP_HOOKS`, comma-separated): how
/// the VM matrix reaches the fallbacks (`fentry/mark_oom_victim`) on kernels with better hooks.
pub(crate) fn skip_hooks() -> Vec<String> {
    std::env::var("OOMTRACE_TEST_SKIP_HOOKS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

/// The hooks every record must name (`OOMTRACE_TEST_EXPECT_HOOKS`, comma-separated): the VM
/// matrix sets them, so that a silent fallback to another hook fails the tests.
pub(crate) fn expected_hooks() -> Option<Vec<String>> {
    let v = std::env::var("OOMTRACE_TEST_EXPECT_HOOKS").ok()?;
    let hooks: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    (!hooks.is_empty()).then_some(hooks)
}

/// Whether the kernel's own OOM context (`oom_kill_process`) must be in every record.
pub(crate) fn expect_kernel_context() -> bool {
    expected_hooks().is_some_and(|h| h.iter().any(|h| h.ends_with("/oom_kill_process")))
}

/// Skips the rest of a test with a reason, or fails it where skipping is forbidden.
#[macro_export]
macro_rules! skip_test {
    ($($why:tt)*) => {{
        let why = format!($($why)*);
        assert!(!common::no_skip(), "cannot run here ({why}), and OOMTRACE_TEST_NO_SKIP forbids skipping");
        eprintln!("SKIPPED: {why}");
        return;
    }};
}

fn host_skip_reason() -> Option<String> {
    if !oomtrace::capture::tracer::is_root() {
        return Some(
            "not root: loading eBPF programs and creating memory cgroups need root".into(),
        );
    }
    if let Err(e) = MemoryHierarchy::detect() {
        return Some(e.to_string());
    }
    None
}

/// Returns early from a test with a printed reason when the machine cannot run it.
#[macro_export]
macro_rules! require_host {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

pub(crate) struct Harness {
    rt: tokio::runtime::Runtime,
    pub tracer: Tracer,
    enricher: Enricher,
    resolver: CgroupResolver,
    pub kmsg: Kmsg,
    pub hierarchy: MemoryHierarchy,
    /// Events received so far, with their receive-minus-kernel latency in µs.
    pub seen: Vec<(OomKillEvent, u64)>,
    /// Every kernel log record read so far.
    kmsg_log: Vec<kernel_report::KmsgRecord>,
    /// Started in the tests' own mode, so [`expected_hooks`] applies to its records.
    check_hooks: bool,
}

impl Harness {
    /// A tracer attached in the tests' mode ([`attach_mode`]).
    pub(crate) fn new() -> Harness {
        Self::start(attach_mode())
    }

    pub(crate) fn start(attach: AttachMode) -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let tracer = rt
            .block_on(async {
                Tracer::start(&TracerOptions {
                    btf: None,
                    attach,
                    require_hooks: true,
                    skip_hooks: skip_hooks(),
                    pressure: None,
                    sigkill: false,
                    pin: None,
                })
            })
            .expect("tracer starts");
        let hierarchy = MemoryHierarchy::detect().expect("memory hierarchy");
        let enricher = Enricher::new(tracer.constraints.clone(), tracer.layout.page_shift)
            .with_names(oomtrace::enrich::names::Namer::new(None), None);
        let resolver = CgroupResolver::new(hierarchy.clone());
        let kmsg = Kmsg::open_at_end().expect("/dev/kmsg");
        Harness {
            rt,
            tracer,
            enricher,
            resolver,
            kmsg,
            hierarchy,
            seen: Vec::new(),
            kmsg_log: Vec::new(),
            check_hooks: attach == attach_mode(),
        }
    }

    /// A throwaway cgroup named after the test, removed on drop.
    pub(crate) fn cgroup(&self, test: &str, limit_mib: u64) -> MemoryCgroup {
        let name = format!("oomtrace-test-{test}-{}", std::process::id());
        MemoryCgroup::create(&self.hierarchy, &name, Some(limit_mib << 20)).expect("cgroup")
    }

    /// Waits for the record of victim `pid`.
    pub(crate) fn event_for(&mut self, pid: u32, timeout: Duration) -> OomKillEvent {
        self.event_matching(&format!("victim pid {pid}"), timeout, |e| {
            e.victim.task.pid == Some(pid)
        })
    }

    /// Waits for the first record `pred` accepts.
    pub(crate) fn event_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&OomKillEvent) -> bool,
    ) -> OomKillEvent {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((e, _)) = self.seen.iter().find(|(e, _)| pred(e)) {
                if let Some(hooks) = expected_hooks().filter(|_| self.check_hooks) {
                    assert_eq!(e.hooks, hooks, "the hooks this kernel must use");
                }
                // The in-process enricher's record (no pressure section, no log tree).
                record_shape(&oomtrace::output::schema::kill_value(e, None), &test_name());
                return e.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no oomtrace record for {what} within {timeout:?}"
            );
            let batch = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.tracer.next_batch()).await });
            let Ok(batch) = batch else { continue };
            let now = timefmt::monotonic_now_ns();
            let batch = batch.expect("ring buffer");
            self.resolver.learn(self.tracer.take_kernel_paths());
            for rec in batch {
                let oomtrace::capture::record::Record::OomKill(rec) =
                    rec.expect("well-formed record")
                else {
                    continue;
                };
                let lost = self.tracer.events_lost();
                let ev = self.enricher.enrich(&rec, lost, Some(&mut self.resolver));
                let latency_us = now.saturating_sub(rec.ktime_ns) / 1000;
                self.seen.push((ev, latency_us));
            }
        }
    }

    /// Receive-minus-kernel latency (µs) of the record for victim `pid`, once received.
    pub(crate) fn latency_us(&self, pid: u32) -> Option<u64> {
        self.seen
            .iter()
            .find(|(e, _)| e.victim.task.pid == Some(pid))
            .map(|(_, l)| *l)
    }

    /// Runs a hog with `args` in `cg` until the kernel kills it (asserting SIGKILL), and returns
    /// its pid with oomtrace's record and the kernel's report of the kill.
    pub(crate) fn kill_hog(
        &mut self,
        cg: &MemoryCgroup,
        args: &[&str],
        opts: &SpawnOptions,
    ) -> (u32, OomKillEvent, OomReport) {
        const WAIT: Duration = Duration::from_secs(30);
        let mut child = start_hog(cg, args, opts, false);
        let pid = child.id();
        assert_eq!(
            killed_by(&mut child, WAIT),
            Some(9),
            "the kernel kills hog {pid}"
        );
        let ev = self.event_for(pid, WAIT);
        let report = self.kernel_report(pid, WAIT);
        (pid, ev, report)
    }

    /// Waits for the kernel's report of the kill of `pid`.
    pub(crate) fn kernel_report(&mut self, pid: u32, timeout: Duration) -> OomReport {
        let is_kill_of = |r: &kernel_report::KmsgRecord| {
            kernel_report::parse_killed_process(&r.message).filter(|k| k.pid == pid)
        };
        if !self.kmsg_log.iter().any(|r| is_kill_of(r).is_some()) {
            let log = &mut self.kmsg_log;
            let found = self
                .kmsg
                .wait_for(timeout, |r| {
                    log.push(r.clone());
                    is_kill_of(r)
                })
                .expect("kmsg readable");
            assert!(
                found.is_some(),
                "no kernel report for pid {pid} within {timeout:?}"
            );
        }
        kernel_report::collect_reports(&self.kmsg_log)
            .into_iter()
            .rfind(|r| r.killed.pid == pid)
            .expect("report assembled")
    }

    /// Pids of every `Killed process` line read from the kernel log so far.
    pub(crate) fn seen_kernel_kills(&self) -> Vec<u32> {
        self.kmsg_log
            .iter()
            .filter_map(|r| kernel_report::parse_killed_process(&r.message))
            .map(|k| k.pid)
            .collect()
    }
}

/// A copy of the oomtrace binary that any uid can execute (the build tree may sit in a
/// directory only root can enter), removed on drop.
pub(crate) struct WorldExecutable {
    dir: std::path::PathBuf,
}

impl WorldExecutable {
    pub(crate) fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("oomtrace-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        std::fs::copy(env!("CARGO_BIN_EXE_oomtrace"), dir.join("oomtrace")).expect("copy binary");
        Self { dir }
    }

    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.dir.join("oomtrace")
    }
}

impl Drop for WorldExecutable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The oomtrace binary, whose hidden `hog` subcommand allocates memory.
pub(crate) fn hog(args: &[&str]) -> Command {
    hog_at(env!("CARGO_BIN_EXE_oomtrace").as_ref(), args)
}

fn hog_at(exe: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("hog").args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    cmd
}

/// Reads lines from `stream` until one contains `marker`; returns the rest of the lines.
pub(crate) fn read_until<R: std::io::Read>(
    stream: R,
    marker: &str,
    who: &str,
) -> std::io::Lines<BufReader<R>> {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(marker) => return lines,
            Some(Ok(_)) => continue,
            other => panic!("{who} ended before printing {marker:?}: {other:?}"),
        }
    }
}

/// Spawns, retrying while exec fails with ETXTBSY: a freshly copied binary can still be open
/// for writing in a child that another test thread forked meanwhile.
pub(crate) fn spawn_retrying_busy<T, E: std::error::Error + 'static>(
    mut spawn: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    fn text_busy(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.raw_os_error() == Some(libc::ETXTBSY) {
                    return true;
                }
            }
            cur = err.source();
        }
        false
    }
    let mut tries = 0;
    loop {
        match spawn() {
            Err(e) if tries < 50 && text_busy(&e) => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The kernel prints the head of its OOM report (the `invoked oom-killer` line through the
/// `oom-kill:` summary the tests compare with) at most 10 times per 5 s. Waits (up to 15 s)
/// until fewer than 8 were printed in the last 5 s, so that the next kill's report is whole:
/// test binaries and their threads provoke kills back to back.
pub(crate) fn wait_for_oom_report_budget() {
    let deadline = Instant::now() + Duration::from_secs(15);
    while recent_oom_report_heads(5_000_000) >= 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `invoked oom-killer` lines in the kernel log within the last `window_usec`.
fn recent_oom_report_heads(window_usec: u64) -> usize {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return 0;
    };
    let since = (timefmt::monotonic_now_ns() / 1000).saturating_sub(window_usec);
    let mut buf = vec![0u8; 16 * 1024];
    let mut n = 0;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(len) => {
                if let Some(r) = kernel_report::parse_kmsg_record(&buf[..len]) {
                    if r.ts_usec >= since && r.message.contains(" invoked oom-killer: ") {
                        n += 1;
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => break,
        }
    }
    n
}

/// Starts a hog in `cg`; with `wait_ready`, waits until it printed `ready` (its target reached).
pub(crate) fn start_hog(
    cg: &MemoryCgroup,
    args: &[&str],
    opts: &SpawnOptions,
    wait_ready: bool,
) -> Child {
    if !wait_ready {
        // This one is meant to be killed: leave the kernel room to report it in full.
        wait_for_oom_report_budget();
    }
    let mut child = if opts.uid.is_some() {
        // Once spawn returns the child has exec'd, so the copy may go.
        let exe = WorldExecutable::new("hog");
        spawn_retrying_busy(|| cg.spawn(hog_at(&exe.path(), args), opts))
    } else {
        cg.spawn(hog(args), opts)
    }
    .expect("hog starts");
    if wait_ready {
        let out = child.stdout.take().expect("piped stdout");
        read_until(out, "ready", &format!("hog {}", child.id()));
    }
    child
}

/// Waits for a child that the kernel is expected to kill, returning the signal that ended it.
pub(crate) fn killed_by(child: &mut Child, timeout: Duration) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let status = oomtrace::testing::sandbox::wait_or_kill(child, timeout).expect("wait");
    status.signal()
}

/// Asserts every field both reports carry is equal.
pub(crate) fn assert_matches_kernel(ev: &OomKillEvent, report: &OomReport) {
    let k = &report.killed;
    let v = &ev.victim;
    let kb = |b: Option<u64>| b.map(|b| b >> 10);
    assert_eq!(v.task.pid, Some(k.pid), "pid");
    assert_eq!(v.task.comm.as_deref(), Some(k.comm.as_str()), "comm");
    assert_eq!(kb(v.total_vm_bytes), Some(k.total_vm_kb), "total-vm");
    assert_eq!(kb(v.anon_rss_bytes), Some(k.anon_rss_kb), "anon-rss");
    assert_eq!(kb(v.file_rss_bytes), Some(k.file_rss_kb), "file-rss");
    assert_eq!(kb(v.shmem_rss_bytes), Some(k.shmem_rss_kb), "shmem-rss");
    assert_eq!(v.uid, Some(k.uid), "UID");
    assert_eq!(kb(v.pgtables_bytes), Some(k.pgtables_kb), "pgtables");
    assert_eq!(v.oom_score_adj, Some(k.oom_score_adj), "oom_score_adj");
    let s: &OomKillSummary = report.summary.as_ref().expect("oom-kill: summary line");
    let constraint = format!(
        "CONSTRAINT_{}",
        ev.oom.constraint.expect("constraint").to_uppercase()
    );
    assert_eq!(constraint, s.constraint, "constraint");
    assert_eq!(
        ev.oom.memcg.as_ref().and_then(|m| m.cgroup.path.clone()),
        s.oom_memcg,
        "oom_memcg"
    );
    assert_eq!(
        v.task.cgroup_path().map(String::from),
        s.task_memcg,
        "task_memcg"
    );
    assert_eq!(ev.action, Some(Action::Killed), "the kernel sent SIGKILL");
    assert_kernel_context(ev, report);
}

/// Where the kernel's own context must be present (the VM matrix), it is, and agrees with the
/// kernel's report: gfp_mask and order of the `invoked oom-killer` line, totalpages of the
/// OOM domain, and the victim's points recomputed as `oom_badness()` does.
pub(crate) fn assert_kernel_context(ev: &OomKillEvent, report: &OomReport) {
    if !expect_kernel_context() {
        assert_eq!(ev.oom.constraint_source, "inferred");
        assert_eq!(ev.oom.totalpages, None);
        return;
    }
    let o = &ev.oom;
    assert_eq!(o.constraint_source, "kernel", "{ev:?}");
    let invoked = report.invoked.as_ref().expect("`invoked oom-killer` line");
    assert_eq!(o.gfp_mask, Some(invoked.gfp_mask), "gfp_mask");
    assert_eq!(o.order, Some(invoked.order), "order");
    let totalpages = expected_totalpages(report);
    assert_eq!(o.totalpages, Some(totalpages), "totalpages");
    assert_eq!(
        ev.victim.points,
        Some(expected_points(report, totalpages)),
        "points"
    );
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) >> 10
}

/// `/proc/meminfo` value in kB.
pub(crate) fn meminfo_kb(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/meminfo"))
}

/// The size of the OOM domain in pages, as `oom_control.totalpages` holds it: the memcg's
/// limit (plus swap, of which the VMs have none) or all RAM and swap for a global OOM.
pub(crate) fn expected_totalpages(report: &OomReport) -> u64 {
    assert_eq!(
        meminfo_kb("SwapTotal"),
        0,
        "totalpages checks assume no swap"
    );
    match &report.memcg_usage {
        Some(u) if !report.killed.global => u.limit_kb / page_kb(),
        _ => meminfo_kb("MemTotal") / page_kb(),
    }
}

/// `oom_badness()`: RSS + swap entries + page-table pages, plus `oom_score_adj` thousandths of
/// the domain (the kernel divides first: `adj * (totalpages / 1000)`), from the victim's row of
/// the task table the kernel logged when it chose. (Not from the `Killed process` line: that
/// is printed after SIGKILL, and on 6.1 a victim that starts exiting at once may have flushed
/// its per-task RSS cache into the counters by then.)
pub(crate) fn expected_points(report: &OomReport, totalpages: u64) -> i64 {
    let row = report
        .tasks
        .iter()
        .find(|t| t.pid == report.killed.pid)
        .unwrap_or_else(|| panic!("the victim's row in the kernel's task table: {report:?}"));
    let pgtables = row.pgtables_bytes / (page_kb() << 10);
    (row.rss_pages + row.swapents + pgtables) as i64
        + i64::from(row.oom_score_adj) * (totalpages / 1000) as i64
}

/// A kubelet-style `/var/log`: `pods/<ns>_<pod>_<uid>/<container>/0.log` and
/// `containers/<pod>_<ns>_<container>-<id>.log` symlinks into it. Removed on drop.
pub(crate) struct KubeletTree(pub std::path::PathBuf);

impl KubeletTree {
    pub(crate) fn new(tag: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("oomtrace-kubelet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("containers")).expect("containers dir");
        Self(root)
    }

    pub(crate) fn add(&self, ns: &str, pod: &str, uid: &str, container: &str, id: &str) {
        let dir = self
            .0
            .join("pods")
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container);
        std::fs::create_dir_all(&dir).expect("pod dir");
        let log = dir.join("0.log");
        std::fs::write(&log, "").expect("log file");
        let link = self
            .0
            .join("containers")
            .join(format!("{pod}_{ns}_{container}-{id}.log"));
        std::os::unix::fs::symlink(&log, link).expect("symlink");
    }
}

impl Drop for KubeletTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kubelet's systemd-driver name of a pod's slice component: the uid with underscores.
pub(crate) fn systemd_pod(uid: &str) -> String {
    uid.replace('-', "_")
}

/// The running test's name: libtest names each test's thread after it. Threads a test spawns
/// have no name: take it before spawning.
pub(crate) fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", ".")
}

/// Parses one JSON line of oomtrace's output (`tail -o json`, the agent's file) and, with
/// `OOMTRACE_TEST_SHAPES_DIR` set, records its shape for `test` ([`record_shape`]).
pub(crate) fn parse_json_line(line: &str, test: &str) -> Result<Value, serde_json::Error> {
    let v = serde_json::from_str(line)?;
    record_shape(&v, test);
    Ok(v)
}

/// With `OOMTRACE_TEST_SHAPES_DIR` set, merges the shape of record `v` ([`shape_lines`]) into
/// `<dir>/<event>.<test>.shape`: what the schema rewrite must keep (`tests/golden/README.md`).
pub(crate) fn record_shape(v: &Value, test: &str) {
    static MERGING: Mutex<()> = Mutex::new(());
    let Some(dir) = std::env::var_os("OOMTRACE_TEST_SHAPES_DIR").filter(|d| !d.is_empty()) else {
        return;
    };
    let event = v.get("event").and_then(Value::as_str).unwrap_or("no_event");
    let path = Path::new(&dir).join(format!("{event}.{test}.shape"));
    // Test threads of one binary may record at once.
    let _merging = MERGING.lock().unwrap_or_else(|p| p.into_inner());
    let mut lines = shape_lines(v);
    if let Ok(old) = std::fs::read_to_string(&path) {
        lines.extend(old.lines().map(String::from));
    }
    let text: String = lines.into_iter().map(|l| l + "\n").collect();
    std::fs::create_dir_all(&dir).expect("OOMTRACE_TEST_SHAPES_DIR");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A record's shape: each leaf's key path and JSON type (`victim.pid: integer`), sorted. An
/// array is `path: array` with the union of its elements' shapes under `path[]`; an empty
/// object is a leaf (`object`); numbers are `integer` or `float` as serde_json reads them; the
/// keys of a `labels` map and of `victim.process.env` are `*`.
pub(crate) fn shape_lines(v: &Value) -> BTreeSet<String> {
    fn walk(path: &str, v: &Value, out: &mut BTreeSet<String>) {
        let kind = match v {
            Value::Object(m) if !m.is_empty() => {
                // Label names and environment variable names are data, not the schema's.
                let data_keys =
                    path == "labels" || path.ends_with(".labels") || path.ends_with(".process.env");
                for (k, v) in m {
                    let k = if data_keys { "*" } else { k.as_str() };
                    let child = if path.is_empty() {
                        k.to_string()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&child, v, out);
                }
                return;
            }
            Value::Array(a) => {
                for e in a {
                    walk(&format!("{path}[]"), e, out);
                }
                "array"
            }
            Value::Object(_) => "object",
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
        };
        out.insert(format!("{path}: {kind}"));
    }
    let mut out = BTreeSet::new();
    walk("", v, &mut out);
    out
}

/// A child killed and reaped when dropped, so a failing test leaves nothing running.
pub(crate) struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `oomtrace tail -o json --hide-pressure ARGS…`, attached and with the running processes
/// read, and a channel of the records `keep` accepts.
fn spawn_tail(
    args: &[&str],
    keep: fn(&Value) -> bool,
) -> (Reaped, std::sync::mpsc::Receiver<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .args(["tail", "-o", "json", "--hide-pressure"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oomtrace starts");
    let stderr = child.stderr.take().expect("stderr");
    // Printed once attached and the processes already running are read.
    let lines = read_until(stderr, "process identities:", "oomtrace");
    std::thread::spawn(move || lines.for_each(drop));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let test = test_name();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v = parse_json_line(&line, &test).expect("one JSON object a line");
            if keep(&v) && tx.send(v).is_err() {
                break;
            }
        }
    });
    (Reaped(child), rx)
}

/// `oomtrace tail -o json --hide-pressure ARGS…` and a channel of every record it prints.
pub(crate) fn tail_records(args: &[&str]) -> (Reaped, std::sync::mpsc::Receiver<Value>) {
    spawn_tail(args, |_| true)
}

/// `oomtrace tail -o json --hide-pressure --count COUNT --cgroup CGROUP EXTRA…` and a channel of
/// its kill records.
pub(crate) fn tail_kills(
    cgroup: &str,
    count: usize,
    extra: &[&str],
) -> (Reaped, std::sync::mpsc::Receiver<Value>) {
    let count = count.to_string();
    let mut args = vec!["--count", &count, "--cgroup", cgroup];
    args.extend_from_slice(extra);
    spawn_tail(&args, |v| v["event"] == "oom_kill")
}

/// The kernel's whole report of the kill of `pid`, and the log records since `kmsg` opened that
/// it was assembled from.
pub(crate) fn kernel_log_of(
    kmsg: &mut Kmsg,
    pid: u32,
    timeout: Duration,
) -> (OomReport, Vec<kernel_report::KmsgRecord>) {
    let mut log = Vec::new();
    let found = kmsg
        .wait_for(timeout, |r| {
            log.push(r.clone());
            kernel_report::parse_killed_process(&r.message).filter(|k| k.pid == pid)
        })
        .expect("kmsg readable");
    assert!(found.is_some(), "no kernel report for pid {pid}");
    let report = kernel_report::collect_reports(&log)
        .into_iter()
        .rfind(|r| r.killed.pid == pid)
        .expect("report assembled");
    (report, log)
}

/// The codes a kernel log holds the evidence for (the README's "What each source can tell").
pub(crate) const KERNEL_LOG_CODES: &[&str] = &[
    "victim_not_largest",
    "tmpfs_shmem",
    "page_cache",
    "kernel_memory",
    "group_kill",
    "victim_anon_at_limit",
];

fn codes_in(v: &Value) -> BTreeSet<String> {
    v["diagnosis"]
        .as_array()
        .unwrap_or_else(|| panic!("a diagnosis: {v}"))
        .iter()
        .filter_map(|f| f["code"].as_str())
        .filter(|c| KERNEL_LOG_CODES.contains(c))
        .map(String::from)
        .collect()
}

/// `oomtrace explain --kernel-log` over the same kill's kernel log (written as `dmesg` prints
/// it) reaches the same verdict as `record` on every code a kernel log can support; returns its
/// record for the kill.
pub(crate) fn assert_kernel_log_agrees(record: &Value, log: &[kernel_report::KmsgRecord]) -> Value {
    let dir = std::env::temp_dir().join(format!(
        "oomtrace-klog-{}-{}",
        std::process::id(),
        test_name().replace("::", "-")
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("dmesg.txt");
    let mut text = String::new();
    for r in log {
        for line in r.message.lines() {
            text.push_str(&format!(
                "[{:5}.{:06}] {line}\n",
                r.ts_usec / 1_000_000,
                r.ts_usec % 1_000_000
            ));
        }
    }
    std::fs::write(&file, &text).expect("write the log");
    let out = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
        .args(["explain", "--kernel-log", "-o", "json"])
        .arg(&file)
        .output()
        .expect("explain runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let pid = record["victim"]["tgid"]
        .as_u64()
        .or_else(|| record["victim"]["pid"].as_u64());
    let from_log = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["victim"]["pid"].as_u64() == pid)
        .unwrap_or_else(|| panic!("explain --kernel-log found the kill of {pid:?}: {out:?}"));
    assert_eq!(
        codes_in(&from_log),
        codes_in(record),
        "the kernel log's verdict:\n{}\nthe record's:\n{}",
        from_log["diagnosis"],
        record["diagnosis"]
    );
    from_log
}
