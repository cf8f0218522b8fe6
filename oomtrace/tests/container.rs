//! A real container: Debian's containerd and runc, a daemon this test starts with its own
//! state directories, and a container (rootfs made here, 32 MiB memory limit) whose process the
//! kernel OOM-kills. The record names the container by its full id and runtime, and matches
//! the kernel's report, although it is read only after the container and its cgroup are gone.
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{assert_matches_kernel, Harness};

const WAIT: Duration = Duration::from_secs(60);

/// containerd started by the test, with its state under a temp dir; stopped and removed on drop.
struct Containerd {
    child: Child,
    dir: PathBuf,
    /// The `default` namespace's cgroup, when this test created it.
    created_cgroup: Option<PathBuf>,
}

impl Containerd {
    fn start(dir: &Path, cgroup_root: &Path) -> Containerd {
        let default_cg = cgroup_root.join("default");
        let created_cgroup = (!default_cg.exists()).then_some(default_cg);
        std::fs::write(
            dir.join("config.toml"),
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .expect("config");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(dir.join("c.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("containerd starts");
        let d = Containerd {
            child,
            dir: dir.to_path_buf(),
            created_cgroup,
        };
        let deadline = Instant::now() + WAIT;
        while !d
            .ctr()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.dir.join("c.sock"));
        cmd
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(cg) = &self.created_cgroup {
            let _ = std::fs::remove_dir(cg);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A root filesystem holding the oomtrace binary (its `hog`) and the libraries it loads.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    let exe = env!("CARGO_BIN_EXE_oomtrace");
    std::fs::copy(exe, root.join("oomtrace")).expect("copy binary");
    let ldd = Command::new("ldd").arg(exe).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("lib dir");
        std::fs::copy(lib, &to).expect("copy library");
    }
    root
}

#[test]
fn containerd_container_kill_names_the_container() {
    require_host!();
    let missing: Vec<&str> = ["containerd", "ctr", "runc"]
        .into_iter()
        .filter(|b| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        skip_test!(
            "{} not installed: `cargo xtask test` installs Debian's containerd and runc",
            missing.join(", ")
        );
    }
    let mut h = Harness::new();
    let dir = std::env::temp_dir().join(format!("oomtrace-test-ctr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = Containerd::start(&dir, &h.hierarchy.root);
    let rootfs = rootfs(&dir);
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
