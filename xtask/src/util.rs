//! Small process and path helpers shared by the tasks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root: the parent of the xtask crate.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The target directory of host (userspace) builds: `$CARGO_TARGET_DIR` when the caller set
/// one (relative to the workspace root), else `<root>/target`.
pub(crate) fn host_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The cargo that runs us (`$CARGO`, rustup's toolchain cargo), falling back to `cargo`.
pub(crate) fn host_cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `$CARGO_HOME/bin` (default `$HOME/.cargo/bin`), where rustup and `cargo install` put
/// binaries.
pub(crate) fn cargo_bin_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.join("bin"))
}

/// `PATH` with `extra` dirs and then the cargo bin dir prepended.
pub(crate) fn path_with(extra: &[PathBuf]) -> Result<OsString> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    dirs.extend(cargo_bin_dir());
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).context("cannot build PATH")
}

/// Looks `name` up in `PATH` (plus the cargo bin dir).
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = path_with(&[]).ok()?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether we run as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    // Without libc: the second field of `Uid:` in /proc/self/status is the effective uid.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A shell-like rendering of a command, for logs.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd`, failing unless it exits successfully.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Removes from `cmd`'s environment what a parent cargo (or rustup) sets and what would
/// leak into a nested cargo that uses another toolchain or target: every `CARGO_*` variable
/// except `CARGO_HOME`, `CARGO` itself, every `RUSTC*` and `RUSTDOC*` variable, `RUSTFLAGS`
/// and `RUSTUP_TOOLCHAIN`.
pub(crate) fn clean_cargo_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        let leaks = (name.starts_with("CARGO_") && name != "CARGO_HOME")
            || name == "CARGO"
            || name.starts_with("RUSTC")
            || name.starts_with("RUSTDOC")
            || name == "RUSTFLAGS"
            || name == "RUSTUP_TOOLCHAIN";
        if leaks {
            cmd.env_remove(&key);
        }
    }
}

/// `apt-get update`, its output on stderr (a caller's stdout may carry test results).
pub(crate) fn apt_get_update() -> Result<()> {
    run_checked(
        Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(std::io::stderr()),
    )
}
