//! `cargo xtask vm-test`: the integration tests on Debian's 6.1 and 6.12 cloud kernels, each
//! booted under qemu (TCG) with a busybox initramfs that holds the test binaries. There the
//! kernel allows fentry and kprobes and has a cgroup v2 memory controller, which this host's
//! kernel does not.

mod cpio;
mod guest;
mod initramfs;
mod kernel;
mod qemu;
mod rootfs;
pub(crate) mod systemd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{bootstrap, ebpf, test::Tally, util};
use guest::GuestStep;
use initramfs::Binary;

/// A kernel series of the matrix and the hooks oomtrace must pick there.
struct KernelSpec {
    series: &'static str,
    /// Hooks every record carries with `--attach auto`.
    auto_hooks: &'static str,
    /// Hooks every record carries with `--attach kprobe`.
    kprobe_hooks: &'static str,
    /// Hooks every record carries with `--skip-hook tp_btf/mark_victim` (the path of kernels
    /// whose `mark_victim` carries only the pid).
    fentry_hooks: &'static str,
    /// Pressure sources `oomtrace check` must report.
    pressure_sources: &'static str,
}

/// Debian's 6.1.y carries the 6.9 `mark_victim` change (the 6.6.y backport), so `tp_btf` is
/// the victim hook on both.
const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        series: "6.1",
        auto_hooks: "tp_btf/mark_victim,fentry/oom_kill_process",
        kprobe_hooks: "kprobe/mark_oom_victim,kprobe/oom_kill_process",
        fentry_hooks: "fentry/mark_oom_victim,fentry/oom_kill_process",
        // Both before 6.13: no memcg stat tracepoints.
        pressure_sources: "reclaim_tracepoints,cgroup_files",
    },
    KernelSpec {
        series: "6.12",
        auto_hooks: "tp_btf/mark_victim,fentry/oom_kill_process",
        kprobe_hooks: "kprobe/mark_oom_victim,kprobe/oom_kill_process",
        fentry_hooks: "fentry/mark_oom_victim,fentry/oom_kill_process",
        // Both before 6.13: no memcg stat tracepoints.
        pressure_sources: "reclaim_tracepoints,cgroup_files",
    },
];

/// Integration test binaries run in the guest (`oomtrace/tests/<name>.rs`).
const TEST_BINARIES: &[&str] = &[
    "oom_shapes",
    "cli",
    "pressure",
    "process",
    "domain",
    "verdict",
    "sigkill",
    "restart",
];

/// Steps that run only when asked for with `--step`.
const ON_REQUEST: &[&str] = &["dmesg"];

/// Debian's Node.js (one binary; `ldd` brings its libraries), copied into the guest.
const NODE: &str = "/usr/bin/node";

/// The tests that need a whole (small) machine to themselves, one after the other.
const GLOBAL_OOM_TESTS: &[&str] = &[
    "global_oom_has_no_memcg_and_constraint_none",
    "global_oom_under_overcommitted_limits",
];

/// The `memory.oom.group` kill of 500 processes (`#[ignore]`d elsewhere), in a step of its own:
/// it counts every record its tracer reads, so nothing else may kill meanwhile.
const GROUP_STORM_TEST: &str = "oom_group_of_500_processes_loses_no_kill";

/// Guest RAM: room for the initramfs (about 180 MiB with Node.js, held twice while the kernel
/// unpacks it: at 512 MiB the unpacking fails with a write error) and two 128 MiB cgroups at
/// once, small enough that the global OOM test fills it in seconds under TCG.
const MEMORY_MIB: u32 = 768;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct VmArgs {
    /// Kernel series to boot: 6.1, 6.12 or all.
    #[arg(long, default_value = "all")]
    kernel: String,
    /// Run only these guest steps (check, demo, shapes, shapes-kprobe, shapes-fentry,
    /// global-oom, group-storm, cli, pressure, process, domain, verdict, sigkill, restart, and
    /// dmesg: the guest's kernel log, only on request); repeatable. Default: all but dmesg.
    #[arg(long = "step")]
    steps: Vec<String>,
    /// Extra arguments for the libtest steps in the guest, after `--` (e.g. a test name).
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub(crate) fn run(args: &VmArgs) -> Result<()> {
    let specs: Vec<&KernelSpec> = match args.kernel.as_str() {
        "all" => KERNELS.iter().collect(),
        s => vec![KERNELS.iter().find(|k| k.series == s).with_context(|| {
            let known: Vec<&str> = KERNELS.iter().map(|k| k.series).collect();
            format!(
                "unknown kernel {s:?}: use one of {} or all",
                known.join(", ")
            )
        })?],
    };
    let known: Vec<String> = plan(specs[0], Path::new("oomtrace"), &[], &[])
        .into_iter()
        .map(|s| s.name)
        .chain(ON_REQUEST.iter().map(|s| s.to_string()))
        .collect();
    if let Some(bad) = args.steps.iter().find(|s| !known.contains(s)) {
        bail!("unknown step {bad:?}: use one of {}", known.join(", "));
    }
    bootstrap::ensure_vm_packages()?;
    // Node.js for the verdict step (a test package on the host too).
    bootstrap::ensure_test_packages()?;
    let obj = ebpf::build()?;
    let root = util::workspace_root();
    let vm_dir = util::host_target_dir(&root).join("vm");
    let (oomtrace, tests) = build_test_binaries(&root, &obj)?;

    let mut results = Vec::new();
    for spec in specs {
        let kernel = kernel::fetch(spec.series, &vm_dir.join("kernels"))?;
        let steps = plan(spec, &oomtrace, &args.steps, &args.test_args);
        let mut binaries = vec![Binary {
            guest: oomtrace.to_string_lossy().into_owned(),
            host: oomtrace.clone(),
        }];
        binaries.extend(tests.iter().map(|(name, path)| Binary {
            guest: format!("/tests/{name}"),
            host: path.clone(),
        }));
        // The verdict step's Node.js, at the path the tests look for it.
        if steps.iter().any(|s| s.name == "verdict") {
            binaries.push(Binary {
                guest: NODE.to_string(),
                host: PathBuf::from(NODE),
            });
        }
        let image = vm_dir.join(format!("initramfs-{}.cpio", spec.series));
        let size = initramfs::build(
            &image,
            &guest::init_script(&steps),
            &binaries,
            &vm_dir.join("stripped"),
        )?;
        eprintln!(
            "vm: {} with {} ({} MiB initramfs)",
            kernel.package,
            image.display(),
            size >> 20
        );
        let run = qemu::boot(&qemu::BootSpec {
            label: spec.series,
            vmlinuz: &kernel.vmlinuz,
            initramfs: &image,
            memory_mib: MEMORY_MIB,
            cpus: 2,
            timeout: Duration::from_secs(30 * 60),
            silence: Duration::from_secs(5 * 60),
        })?;
        results.push((kernel, run));
    }

    let mut all = Tally::default();
    eprintln!("==> vm-test summary");
    for (kernel, run) in &results {
        let mut t = Tally::default();
        for s in &run.steps {
            t.passed += s.tally.passed;
            t.failed += s.tally.failed;
            t.ignored += s.tally.ignored;
        }
        eprintln!(
            "  {} ({}): {} — boot {:.1}s, total {:.1}s; {} passed, {} failed, {} ignored",
            kernel.series,
            run.guest,
            if run.passed() { "PASS" } else { "FAIL" },
            run.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
            run.total.as_secs_f64(),
            t.passed,
            t.failed,
            t.ignored
        );
        for line in &run.probe_lines {
            eprintln!("      {line}");
        }
        for s in &run.steps {
            let rc = s.rc.map_or("none".into(), |rc| rc.to_string());
            eprintln!(
                "      step {:<14} rc={rc:<4} {:>6.1}s  {} passed, {} failed, {} ignored",
                s.name,
                s.elapsed.as_secs_f64(),
                s.tally.passed,
                s.tally.failed,
                s.tally.ignored
            );
        }
        if let Some(why) = &run.fatal {
            eprintln!("      FATAL: {why}");
        }
        all.passed += t.passed;
        all.failed += t.failed;
        all.ignored += t.ignored;
        // In libtest's format, so `cargo xtask test` counts the guest's tests in its total.
        println!(
            "test result: {}. {} passed; {} failed; {} ignored; 0 measured; 0 filtered out; vm {}",
            if run.passed() { "ok" } else { "FAILED" },
            t.passed,
            t.failed,
            t.ignored,
            kernel.series
        );
    }
    eprintln!(
        "  all kernels: {} passed, {} failed, {} ignored",
        all.passed, all.failed, all.ignored
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, r)| !r.passed())
        .map(|(k, _)| k.series.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("vm-test failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The guest's steps for one kernel.
fn plan(
    spec: &KernelSpec,
    oomtrace: &Path,
    only: &[String],
    test_args: &[String],
) -> Vec<GuestStep> {
    let bin = |name: &str| format!("/tests/{name}");
    let env = |attach: &str, skip: &str, hooks: &str| {
        vec![
            ("OOMTRACE_TEST_ATTACH".to_string(), attach.to_string()),
            ("OOMTRACE_TEST_SKIP_HOOKS".to_string(), skip.to_string()),
            ("OOMTRACE_TEST_EXPECT_HOOKS".to_string(), hooks.to_string()),
            // A test that would skip fails instead: the VM must run everything.
            ("OOMTRACE_TEST_NO_SKIP".to_string(), "1".to_string()),
            ("OOMTRACE_TEST_IN_VM".to_string(), spec.series.to_string()),
        ]
    };
    // The global OOM tests are `#[ignore]`d elsewhere and run in their own step here.
    let libtest = |name: &str, extra: &[&str]| {
        let mut argv = vec![bin(name), "--test-threads=2".to_string()];
        for t in GLOBAL_OOM_TESTS {
            argv.extend(["--skip".to_string(), t.to_string()]);
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.extend(test_args.iter().cloned());
        argv
    };
    let steps = vec![
        GuestStep {
            name: "check".into(),
            env: Vec::new(),
            argv: vec![oomtrace.to_string_lossy().into_owned(), "check".into()],
        },
        GuestStep {
            name: "demo".into(),
            env: Vec::new(),
            argv: vec![
                oomtrace.to_string_lossy().into_owned(),
                "tail".into(),
                "--demo".into(),
                "--count".into(),
                "1".into(),
                "-o".into(),
                "json".into(),
            ],
        },
        GuestStep {
            name: "shapes".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: libtest("oom_shapes", &[]),
        },
        GuestStep {
            name: "shapes-kprobe".into(),
            env: env("kprobe", "", spec.kprobe_hooks),
            argv: libtest("oom_shapes", &[]),
        },
        GuestStep {
            name: "shapes-fentry".into(),
            env: env("fentry", "tp_btf/mark_victim", spec.fentry_hooks),
            argv: libtest("oom_shapes", &[]),
        },
        GuestStep {
            name: "global-oom".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: [
                bin("oom_shapes"),
                "--ignored".into(),
                "--test-threads=1".into(),
            ]
            .into_iter()
            .chain(["--exact".into()])
            .chain(GLOBAL_OOM_TESTS.iter().map(|t| t.to_string()))
            .collect(),
        },
        GuestStep {
            name: "group-storm".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: vec![
                bin("oom_shapes"),
                "--ignored".into(),
                "--exact".into(),
                "--nocapture".into(),
                GROUP_STORM_TEST.into(),
            ],
        },
        GuestStep {
            name: "cli".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: libtest("cli", &[]),
        },
        GuestStep {
            name: "pressure".into(),
            env: {
                let mut e = env("auto", "", spec.auto_hooks);
                e.push((
                    "OOMTRACE_TEST_EXPECT_PRESSURE".to_string(),
                    spec.pressure_sources.to_string(),
                ));
                e
            },
            argv: libtest("pressure", &[]),
        },
        GuestStep {
            name: "process".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: libtest("process", &[]),
        },
        GuestStep {
            name: "domain".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: libtest("domain", &[]),
        },
        // The guest has no containerd: the real-container verdict runs on the host only.
        GuestStep {
            name: "verdict".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: libtest("verdict", &["--skip", "container_"]),
        },
        GuestStep {
            name: "sigkill".into(),
            env: env("auto", "", spec.auto_hooks),
            argv: libtest("sigkill", &["--skip", "containerd_"]),
        },
        // Pinned programs across an agent restart, kprobe links pinned, the reconciler on
        // cgroup v2's memory.events.local.
        GuestStep {
            name: "restart".into(),
            env: env("kprobe", "", spec.kprobe_hooks),
            argv: libtest("restart", &[]),
        },
        // The kernel's log after the steps before it: the real OOM reports of this kernel
        // (the fixtures in oomtrace/tests/fixtures/kernel_log come from it).
        GuestStep {
            name: "dmesg".into(),
            env: Vec::new(),
            argv: vec!["dmesg".into()],
        },
    ];
    steps
        .into_iter()
        .filter(|s| {
            if only.is_empty() {
                !ON_REQUEST.contains(&s.name.as_str())
            } else {
                only.contains(&s.name)
            }
        })
        .collect()
}

/// Builds the integration tests (debug, as `cargo test` does) and returns the `oomtrace`
/// binary and each test binary by name.
fn build_test_binaries(root: &Path, obj: &Path) -> Result<(PathBuf, BTreeMap<String, PathBuf>)> {
    let mut cmd = util::host_cargo();
    cmd.current_dir(root)
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(["-p", "oomtrace"])
        .env(ebpf::OBJECT_ENV, obj)
        .stdout(Stdio::piped());
    for t in TEST_BINARIES {
        cmd.args(["--test", t]);
    }
    eprintln!("==> [vm-build] {}", util::describe(&cmd));
    let out = cmd.output().context("failed to run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed ({})", out.status);
    }
    let mut oomtrace = None;
    let mut tests = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let kinds = msg["target"]["kind"].to_string();
        if kinds.contains("\"bin\"") && name == "oomtrace" {
            oomtrace = Some(PathBuf::from(exe));
        } else if kinds.contains("\"test\"") && TEST_BINARIES.contains(&name) {
            tests.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let oomtrace = oomtrace
        .or_else(|| {
            let p = util::host_target_dir(root).join("debug/oomtrace");
            p.is_file().then_some(p)
        })
        .context("cargo did not report the oomtrace binary")?;
    for t in TEST_BINARIES {
        if !tests.contains_key(*t) {
            bail!("cargo did not report the test binary {t}");
        }
    }
    Ok((oomtrace, tests))
}
