//! `cargo xtask vm-systemd`: the Debian package's unit (deploy/systemd/oomtrace.service) under a
//! real systemd as PID 1. Boots a Debian 12 userland (rootfs.rs) on Debian's cloud kernel under
//! qemu; a unit in the guest installs the .deb (its postinst enables and starts the service),
//! checks the sandbox systemd built around the agent, OOM-kills a transient service and finds
//! the agent's record of it, stops, restarts and removes the package (systemd_check.sh). Each
//! check prints PASS or FAIL lines inside the step markers qemu.rs reads.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cpio::CpioWriter;
use super::{kernel, qemu, rootfs};
use crate::{bootstrap, package, util};

/// The checks the guest runs, in order (the step names of systemd_check.sh).
const CHECKS: &[&str] = &["install", "sandbox", "oom-kill", "stop-restart", "remove"];

/// The guest's check script and the unit that runs it once the system is up.
const CHECK_SCRIPT: &str = include_str!("systemd_check.sh");
const CHECK_SCRIPT_PATH: &str = "/usr/local/sbin/oomtrace-vmcheck";
const CHECK_UNIT_TEXT: &str = "\
[Unit]
Description=oomtrace: checks of the packaged unit under systemd (cargo xtask vm-systemd)
After=multi-user.target

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/usr/local/sbin/oomtrace-vmcheck
";
/// Where the package lands in the guest (systemd_check.sh installs it from there).
const GUEST_DEB: &str = "/root/oomtrace.deb";

/// Guest RAM: the initramfs (about 200 MiB, held twice while the kernel unpacks it), the tmpfs
/// root it becomes, systemd and the 32 MiB services the checks kill.
const MEMORY_MIB: u32 = 2048;

/// `cargo xtask vm-systemd`'s options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SystemdArgs {
    /// Kernel series to boot (one of vm-test's: 6.1 or 6.12).
    #[arg(long, default_value = "6.12")]
    kernel: String,
    /// Rebuild the cached Debian rootfs (target/vm/systemd-rootfs*) even if it is current.
    #[arg(long)]
    rebuild_rootfs: bool,
}

/// Builds the package and the rootfs, boots, and reports each check; fails if one failed.
pub(crate) fn run(args: &SystemdArgs) -> Result<()> {
    let started = Instant::now();
    bootstrap::ensure_systemd_vm_packages()?;
    let deb = package::build(package::DEFAULT_MAINTAINER)?;
    let root = util::workspace_root();
    let vm_dir = util::host_target_dir(&root).join("vm");
    if args.rebuild_rootfs {
        let _ = std::fs::remove_file(vm_dir.join("systemd-rootfs.stamp"));
    }
    let kernel = kernel::fetch(&args.kernel, &vm_dir.join("kernels"))?;
    let base = rootfs::ensure(&vm_dir)?;
    let image = vm_dir.join(format!("systemd-{}.cpio", args.kernel));
    build_image(&base, &deb, &image)?;
    eprintln!(
        "vm-systemd: {} with {} ({} MiB), prepared in {:.1}s",
        kernel.package,
        image.display(),
        std::fs::metadata(&image)?.len() >> 20,
        started.elapsed().as_secs_f64()
    );
    let label = format!("systemd-{}", args.kernel);
    let run = qemu::boot(&qemu::BootSpec {
        label: &label,
        vmlinuz: &kernel.vmlinuz,
        initramfs: &image,
        memory_mib: MEMORY_MIB,
        cpus: 2,
        timeout: Duration::from_secs(20 * 60),
        silence: Duration::from_secs(5 * 60),
    })?;

    eprintln!("==> vm-systemd summary ({})", run.guest);
    eprintln!(
        "  boot to first check {:.1}s, VM {:.1}s, whole step {:.1}s",
        run.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
        run.total.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let mut passed = 0;
    for name in CHECKS {
        let step = run.steps.iter().find(|s| s.name == *name);
        let ok = step.is_some_and(|s| s.rc == Some(0));
        passed += usize::from(ok);
        let took = step.map_or(0.0, |s| s.elapsed.as_secs_f64());
        eprintln!(
            "  check {name:<13} {} {took:>6.1}s",
            if ok { "PASS" } else { "FAIL" }
        );
    }
    if let Some(why) = &run.fatal {
        eprintln!("  FATAL: {why}");
    }
    let failed = CHECKS.len() - passed;
    // In libtest's format, so `cargo xtask test` counts the checks in its total.
    println!(
        "test result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; vm-systemd {}",
        if failed == 0 && run.passed() { "ok" } else { "FAILED" },
        args.kernel
    );
    if failed > 0 || !run.passed() {
        bail!("vm-systemd failed: {failed} of {} checks", CHECKS.len());
    }
    Ok(())
}

/// The cached rootfs archive followed by a second archive with this run's files: the kernel
/// unpacks concatenated archives in order, into the same root.
fn build_image(base: &Path, deb: &Path, image: &Path) -> Result<()> {
    std::fs::copy(base, image)
        .with_context(|| format!("copying {} to {}", base.display(), image.display()))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let deb_bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    w.file(GUEST_DEB, 0o644, &deb_bytes)?;
    w.file(CHECK_SCRIPT_PATH, 0o755, CHECK_SCRIPT.as_bytes())?;
    w.file(
        &format!("/etc/systemd/system/{}", rootfs::CHECK_UNIT),
        0o644,
        CHECK_UNIT_TEXT.as_bytes(),
    )?;
    w.finish()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_frames_every_check_and_powers_off() {
        for name in CHECKS {
            assert!(
                CHECK_SCRIPT.contains(&format!("\nbegin {name}\n")),
                "no step {name}"
            );
        }
        assert_eq!(CHECK_SCRIPT.matches("\nbegin ").count(), CHECKS.len());
        assert!(CHECK_SCRIPT.contains(&format!("DEB={GUEST_DEB}\n")));
        assert!(CHECK_SCRIPT.trim_end().ends_with("systemctl poweroff -ff"));
        assert!(CHECK_UNIT_TEXT.contains(&format!("ExecStart={CHECK_SCRIPT_PATH}\n")));
    }
}
