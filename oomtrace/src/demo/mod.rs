//! `tail --demo`: one real OOM kill of a disposable child in a throwaway memory cgroup.
pub mod hog;
pub mod sandbox;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    cgroup::MemoryHierarchy,
    demo::sandbox::{MemoryCgroup, SandboxError, SpawnOptions},
};

/// The demo cgroup's limit: small, so the kill comes at once and costs the host nothing.
pub const DEMO_LIMIT_BYTES: u64 = 32 << 20;

#[derive(Debug)]
pub struct DemoKill {
    pub pid: u32,
    /// The demo's cgroup, removed when this is dropped: keep it until the record is printed,
    /// so its path can still be resolved.
    pub cgroup: MemoryCgroup,
    pub status: std::process::ExitStatus,
}

/// Creates `/oomtrace-demo-<pid>` limited to 32 MiB and runs `oomtrace hog` in it until the
/// kernel kills it.
pub fn provoke_one_kill() -> Result<DemoKill, SandboxError> {
    let h = MemoryHierarchy::detect()?;
    let name = format!("oomtrace-demo-{}", std::process::id());
    let cg = MemoryCgroup::create(&h, &name, Some(DEMO_LIMIT_BYTES))?;
    let exe = std::env::current_exe().map_err(|source| SandboxError::Spawn {
        what: "oomtrace hog".into(),
        source,
    })?;
    let mut cmd = Command::new(exe);
    cmd.args(["hog", "--comm", "oomtrace-demo"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cg.spawn(cmd, &SpawnOptions::default())?;
    let pid = child.id();
    let status = sandbox::wait_or_kill(&mut child, Duration::from_secs(60)).map_err(|source| {
        SandboxError::Spawn {
            what: "waiting for the demo child".into(),
            source,
        }
    })?;
    Ok(DemoKill {
        pid,
        cgroup: cg,
        status,
    })
}
