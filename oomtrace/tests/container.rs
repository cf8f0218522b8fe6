//! A real container: Debian's containerd and runc, a daemon this test starts with its own
//! state directories, and a container (rootfs made here, 32 MiB memory limit) whose process the
//! kernel OOM-kills. The record names the container by its full id and runtime, and matches
//! the kernel's report, although it is read only after the container and its cgroup are gone.
mod common;

use std::{process::Stdio, time::Duration};

use common::{
    assert_matches_kernel,
    containerd::{self, Containerd},
    Harness,
};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn containerd_container_kill_names_the_container() {
    require_host!();
    if let Some(missing) = containerd::missing() {
        skip_test!(
            "{missing} not installed: `cargo xtask test` installs Debian's containerd and runc"
        );
    }
    let mut h = Harness::new();
    let dir = std::env::temp_dir().join(format!("oomtrace-test-ctr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = Containerd::start(&dir, &h.hierarchy.root);
    let rootfs = containerd::rootfs(&dir);
    // A full 64-hex id, as Docker, Kubernetes and nerdctl give containers.
    let id = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        std::process::id(),
        0x6f6f6du64,
        0x747261636575u64,
        1u64
    );
    common::wait_for_oom_report_budget();
    let mut run = d
        .ctr()
        .args([
            "run",
            "--rm",
            "--memory-limit",
            &(32u64 << 20).to_string(),
            "--rootfs",
        ])
        .arg(&rootfs)
        .arg(&id)
        .args(["/oomtrace", "hog", "--comm", "oomt-ctr"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr run");
    let status = oomtrace::testing::sandbox::wait_or_kill(&mut run, WAIT).expect("wait for ctr");
    assert_eq!(
        status.code(),
        Some(137),
        "the container's process was OOM-killed"
    );
    // `ctr run --rm` has removed the container and its cgroup: the path can only come from
    // what the kernel side read at the kill.
    let cg_dir = h.hierarchy.root.join("default").join(&id);
    assert!(!cg_dir.exists(), "{} is gone", cg_dir.display());
    let ev = h.event_matching("the container's hog", WAIT, |e| {
        e.victim.task.comm.as_deref() == Some("oomt-ctr")
    });
    assert_eq!(
        ev.victim.task.cgroup_path(),
        Some(format!("/default/{id}").as_str()),
        "containerd's cgroup for the container"
    );
    let pid = ev.victim.task.pid.expect("pid");
    let report = h.kernel_report(pid, WAIT);
    assert_matches_kernel(&ev, &report);
    let json = oomtrace::output::schema::kill_value(&ev, None);
    assert_eq!(json["container"]["id"], id.as_str(), "{json}");
    assert_eq!(json["container"]["runtime"], "containerd");
    assert_eq!(json["oom"]["scope"], "container");
    assert_eq!(json["oom"]["memcg"]["limit_bytes"], 32u64 << 20);
    assert_eq!(json["oom"]["memcg"]["container"]["id"], id.as_str());
}
