//! A real container runtime for the tests: Debian's containerd and runc, a daemon started with
//! its own state directories, and a root filesystem holding the oomtrace binary.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);

/// The runtime's binaries this machine lacks, if any (`cargo xtask test` installs them).
pub(crate) fn missing() -> Option<String> {
    let missing: Vec<&str> = ["containerd", "ctr", "runc"]
        .into_iter()
        .filter(|b| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// containerd started by the test, with its state under a temp dir; stopped and removed on drop.
pub(crate) struct Containerd {
    child: Child,
    dir: PathBuf,
    /// The `default` namespace's cgroup, when this test created it.
    created_cgroup: Option<PathBuf>,
}

impl Containerd {
    pub(crate) fn start(dir: &Path, cgroup_root: &Path) -> Containerd {
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

    /// `ctr run --rm [--memory-limit LIMIT] --rootfs ROOTFS ID ARGS…` with a stdin pipe (kept
    /// open by the caller while the container should run) and no output.
    pub(crate) fn run(
        &self,
        rootfs: &Path,
        id: &str,
        memory_limit: Option<u64>,
        args: &[&str],
    ) -> Child {
        let mut cmd = self.ctr();
        cmd.args(["run", "--rm"]);
        if let Some(l) = memory_limit {
            cmd.args(["--memory-limit", &l.to_string()]);
        }
        cmd.arg("--rootfs")
            .arg(rootfs)
            .arg(id)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr run")
    }

    pub(crate) fn ctr(&self) -> Command {
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
pub(crate) fn rootfs(dir: &Path) -> PathBuf {
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
