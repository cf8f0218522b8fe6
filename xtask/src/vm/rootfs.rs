//! The Debian 12 userland of `cargo xtask vm-systemd`: debootstrap's minbase with systemd as
//! init, trimmed, packed once as a cpio archive the kernel unpacks as its whole root file system
//! (initramfs, tmpfs), with `/init` pointing at systemd. Cached under target/vm: rebuilt only
//! when the recipe below changes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util;

/// Debian release and mirror.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Beyond minbase: systemd as PID 1 (systemd-sysv), D-Bus (systemctl talks to it on a live
/// system) and jq (the guest's checks read the agent's JSON).
const INCLUDE: &str = "systemd,systemd-sysv,dbus,jq";
/// Where the guest's check unit is enabled; the unit itself comes with each run's archive.
pub(super) const CHECK_UNIT: &str = "oomtrace-vmcheck.service";
/// Bumped whenever `configure` changes, so that a cached rootfs is rebuilt.
const RECIPE: &str = "2";

/// Returns the cached archive of the rootfs, building it first if needed.
pub(super) fn ensure(vm_dir: &Path) -> Result<PathBuf> {
    let dir = vm_dir.join("systemd-rootfs");
    let archive = vm_dir.join("systemd-rootfs.cpio");
    let stamp = vm_dir.join("systemd-rootfs.stamp");
    let want = format!("{SUITE} {MIRROR} {INCLUDE} recipe {RECIPE}\n");
    if archive.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&want) {
        eprintln!("vm-systemd: cached rootfs {}", archive.display());
        return Ok(archive);
    }
    let _ = std::fs::remove_file(&stamp);
    let tmp = vm_dir.join("systemd-rootfs.tmp");
    for d in [&tmp, &dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    std::fs::create_dir_all(vm_dir)?;
    let started = Instant::now();
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&tmp)
        .arg(MIRROR);
    eprintln!("==> [vm-systemd] {}", util::describe(&cmd));
    util::run_checked(&mut cmd).context("debootstrap failed (is deb.debian.org reachable?)")?;
    eprintln!(
        "vm-systemd: debootstrap took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    configure(&tmp)?;
    std::fs::rename(&tmp, &dir)?;
    pack(&dir, &archive)?;
    std::fs::write(&stamp, want)?;
    eprintln!(
        "vm-systemd: rootfs {} ({} MiB) in {:.1}s",
        archive.display(),
        std::fs::metadata(&archive)?.len() >> 20,
        started.elapsed().as_secs_f64()
    );
    Ok(archive)
}

/// Trims what a test machine never reads and sets systemd up for a serial console.
fn configure(root: &Path) -> Result<()> {
    for trim in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
        "var/cache/debconf/templates.dat-old",
    ] {
        let p = root.join(trim);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            std::fs::create_dir_all(&p)?;
        }
    }
    write(root, "etc/hostname", "oomtrace-vm\n")?;
    // Only errors on the console from systemd: the checks' lines stay readable.
    write(
        root,
        "etc/systemd/system.conf.d/oomtrace-vm.conf",
        "[Manager]\nShowStatus=error\n",
    )?;
    let system = root.join("etc/systemd/system");
    // No login prompt on the console the checks print to (there is no udev either, so the
    // getty would wait for its device forever).
    for unit in ["serial-getty@ttyS0.service", "getty@tty1.service"] {
        symlink("/dev/null", &system.join(unit))?;
    }
    let wants = system.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    symlink(
        &format!("/etc/systemd/system/{CHECK_UNIT}"),
        &wants.join(CHECK_UNIT),
    )?;
    // The kernel runs /init of an initramfs (rdinit=/init): systemd, as PID 1. Without
    // /etc/initrd-release systemd boots this root as the real one.
    symlink("/lib/systemd/systemd", &root.join("init"))?;
    Ok(())
}

fn write(root: &Path, rel: &str, text: &str) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {target}", link.display()))
}

/// Packs `dir` as a newc archive with GNU cpio (owners, modes, symlinks and hard links kept).
fn pack(dir: &Path, archive: &Path) -> Result<()> {
    let out = std::fs::File::create(archive)
        .with_context(|| format!("creating {}", archive.display()))?;
    let script = "find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --quiet";
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(Stdio::from(out))
        .status()
        .context("failed to run find | cpio")?;
    if !status.success() {
        bail!("packing {} failed ({status})", dir.display());
    }
    Ok(())
}
