//! Real OOM kills on this host's kernel, each inside a throwaway memory cgroup with a small
//! limit, compared field by field with the kernel's own report of the same kill.
mod common;

use std::{fs, time::Duration};

use common::{assert_matches_kernel, killed_by, start_hog, Harness};
use oomtrace::{probes::AttachMode, sandbox::SpawnOptions};

const SIGKILL: i32 = 9;
const WAIT: Duration = Duration::from_secs(30);

fn limit_bytes(cg: &oomtrace::sandbox::MemoryCgroup) -> u64 {
    let file = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .map(|f| cg.dir().join(f))
        .find(|p| p.exists())
        .expect("limit file");
    fs::read_to_string(file)
        .expect("limit readable")
        .trim()
        .parse()
        .expect("numeric limit")
}

#[test]
fn memcg_kill_matches_the_kernel_report() {
    require_host!();
    let mut h = Harness::start(AttachMode::Auto);
    let cg = h.cgroup("basic", 48);
    let (pid, ev, report) = h.kill_hog(&cg, &["--comm", "oomt-basic"], &SpawnOptions::default());
    assert_matches_kernel(&ev, &report);

    // Independent sources beyond the kernel log: the process we started and the cgroup files.
    assert_eq!(ev.victim.task.tgid, Some(pid));
    assert_eq!(ev.victim.task.comm.as_deref(), Some("oomt-basic"));
    assert_eq!(ev.victim.uid, Some(0));
    assert_eq!(ev.victim.sigkill_pending, Some(true));
    assert_eq!(ev.trigger.pid, Some(pid), "the hog allocated for itself");
    assert_eq!(ev.oom.constraint, Some("memcg"));
    let memcg = ev.oom.memcg.as_ref().expect("oom.memcg");
    assert_eq!(memcg.cgroup.id, cg.id().expect("id"));
    assert_eq!(memcg.cgroup.path.as_deref(), Some(cg.path()));
    assert_eq!(memcg.limit_bytes, limit_bytes(&cg));
    assert_eq!(memcg.limit_bytes, 48 << 20);
    // At the kill the cgroup is full: within the inference margin of its limit.
    assert!(memcg.usage_bytes <= memcg.limit_bytes);
    assert!(memcg.limit_bytes - memcg.usage_bytes < 2 << 20, "{memcg:?}");
    eprintln!(
        "latency kernel→record: {} µs",
        h.latency_us(pid).unwrap_or_default()
    );
}

#[test]
fn non_root_victim_with_oom_score_adj() {
    require_host!();
    let mut h = Harness::start(AttachMode::Auto);
    let cg = h.cgroup("uid", 40);
    let opts = SpawnOptions {
        oom_score_adj: Some(500),
        uid: Some((65534, 65534)),
    };
    let (_, ev, report) = h.kill_hog(&cg, &["--comm", "oomt-nobody"], &opts);
    assert_matches_kernel(&ev, &report);
    assert_eq!(ev.victim.uid, Some(65534));
    assert_eq!(ev.victim.oom_score_adj, Some(500));
}

#[test]
fn victim_holding_shared_memory() {
    require_host!();
    let mut h = Harness::start(AttachMode::Auto);
    let cg = h.cgroup("shm", 64);
    let shm = format!("/dev/shm/oomtrace-test-shm-{}", std::process::id());
    struct RemoveOnDrop(String);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(shm.clone());
    let args = ["--comm", "oomt-shm", "--shm-file", &shm, "--shm-mb", "16"];
    let (_, ev, report) = h.kill_hog(&cg, &args, &SpawnOptions::default());
    assert_matches_kernel(&ev, &report);
    assert_eq!(
        ev.victim.shmem_rss_bytes,
        Some(16 << 20),
        "the 16 MiB tmpfs mapping, every page touched"
    );
}

#[test]
fn trigger_differs_from_victim() {
    require_host!();
    let mut h = Harness::start(AttachMode::Auto);
    let cg = h.cgroup("trigger", 64);
    // A big idle process, then a small allocator whose charges push the cgroup over its limit:
    // the kernel picks the biggest task, which is not the one allocating.
    let mut idle = start_hog(
        &cg,
        &["--comm", "oomt-idle", "--anon-mb", "40"],
        &SpawnOptions::default(),
        true,
    );
    let mut alloc = start_hog(
        &cg,
        &["--comm", "oomt-alloc", "--anon-mb", "30"],
        &SpawnOptions::default(),
        false,
    );
    let (idle_pid, alloc_pid) = (idle.id(), alloc.id());
    assert_eq!(
        killed_by(&mut idle, WAIT),
        Some(SIGKILL),
        "the idle hog is chosen"
    );
    let ev = h.event_for(idle_pid, WAIT);
    let report = h.kernel_report(idle_pid, WAIT);
    assert_matches_kernel(&ev, &report);
    assert_eq!(ev.victim.task.comm.as_deref(), Some("oomt-idle"));
    assert_eq!(ev.trigger.pid, Some(alloc_pid), "trigger is the allocator");
    assert_eq!(ev.trigger.tgid, Some(alloc_pid));
    assert_eq!(ev.trigger.comm.as_deref(), Some("oomt-alloc"));
    assert_eq!(
        ev.trigger.cgroup.as_ref().and_then(|c| c.path.as_deref()),
        Some(cg.path())
    );
    let _ = alloc.kill();
    let _ = alloc.wait();
}

#[test]
fn limit_on_the_parent_victim_in_a_child() {
    require_host!();
    let mut h = Harness::start(AttachMode::Auto);
    let mut parent = h.cgroup("nested", 48);
    let hierarchy = h.hierarchy.clone();
    let child_cg = parent
        .child(&hierarchy, "workload", None)
        .expect("child cgroup");
    let (_, ev, report) = h.kill_hog(
        child_cg,
        &["--comm", "oomt-nested"],
        &SpawnOptions::default(),
    );
    assert_matches_kernel(&ev, &report);
    let memcg = ev.oom.memcg.as_ref().expect("oom.memcg");
    assert_eq!(
        memcg.cgroup.path.as_deref(),
        Some(parent.path()),
        "the parent's limit was hit"
    );
    assert_eq!(memcg.limit_bytes, 48 << 20);
    assert_eq!(
        ev.victim
            .task
            .cgroup
            .as_ref()
            .and_then(|c| c.path.as_deref()),
        Some(format!("{}/workload", parent.path()).as_str())
    );
}
