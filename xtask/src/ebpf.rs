//! Builds the eBPF object with Debian's rustc/cargo (prebuilt BPF `core`) and bpf-linker.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};

use crate::{bootstrap, util};

/// The environment variable through which `oomtrace`'s build script finds the object.
pub(crate) const OBJECT_ENV: &str = "OOMTRACE_EBPF_OBJECT";

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const TARGET: &str = "bpfel-unknown-none";

/// Bootstraps, builds the eBPF object and returns its absolute path.
pub(crate) fn build() -> Result<PathBuf> {
    bootstrap::run()?;
    let root = util::workspace_root();
    let target_dir = root.join("target/ebpf");
    let mut cmd = Command::new(DEBIAN_CARGO);
    util::clean_cargo_env(&mut cmd);
    cmd.current_dir(root.join("oomtrace-ebpf"))
        .env("PATH", util::path_with(&[])?)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        // cpu v3 (kernel 5.1+): an atomic fetch-and-add (record sequence numbers) needs it.
        .env(
            "RUSTFLAGS",
            format!(
                "--cfg bpf_target_arch=\"{}\" -Cdebuginfo=2 -Clink-arg=--btf -Ctarget-cpu=v3",
                std::env::consts::ARCH
            ),
        )
        .args(["build", "--release", "--target", TARGET]);
    eprintln!("==> {}", util::describe(&cmd));
    util::run_checked(&mut cmd)?;
    let obj = target_dir.join(TARGET).join("release/oomtrace");
    if !obj.is_file() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}
