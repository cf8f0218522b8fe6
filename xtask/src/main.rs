//! Developer tasks for oomtrace: `cargo xtask <command>`.
//!
//! The eBPF crate (`oomtrace-ebpf`) is not a workspace member: it is built for
//! `bpfel-unknown-none` with Debian's rustc (which ships a prebuilt BPF `core`) and
//! `bpf-linker`. The userspace crates are built with the host (rustup) toolchain, and
//! `oomtrace`'s build script embeds the object named by `OOMTRACE_EBPF_OBJECT`.

mod bench;
mod bootstrap;
mod ebpf;
mod fuzz;
mod image;
mod ldd;
mod package;
mod test;
mod util;
mod vm;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "oomtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages, bpf-linker and promtool (idempotent).
    Bootstrap,
    /// Bootstrap, then build the eBPF object and print its path.
    BuildEbpf,
    /// Build the eBPF object, then `oomtrace` (release) embedding it; print the binary's path.
    Build,
    /// Build, then run target/release/oomtrace (as root, via `sudo -E` if needed).
    Run {
        /// Arguments for oomtrace, after `--` (default: `tail --demo --count 1`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the eBPF object, then `cargo fmt --check`, `cargo clippy` and `cargo test`.
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy`.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test --workspace`, after `--`
        /// (e.g. `-- -p oomtrace -- --nocapture`).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Boot Debian's 6.1 and 6.12 kernels under qemu and run the integration tests inside.
    VmTest(vm::VmArgs),
    /// Boot a Debian 12 userland with systemd as PID 1 under qemu, install the .deb and check
    /// the packaged unit: started, sandboxed, records a real OOM kill, stops, restarts, removes.
    VmSystemd(vm::systemd::SystemdArgs),
    /// Build, then measure the agent (as root): the slowdown of a page-fault-heavy workload
    /// with it running, and its RSS and CPU under heavy cgroup activity with real OOM kills.
    Bench(bench::BenchArgs),
    /// Build the cargo-fuzz targets of fuzz/ (nightly, libFuzzer; installs cargo-fuzz if
    /// missing) and run each for a fixed budget; print executions and crashes per target.
    Fuzz(fuzz::FuzzArgs),
    /// Build, then a Debian package of the agent as a systemd service
    /// (target/package/oomtrace_VERSION_ARCH.deb); print its path.
    Package(package::PackageArgs),
    /// Build, then the container image of deploy/Dockerfile with buildah, offline (the base
    /// made from the binary's own shared libraries); print its name.
    Image(image::ImageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole context chain on one line, without a backtrace.
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> Result<()> {
    match command {
        Cmd::Bootstrap => bootstrap::run().and_then(|()| bootstrap::ensure_promtool()),
        Cmd::BuildEbpf => {
            let obj = ebpf::build()?;
            println!("{}", obj.display());
            Ok(())
        }
        Cmd::Build => {
            let bin = build()?;
            println!("{}", bin.display());
            Ok(())
        }
        Cmd::Run { args } => run(args),
        Cmd::Test { no_lint, test_args } => test::run(no_lint, &test_args),
        Cmd::VmTest(args) => vm::run(&args),
        Cmd::VmSystemd(args) => vm::systemd::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Fuzz(args) => fuzz::run(&args),
        Cmd::Package(args) => package::run(&args),
        Cmd::Image(args) => image::run(&args),
    }
}

/// Builds the eBPF object and the release `oomtrace` binary; returns the binary's path.
fn build() -> Result<PathBuf> {
    let obj = ebpf::build()?;
    let root = util::workspace_root();
    let mut cmd = util::host_cargo();
    cmd.current_dir(&root)
        .args(["build", "--release", "-p", "oomtrace"])
        .env(ebpf::OBJECT_ENV, &obj);
    eprintln!("==> {}", util::describe(&cmd));
    util::run_checked(&mut cmd)?;
    let bin = util::host_target_dir(&root).join("release/oomtrace");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Builds, then replaces this process with `oomtrace ARGS` (under `sudo -E` when not root).
fn run(args: Vec<String>) -> Result<()> {
    let bin = build()?;
    let args = if args.is_empty() {
        ["tail", "--demo", "--count", "1"]
            .map(String::from)
            .to_vec()
    } else {
        args
    };
    let mut cmd = if util::is_root() {
        Command::new(&bin)
    } else if let Some(sudo) = util::find_in_path("sudo") {
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&bin);
        cmd
    } else {
        bail!(
            "oomtrace needs root (to load its eBPF programs) and sudo is not installed: \
             run `{} {}` as root",
            bin.display(),
            args.join(" ")
        );
    };
    cmd.args(&args);
    eprintln!("==> {}", util::describe(&cmd));
    // `exec` only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to execute `{}`", util::describe(&cmd)))
}
