//! `cargo xtask bootstrap`: installs the Debian packages and the bpf-linker that the eBPF
//! build needs. Idempotent, and fast (a few `dpkg-query` calls) when everything is present.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// Debian packages, by purpose. Adding a group is one line.
#[rustfmt::skip]
pub(crate) const APT_GROUPS: &[(&str, &[&str])] = &[
    // Debian's rustc/cargo (/usr/bin) with a prebuilt `core` for bpfel-unknown-none.
    ("ebpf-rust", &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"]),
    // What bpf-linker is built against (LLVM 22).
    ("bpf-linker", &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"]),
];

/// What `cargo xtask vm-test` needs besides the eBPF toolchain: qemu to boot the kernels and
/// a static busybox for the guest's userland. Installed on demand, not by `bootstrap`.
pub(crate) const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static"];

/// What the integration tests need on the host: a real container runtime (the tests start
/// their own containerd daemon, with its own state directories) and a real Node.js (the verdict
/// tests' heap caps); for tests/package.rs, `systemd-analyze` (package systemd; installing it
/// starts nothing), strace (the system calls the agent makes, against the unit's filter) and
/// lintian. Installed by `cargo xtask test`.
pub(crate) const TEST_PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "nodejs",
    "systemd",
    "strace",
    "lintian",
];

/// What `cargo xtask vm-systemd` needs besides the VM packages: debootstrap for the Debian
/// userland, GNU cpio to pack it.
pub(crate) const SYSTEMD_VM_PACKAGES: &[&str] = &["qemu-system-x86", "debootstrap", "cpio"];

/// What `cargo xtask package` needs besides dpkg-deb: dpkg-shlibdeps (dpkg-dev), strip
/// (binutils).
pub(crate) const PACKAGE_PACKAGES: &[&str] = &["dpkg-dev", "binutils"];

/// What `cargo xtask image` and tests/image.rs use: buildah builds the image; podman runs it
/// (with runc, which the hybrid cgroup layout needs, as crun refuses it) and plays the
/// DaemonSet's pod template (`podman kube play`), whose pod needs catatonit (the pause
/// image's init), the CNI plugins and iptables (the pod's network and its published port).
pub(crate) const IMAGE_PACKAGES: &[&str] = &[
    "buildah",
    "podman",
    "runc",
    "catatonit",
    "containernetworking-plugins",
    "iptables",
];

/// Installs the image tools that are missing.
pub(crate) fn ensure_image_tools() -> Result<()> {
    ensure_packages("cargo xtask image", IMAGE_PACKAGES)
}

/// Installs the packaging tools that are missing.
pub(crate) fn ensure_package_tools() -> Result<()> {
    ensure_packages("cargo xtask package", PACKAGE_PACKAGES)
}

/// Installs what `cargo xtask vm-systemd` needs that is missing.
pub(crate) fn ensure_systemd_vm_packages() -> Result<()> {
    ensure_packages("cargo xtask vm-systemd", SYSTEMD_VM_PACKAGES)
}

/// Installs the VM packages that are missing.
pub(crate) fn ensure_vm_packages() -> Result<()> {
    ensure_packages("vm-test", VM_PACKAGES)
}

/// Installs the integration tests' packages that are missing, and promtool.
pub(crate) fn ensure_test_packages() -> Result<()> {
    ensure_packages("the integration tests", TEST_PACKAGES)?;
    ensure_promtool()
}

/// Installs whichever of `packages` are missing, without recommends.
fn ensure_packages(who: &str, packages: &'static [&'static str]) -> Result<()> {
    let missing_now = || -> Vec<&'static str> {
        packages
            .iter()
            .copied()
            .filter(|p| !package_installed(p))
            .collect()
    };
    let missing = missing_now();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root() || util::find_in_path("apt-get").is_none() {
        bail!(
            "{who} need {} (not installed); install them as root with:\n  {}",
            missing.join(" "),
            apt_command(&missing)
        );
    }
    // Without recommends: qemu's GUI, UEFI firmware and block plugins are not needed.
    install(&missing, &missing_now, &["--no-install-recommends"])
}

pub(crate) const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_FEATURE: &str = "llvm-22";

pub(crate) fn run() -> Result<()> {
    let missing = missing_packages();
    let linker_ok = bpf_linker_ok();
    if !missing.is_empty() {
        if !util::is_root() || util::find_in_path("apt-get").is_none() {
            bail!(missing_report(&missing, linker_ok));
        }
        install(&missing, &missing_packages, &[])?;
    }
    if !linker_ok {
        install_bpf_linker()?;
    }
    eprintln!("bootstrap: Debian packages and bpf-linker {BPF_LINKER_VERSION} are installed");
    Ok(())
}

fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn missing_packages() -> Vec<&'static str> {
    APT_GROUPS
        .iter()
        .flat_map(|(_, pkgs)| pkgs.iter().copied())
        .filter(|pkg| !package_installed(pkg))
        .chain(missing_kubectl())
        .collect()
}

/// The Debian package with `kubectl`, which tests/deploy.rs runs (`kubectl kustomize`).
/// Bookworm's is kubectl 1.20, whose kustomize v2.0.3 deploy/ is written for too; it is
/// installed only when no kubectl is on PATH, so that a newer one is kept.
const KUBECTL_PACKAGE: &str = "kubernetes-client";

fn missing_kubectl() -> Option<&'static str> {
    util::find_in_path("kubectl")
        .is_none()
        .then_some(KUBECTL_PACKAGE)
}

fn apt_command(missing: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q {}",
        missing.join(" ")
    )
}

fn bpf_linker_command() -> String {
    format!(
        "LLVM_PREFIX={LLVM_PREFIX} PATH={LLVM_PREFIX}/bin:$PATH cargo install bpf-linker \
         --version {BPF_LINKER_VERSION} --locked --no-default-features --features {LLVM_FEATURE}"
    )
}

/// What is missing and how to install it, for when we cannot run apt-get ourselves.
fn missing_report(missing: &[&str], linker_ok: bool) -> String {
    let why = if util::find_in_path("apt-get").is_none() {
        "apt-get is not available"
    } else {
        "not running as root"
    };
    let mut msg = format!(
        "{why}, cannot install the missing Debian packages: {}\n\
         install them as root with:\n  {}",
        missing.join(" "),
        apt_command(missing)
    );
    if !linker_ok {
        msg.push_str(&format!(
            "\nbpf-linker {BPF_LINKER_VERSION} is missing too; after the packages, install it \
             with:\n  {}",
            bpf_linker_command()
        ));
    }
    msg.push_str("\nthen run `cargo xtask bootstrap` again");
    msg
}

/// `apt-get install`s `missing` (apt's output on stderr: a caller's stdout may carry test
/// results), then checks with `still_missing`.
fn install(
    missing: &[&str],
    still_missing: &dyn Fn() -> Vec<&'static str>,
    extra: &[&str],
) -> Result<()> {
    eprintln!("bootstrap: installing {}", missing.join(" "));
    util::apt_get_update()?;
    util::run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q"])
            .args(extra)
            .args(missing)
            .stdout(std::io::stderr()),
    )?;
    let still = still_missing();
    if !still.is_empty() {
        bail!("apt-get install did not install: {}", still.join(" "));
    }
    Ok(())
}

/// Whether `bpf-linker --version` (from PATH or the cargo bin dir) reports the pinned
/// version.
pub(crate) fn bpf_linker_ok() -> bool {
    let Some(linker) = util::find_in_path("bpf-linker") else {
        return false;
    };
    Command::new(linker)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|word| word == BPF_LINKER_VERSION)
        })
        .unwrap_or(false)
}

fn install_bpf_linker() -> Result<()> {
    let llvm_bin = Path::new(LLVM_PREFIX).join("bin");
    let mut cmd = util::host_cargo();
    util::clean_cargo_env(&mut cmd);
    cmd.env("LLVM_PREFIX", LLVM_PREFIX)
        .env("PATH", util::path_with(&[PathBuf::from(&llvm_bin)])?)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--locked",
            "--no-default-features",
            "--features",
            LLVM_FEATURE,
        ]);
    eprintln!(
        "bootstrap: installing bpf-linker {BPF_LINKER_VERSION} (about a minute): {}",
        util::describe(&cmd)
    );
    util::run_checked(&mut cmd).with_context(|| {
        format!(
            "installing bpf-linker failed; to install it by hand run:\n  {}",
            bpf_linker_command()
        )
    })?;
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} is still not found on PATH or in {}",
            util::cargo_bin_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "~/.cargo/bin".into())
        );
    }
    Ok(())
}

/// The Debian package that carries `promtool`, which tests/deploy.rs runs on
/// `deploy/monitoring/` (`promtool check rules`, `promtool test rules`). Installing it would
/// also install and start a Prometheus server, so only its `promtool` is unpacked.
const PROMTOOL_PACKAGE: &str = "prometheus";
/// Where the unpacked `promtool` goes: on root's PATH, outside any package's files.
const PROMTOOL_DIR: &str = "/usr/local/bin";
/// Its path inside the package's data archive.
const PROMTOOL_IN_DEB: &str = "./usr/bin/promtool";

/// Makes `promtool` available unless one is on PATH already (then nothing is downloaded):
/// `apt-get download prometheus`, and `usr/bin/promtool` from it (`dpkg-deb --fsys-tarfile`)
/// into [`PROMTOOL_DIR`]. The package is not installed: no Prometheus server, no service.
pub(crate) fn ensure_promtool() -> Result<()> {
    if util::find_in_path("promtool").is_some() {
        return Ok(());
    }
    let tools = ["apt-get", "dpkg-deb", "tar"];
    if !util::is_root() || tools.iter().any(|t| util::find_in_path(t).is_none()) {
        bail!(
            "promtool is missing (deploy/monitoring's tests run it); as root, run \
             `cargo xtask bootstrap`, or unpack it from Debian's {PROMTOOL_PACKAGE} package:\n  \
             apt-get download {PROMTOOL_PACKAGE} && dpkg-deb --fsys-tarfile {PROMTOOL_PACKAGE}_*.deb \
             | tar -xO {PROMTOOL_IN_DEB} > {PROMTOOL_DIR}/promtool && chmod 755 {PROMTOOL_DIR}/promtool"
        );
    }
    let work = std::env::temp_dir().join(format!("oomtrace-promtool-{}", std::process::id()));
    let result = unpack_promtool(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Downloads the package into `work` and installs its promtool.
fn unpack_promtool(work: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!(
        "bootstrap: unpacking promtool from Debian's {PROMTOOL_PACKAGE} package into {PROMTOOL_DIR}"
    );
    let download = || {
        util::run_checked(
            Command::new("apt-get")
                // As root, into a directory apt's sandbox user (_apt) may not write.
                .args([
                    "download",
                    "-q",
                    "-o",
                    "APT::Sandbox::User=root",
                    PROMTOOL_PACKAGE,
                ])
                .current_dir(work)
                .stdout(std::io::stderr()),
        )
    };
    if download().is_err() {
        // A fresh machine's package lists may be missing or stale.
        util::apt_get_update()?;
        download()?;
    }
    let deb = std::fs::read_dir(work)
        .with_context(|| format!("reading {}", work.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("failed to start dpkg-deb")?;
    let archive = dpkg.stdout.take().context("dpkg-deb's stdout")?;
    let untar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(work)
        .arg(PROMTOOL_IN_DEB)
        .stdin(archive)
        .status()
        .context("failed to start tar");
    let dpkg_status = dpkg.wait().context("waiting for dpkg-deb")?;
    let untar = untar?;
    if !dpkg_status.success() || !untar.success() {
        bail!(
            "unpacking {PROMTOOL_IN_DEB} from {} failed (dpkg-deb: {dpkg_status}, tar: {untar})",
            deb.display()
        );
    }
    let unpacked = work.join(PROMTOOL_IN_DEB);
    let dest = Path::new(PROMTOOL_DIR).join("promtool");
    let staged = Path::new(PROMTOOL_DIR).join(".promtool.new");
    std::fs::create_dir_all(PROMTOOL_DIR).with_context(|| format!("creating {PROMTOOL_DIR}"))?;
    std::fs::copy(&unpacked, &staged)
        .with_context(|| format!("copying {} to {}", unpacked.display(), staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", staged.display()))?;
    // Renamed into place whole: a run cut short leaves no half-written promtool on PATH.
    std::fs::rename(&staged, &dest)
        .with_context(|| format!("moving {} to {}", staged.display(), dest.display()))?;
    let version = Command::new(&dest)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", dest.display()))?;
    if !version.status.success() {
        bail!("{} --version failed ({})", dest.display(), version.status);
    }
    // Older promtools print their version on stderr.
    let text = [&version.stdout, &version.stderr]
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .concat();
    eprintln!(
        "bootstrap: {}",
        text.lines().next().unwrap_or("promtool installed")
    );
    Ok(())
}
