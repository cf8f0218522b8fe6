//! `cargo xtask package`: a Debian package of the agent for a single server (a VPS, bare
//! metal): the release binary, the systemd unit of `deploy/systemd/`, its defaults file and the
//! maintainer scripts of `deploy/debian/`, built with `dpkg-deb --root-owner-group`.
//!
//! The layout is assembled in `target/package/build/debian/oomtrace/` (where
//! `dpkg-shlibdeps` expects a package's files) and the package written to
//! `target/package/oomtrace_<version>_<arch>.deb`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::util;

/// The package's name, and its files' names.
const NAME: &str = "oomtrace";
/// The version, oomtrace's (the workspace's, which xtask shares).
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The `Maintainer:` field unless `--maintainer` says otherwise.
pub(crate) const DEFAULT_MAINTAINER: &str =
    "oomtrace maintainers <oomtrace@users.noreply.github.com>";

/// Where each file goes in the package, its source in the repository and its mode.
const FILES: &[(&str, &str, u32)] = &[
    (
        "lib/systemd/system/oomtrace.service",
        "deploy/systemd/oomtrace.service",
        0o644,
    ),
    (
        "etc/default/oomtrace",
        "deploy/systemd/oomtrace.default",
        0o644,
    ),
];
/// Maintainer scripts, from `deploy/debian/`.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];
/// Files under /etc that dpkg keeps when the admin changed them.
const CONFFILES: &[&str] = &["/etc/default/oomtrace"];

/// The variable through which `cargo xtask test` tells tests/package.rs where the package is.
pub(crate) const DEB_ENV: &str = "OOMTRACE_TEST_DEB";

/// `cargo xtask package`'s options.
#[derive(clap::Args, Debug)]
pub(crate) struct PackageArgs {
    /// The `Maintainer:` field of the package.
    #[arg(long, default_value = DEFAULT_MAINTAINER)]
    maintainer: String,
}

/// Builds, then writes the package and prints its path on stdout.
pub(crate) fn run(args: &PackageArgs) -> Result<()> {
    let deb = build(&args.maintainer)?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds the release binary and the package; returns the package's path.
pub(crate) fn build(maintainer: &str) -> Result<PathBuf> {
    crate::bootstrap::ensure_package_tools()?;
    let bin = crate::build()?;
    check_version(&bin)?;
    let root = util::workspace_root();
    let out_dir = util::host_target_dir(&root).join("package");
    let work = out_dir.join("build");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    let stage = work.join("debian").join(NAME);

    let staged_bin = stage.join("usr/bin").join(NAME);
    install_file(&bin, &staged_bin, 0o755)?;
    // Debian ships binaries without their symbol tables (the release profile keeps them).
    util::run_checked(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg(&staged_bin),
    )?;
    for (dest, src, mode) in FILES {
        install_file(&root.join(src), &stage.join(dest), *mode)?;
    }
    let doc = stage.join("usr/share/doc").join(NAME);
    write_file(&doc.join("copyright"), COPYRIGHT, 0o644)?;
    write_changelog(&root, &doc.join("changelog.gz"), maintainer)?;

    let arch = dpkg_architecture()?;
    // dpkg-shlibdeps finds the package's root by its DEBIAN directory.
    let control_dir = stage.join("DEBIAN");
    std::fs::create_dir_all(&control_dir)
        .with_context(|| format!("cannot create {}", control_dir.display()))?;
    let depends = shlib_depends(&work, &staged_bin)?;
    let installed_kib = du_kib(&stage)?;
    write_file(
        &control_dir.join("control"),
        &control(&arch, &depends, maintainer, installed_kib),
        0o644,
    )?;
    write_file(
        &control_dir.join("conffiles"),
        &(CONFFILES.join("\n") + "\n"),
        0o644,
    )?;
    for script in SCRIPTS {
        install_file(
            &root.join("deploy/debian").join(script),
            &control_dir.join(script),
            0o755,
        )?;
    }
    write_file(&control_dir.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    open_dirs(&stage)?;

    let deb = out_dir.join(format!("{NAME}_{VERSION}_{arch}.deb"));
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb)
        .stdout(std::io::stderr());
    eprintln!("==> {}", util::describe(&cmd));
    util::run_checked(&mut cmd)?;
    Ok(deb)
}

/// `changelog.gz`, which Debian policy asks of every package: one entry for this version,
/// dated as the commit it is built from (now, outside a git checkout).
fn write_changelog(root: &Path, dest: &Path, maintainer: &str) -> Result<()> {
    let stdout_of = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|d| !d.is_empty())
    };
    let date = stdout_of(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%aD"]),
    )
    .or_else(|| stdout_of(Command::new("date").arg("-R")))
    .context("cannot date the changelog (git log -1, date -R)")?;
    let text = changelog(maintainer, &date);
    let plain = dest.with_extension("");
    write_file(&plain, &text, 0o644)?;
    // -n: no name or time stamp in the header; -f: replace an earlier one.
    util::run_checked(Command::new("gzip").args(["-9nf"]).arg(&plain))?;
    set_mode(dest, 0o644)
}

/// A Debian changelog of one entry.
fn changelog(maintainer: &str, date: &str) -> String {
    format!(
        "{NAME} ({VERSION}) unstable; urgency=medium\n\n  \
         * oomtrace {VERSION}, packaged by `cargo xtask package`.\n\n \
         -- {maintainer}  {date}\n"
    )
}

/// The binary must say the version the package will carry.
fn check_version(bin: &Path) -> Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        said == format!("{NAME} {VERSION}"),
        "{} --version says {said:?}, the workspace version is {VERSION}",
        bin.display()
    );
    Ok(())
}

/// `dpkg --print-architecture`: the host's, which the binary was built for.
fn dpkg_architecture() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("cannot run dpkg --print-architecture")?;
    ensure!(out.status.success(), "dpkg --print-architecture failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `Depends:` of the binary's shared libraries, as `dpkg-shlibdeps` computes them from the
/// installed libraries' symbols files (the newest symbol version each needs), e.g.
/// `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`. It runs in `work`, beside a minimal
/// `debian/control`, on the binary staged at `debian/oomtrace/usr/bin/oomtrace`.
fn shlib_depends(work: &Path, staged_bin: &Path) -> Result<String> {
    write_file(
        &work.join("debian/control"),
        &format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n"),
        0o644,
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    // Relative, as in a source package: how it recognises the binary's package directory.
    let rel = staged_bin.strip_prefix(work).unwrap_or(staged_bin);
    cmd.current_dir(work).arg("-O").arg(rel);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", util::describe(&cmd)))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "`{}` failed: {stderr}",
        util::describe(&cmd)
    );
    ensure!(stderr.trim().is_empty(), "dpkg-shlibdeps warned: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let depends = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(depends.to_string())
}

/// The `DEBIAN/control` file.
fn control(arch: &str, depends: &str, maintainer: &str, installed_kib: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://github.com/oomtrace/oomtrace\n\
         Description: records every Linux OOM kill with its cause (eBPF)\n \
         oomtrace hooks the kernel's OOM killer with eBPF and writes a JSON record of\n \
         every kill at the moment it happens: the victim, the process that triggered it,\n \
         the cgroup whose limit was hit with its usage and memory breakdown, and a\n \
         verdict on why. This package runs the agent as the systemd service\n \
         oomtrace.service: records in the journal and /var/lib/oomtrace/oomtrace.jsonl,\n \
         Prometheus metrics on 127.0.0.1:9742.\n"
    )
}

/// `DEBIAN/md5sums`: every regular file outside DEBIAN/, by its path in the package.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    files.sort();
    let mut cmd = Command::new("md5sum");
    cmd.current_dir(stage).args(&files);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", util::describe(&cmd)))?;
    ensure!(out.status.success(), "`{}` failed", util::describe(&cmd));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Paths (relative to `stage`) of the regular files under `dir`, DEBIAN/ left out.
fn collect_files(stage: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let rel = path.strip_prefix(stage).unwrap_or(&path);
        if rel == Path::new("DEBIAN") {
            continue;
        }
        if path.is_dir() {
            collect_files(stage, &path, out)?;
        } else {
            out.push(rel.display().to_string());
        }
    }
    Ok(())
}

/// `Installed-Size:`: the files' sizes in KiB, rounded up per file as dpkg-gencontrol does.
fn du_kib(stage: &Path) -> Result<u64> {
    let mut files = Vec::new();
    collect_files(stage, stage, &mut files)?;
    let mut kib = 0;
    for f in files {
        let len = std::fs::metadata(stage.join(&f))?.len();
        kib += len.div_ceil(1024);
    }
    Ok(kib)
}

fn install_file(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::copy(src, dest)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    set_mode(dest, mode)
}

fn write_file(dest: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(dest, text).with_context(|| format!("cannot write {}", dest.display()))?;
    set_mode(dest, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Every directory under `dir` 0755 (dpkg-deb records them as they are, and a umask of 077
/// would leave them closed to other users).
fn open_dirs(dir: &Path) -> Result<()> {
    set_mode(dir, 0o755)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            open_dirs(&path)?;
        }
    }
    Ok(())
}

/// `/usr/share/doc/oomtrace/copyright` (machine-readable format).
const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: oomtrace
Source: https://github.com/oomtrace/oomtrace

Files: *
Copyright: 2026 the oomtrace authors
License: MIT or Apache-2.0
 oomtrace is dual-licensed under the MIT license and the Apache License 2.0, at
 your option. On Debian systems the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_has_every_field_and_a_folded_description() {
        let c = control("amd64", "libc6 (>= 2.34)", DEFAULT_MAINTAINER, 42);
        for field in [
            "Package: oomtrace\n",
            &format!("Version: {VERSION}\n"),
            "Architecture: amd64\n",
            "Installed-Size: 42\n",
            "Depends: libc6 (>= 2.34)\n",
        ] {
            assert!(c.contains(field), "{field:?} missing from {c}");
        }
        // Every line after the synopsis is a continuation: one leading space.
        let desc = c.split_once("Description: ").expect("Description").1;
        for line in desc.lines().skip(1) {
            assert!(line.starts_with(' ') && !line.starts_with("  "), "{line:?}");
        }
        assert!(c.ends_with('\n'));
    }

    #[test]
    fn changelog_parses_as_dpkg_reads_it() {
        let text = changelog(DEFAULT_MAINTAINER, "Thu, 26 Nov 2026 17:38:37 +0000");
        let dir = std::env::temp_dir().join(format!("xtask-changelog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("changelog");
        std::fs::write(&file, &text).expect("write");
        let out = Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(&file)
            .args(["-S", "Version"])
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        let Ok(out) = out else {
            eprintln!("SKIPPED: dpkg-parsechangelog is missing (dpkg-dev)");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), VERSION);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
