//! `cargo xtask test`: eBPF build, lints and the workspace tests, timed step by step.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::{ebpf, util};

/// One timed step of `cargo xtask test`.
struct Step {
    name: &'static str,
    cmd: Command,
}

impl Step {
    fn new(name: &'static str, cmd: Command) -> Self {
        Self { name, cmd }
    }
}

pub(crate) fn run(no_lint: bool, test_args: &[String]) -> Result<()> {
    let total = Instant::now();
    let mut tally = Tally::default();
    let result = run_steps(no_lint, test_args, &mut tally);
    let elapsed = total.elapsed().as_secs_f64();
    match &result {
        Ok(()) => eprintln!("==> test: all steps passed in {elapsed:.1}s"),
        Err(e) => eprintln!("==> test: FAILED after {elapsed:.1}s: {e:#}"),
    }
    // The closing line sums every test binary (cargo's own last line is often a doc-test run
    // of 0 tests, which says nothing about the suite).
    println!(
        "oomtrace: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    result
}

fn run_steps(no_lint: bool, test_args: &[String], tally: &mut Tally) -> Result<()> {
    let start = Instant::now();
    eprintln!("==> [build-ebpf] bootstrap and build the eBPF object");
    let obj = ebpf::build()?;
    eprintln!(
        "    build-ebpf ok in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        obj.display()
    );

    crate::bootstrap::ensure_test_packages()?;
    let root = util::workspace_root();
    let mut steps = Vec::new();
    if !no_lint {
        steps.extend(lint_steps(&root, &obj));
    }
    // tests/package.rs checks the package that `cargo xtask package` builds (a release build).
    let start = Instant::now();
    eprintln!("==> [package] cargo xtask package");
    let deb = crate::package::build(crate::package::DEFAULT_MAINTAINER)?;
    eprintln!(
        "    package ok in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        deb.display()
    );
    // tests/image.rs runs the image that `cargo xtask image` builds from that binary.
    let start = Instant::now();
    eprintln!("==> [image] cargo xtask image");
    let image = crate::image::build()?;
    eprintln!(
        "    image ok in {:.1}s: {image}",
        start.elapsed().as_secs_f64()
    );
    let mut test = unit_test_step(&root, &obj, test_args);
    test.cmd
        .env(crate::package::DEB_ENV, &deb)
        .env(crate::image::IMAGE_ENV, &image)
        .env("CONTAINERS_CONF", crate::image::containers_conf()?);
    steps.push(test);
    steps.extend(vm_test_steps(&root, &obj));

    for Step { name, mut cmd } in steps {
        let start = Instant::now();
        eprintln!("==> [{name}] {}", util::describe(&cmd));
        run_tallied(&mut cmd, tally).with_context(|| format!("step `{name}` failed"))?;
        eprintln!("    {name} ok in {:.1}s", start.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Test counts summed over `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds the counts of a libtest line such as
    /// `test result: ok. 33 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    pub(crate) fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its stdout line by line and counting test results in it.
fn run_tallied(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{}`", util::describe(cmd)))?;
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines() {
            let line = line.context("reading test output")?;
            tally.add_line(&line);
            writeln!(stdout, "{line}")?;
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "`{}` failed ({status})",
        util::describe(cmd)
    );
    Ok(())
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the whole workspace.
fn lint_steps(root: &Path, obj: &Path) -> Vec<Step> {
    vec![
        Step::new("fmt", cargo(root, obj, &["fmt", "--all", "--", "--check"])),
        Step::new(
            "fmt-ebpf",
            cargo(
                root,
                obj,
                &[
                    "fmt",
                    "--manifest-path",
                    "oomtrace-ebpf/Cargo.toml",
                    "--",
                    "--check",
                ],
            ),
        ),
        Step::new(
            "clippy",
            cargo(
                root,
                obj,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            ),
        ),
    ]
}

/// `cargo test --workspace`, plus whatever followed `--` on the xtask command line (e.g.
/// `cargo xtask test -- -p oomtrace -- --nocapture`).
///
/// `--workspace` is left out when those arguments pick packages, since it would override them.
fn unit_test_step(root: &Path, obj: &Path, test_args: &[String]) -> Step {
    let picks_packages = test_args
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg.starts_with("-p") || arg.starts_with("--package"));
    let mut cmd = cargo(root, obj, &["test"]);
    if !picks_packages {
        cmd.arg("--workspace");
    }
    cmd.args(test_args);
    Step::new("test", cmd)
}

/// The VM matrix: `cargo xtask vm-test --kernel all`, then the packaged unit under a real
/// systemd (`cargo xtask vm-systemd`), run by this same xtask binary.
fn vm_test_steps(root: &Path, _obj: &Path) -> Vec<Step> {
    let exe = std::env::current_exe().unwrap_or_else(|_| root.join("target/debug/xtask"));
    let mut cmd = Command::new(&exe);
    cmd.current_dir(root).args(["vm-test", "--kernel", "all"]);
    let mut systemd = Command::new(exe);
    systemd.current_dir(root).arg("vm-systemd");
    vec![Step::new("vm-test", cmd), Step::new("vm-systemd", systemd)]
}

/// The host cargo in the workspace root, with the eBPF object for `oomtrace`'s build script.
fn cargo(root: &Path, obj: &Path, args: &[&str]) -> Command {
    let mut cmd = util::host_cargo();
    cmd.current_dir(root).args(args).env(ebpf::OBJECT_ENV, obj);
    cmd
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 33 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.71s");
        t.add_line("test result: FAILED. 7 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.14s");
        t.add_line("running 8 tests");
        assert_eq!(
            t,
            Tally {
                passed: 40,
                failed: 1,
                ignored: 1
            }
        );
    }
}
