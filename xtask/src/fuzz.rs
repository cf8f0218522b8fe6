//! `cargo xtask fuzz`: builds the cargo-fuzz targets of `fuzz/` (nightly toolchain, libFuzzer)
//! and runs each for a fixed budget, then prints per target the executions, the corpus size
//! and the crashes found.
//!
//! Each target starts from the seed corpus kept in the repository (`fuzz/corpus/<target>`);
//! what libFuzzer learns goes to `target/fuzz/corpus/<target>` (kept between runs, never
//! committed), crashing inputs to `fuzz/artifacts/<target>/` and libFuzzer's log to
//! `target/fuzz/logs/<target>.log`.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{ebpf, util};

const TOOLCHAIN: &str = "nightly";

#[derive(Debug, clap::Args)]
pub(crate) struct FuzzArgs {
    /// Budget per target, in seconds.
    #[arg(long, default_value_t = 60, value_name = "N")]
    seconds: u64,
    /// Run only this target (repeatable); default: every target in fuzz/fuzz_targets.
    #[arg(long = "target", value_name = "T")]
    targets: Vec<String>,
    /// Seconds one input may take before libFuzzer reports it as a hang.
    #[arg(long, default_value_t = 10, value_name = "S")]
    timeout: u64,
}

/// What one target's run found.
struct Outcome {
    target: String,
    executions: Option<u64>,
    seconds: f64,
    corpus: usize,
    crashes: Vec<PathBuf>,
}

pub(crate) fn run(args: &FuzzArgs) -> Result<()> {
    let root = util::workspace_root();
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target `{t}`; the targets are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    ensure_toolchain()?;
    ensure_cargo_fuzz()?;
    let object = ebpf_object(&root)?;

    let mut build = fuzz_command(&root)?;
    build.args(["fuzz", "build"]).env(ebpf::OBJECT_ENV, &object);
    eprintln!("==> {}", util::describe(&build));
    util::run_checked(&mut build)?;

    // The binaries are run directly, not through `cargo fuzz run`: a source edited meanwhile
    // then cannot rebuild them between targets.
    let bin_dir = fuzz_dir.join("target").join(host_triple()?).join("release");
    let work = util::host_target_dir(&root).join("fuzz");
    let mut outcomes = Vec::new();
    for target in &chosen {
        outcomes.push(run_target(
            &root,
            &work,
            &bin_dir.join(target),
            target,
            args,
        )?);
    }

    println!(
        "\n{:<18} {:>8} {:>12} {:>9} {:>7} {:>8}",
        "TARGET", "SECONDS", "EXECUTIONS", "EXEC/S", "CORPUS", "CRASHES"
    );
    for o in &outcomes {
        let execs = o.executions.map_or("?".to_string(), |n| n.to_string());
        let rate = o
            .executions
            .map_or("?".to_string(), |n| format!("{:.0}", n as f64 / o.seconds));
        println!(
            "{:<18} {:>8.0} {:>12} {:>9} {:>7} {:>8}",
            o.target,
            o.seconds,
            execs,
            rate,
            o.corpus,
            o.crashes.len()
        );
    }
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.crashes.is_empty()).collect();
    for o in &crashed {
        for c in &o.crashes {
            println!(
                "crash in {}: {} (replay: cargo +{TOOLCHAIN} fuzz run {} {})",
                o.target,
                c.display(),
                o.target,
                c.display()
            );
        }
    }
    if !crashed.is_empty() {
        bail!("{} target(s) crashed", crashed.len());
    }
    Ok(())
}

/// The targets: the file stems of `fuzz/fuzz_targets/*.rs`, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.insert(stem.to_string());
            }
        }
    }
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names.into_iter().collect())
}

/// `rustup run nightly cargo` in the workspace root, with the parent cargo's environment
/// removed (it names the stable toolchain).
fn fuzz_command(root: &Path) -> Result<Command> {
    let mut cmd = Command::new("rustup");
    util::clean_cargo_env(&mut cmd);
    cmd.current_dir(root)
        .env("PATH", util::path_with(&[])?)
        .args(["run", TOOLCHAIN, "cargo"]);
    Ok(cmd)
}

fn ensure_toolchain() -> Result<()> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("cannot run rustup (cargo-fuzz needs rustup's nightly toolchain)")?;
    let list = String::from_utf8_lossy(&out.stdout);
    if !list.lines().any(|l| l.starts_with(TOOLCHAIN)) {
        bail!("the {TOOLCHAIN} toolchain is not installed: run `rustup toolchain install {TOOLCHAIN}`");
    }
    Ok(())
}

/// The nightly compiler's host triple: cargo-fuzz builds for it, into `fuzz/target/<triple>`.
fn host_triple() -> Result<String> {
    let out = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "-vV"])
        .output()
        .context("cannot run the nightly rustc")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("`rustc -vV` printed no host triple")
}

/// Installs cargo-fuzz from crates.io when it is not on `PATH`.
fn ensure_cargo_fuzz() -> Result<()> {
    if util::find_in_path("cargo-fuzz").is_some() {
        return Ok(());
    }
    let mut cmd = util::host_cargo();
    util::clean_cargo_env(&mut cmd);
    cmd.args(["install", "cargo-fuzz", "--locked"]);
    eprintln!("==> {}", util::describe(&cmd));
    util::run_checked(&mut cmd)
}

/// The eBPF object `oomtrace`'s build script embeds: `$OOMTRACE_EBPF_OBJECT`, else the one
/// already built, else a fresh build. The fuzz targets never load it.
fn ebpf_object(root: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ebpf::OBJECT_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let built = root.join("target/ebpf/bpfel-unknown-none/release/oomtrace");
    if built.is_file() {
        return Ok(built);
    }
    ebpf::build()
}

fn run_target(
    root: &Path,
    work: &Path,
    binary: &Path,
    target: &str,
    args: &FuzzArgs,
) -> Result<Outcome> {
    let corpus = work.join("corpus").join(target);
    let seeds = root.join("fuzz/corpus").join(target);
    let artifacts = root.join("fuzz/artifacts").join(target);
    let logs = work.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if !binary.is_file() {
        bail!("{} is missing after `cargo fuzz build`", binary.display());
    }
    let before = listing(&artifacts)?;
    let log = logs.join(format!("{target}.log"));
    let log_file =
        fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;

    let mut cmd = Command::new(binary);
    cmd.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={}", args.timeout))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg("-rss_limit_mb=2048")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(log_file);
    eprintln!(
        "==> {target}: {} (log: {})",
        util::describe(&cmd),
        log.display()
    );
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", util::describe(&cmd)))?;
    let seconds = start.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let crashes: Vec<PathBuf> = listing(&artifacts)?
        .difference(&before)
        .map(|name| artifacts.join(name))
        .collect();
    if !status.success() && crashes.is_empty() {
        bail!(
            "fuzzing {target} failed ({status}) without a crash artifact: see {}",
            log.display()
        );
    }
    let outcome = Outcome {
        target: target.to_string(),
        executions: executions(&text),
        seconds,
        corpus: listing(&corpus)?.len(),
        crashes,
    };
    eprintln!(
        "    {target}: {} executions in {seconds:.0} s, {} crash(es)",
        outcome
            .executions
            .map_or("?".to_string(), |n| n.to_string()),
        outcome.crashes.len()
    );
    Ok(outcome)
}

/// File names in `dir`.
fn listing(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        names.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Executions from libFuzzer's final statistics (`stat::number_of_executed_units: N`), else
/// from its last status line (`#N ...`).
fn executions(log: &str) -> Option<u64> {
    let stat = log.lines().rev().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
    });
    stat.or_else(|| {
        log.lines().rev().find_map(|l| {
            let n = l.strip_prefix('#')?.split_whitespace().next()?;
            n.parse().ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_from_final_stats_or_status_lines() {
        let log = "#2\tINITED cov: 10\n#4096\tpulse  cov: 12\n#51234\tDONE   cov: 40\n\
                   Done 51234 runs in 61 second(s)\nstat::number_of_executed_units: 51240\n";
        assert_eq!(executions(log), Some(51240));
        assert_eq!(
            executions("#2\tINITED\n#777\tNEW cov: 3\n==1== ERROR"),
            Some(777)
        );
        assert_eq!(executions("nothing"), None);
    }
}
