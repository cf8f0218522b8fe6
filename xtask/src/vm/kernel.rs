//! Debian kernels for the VM matrix: the newest `linux-image-<series>…-cloud-amd64-unsigned`
//! package apt knows, downloaded once and reduced to its `vmlinuz` under `target/vm/kernels/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub(super) struct Kernel {
    /// The series asked for, e.g. `6.1`.
    pub series: String,
    /// The Debian package it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
}

const PREFIX: &str = "linux-image-";
const SUFFIX: &str = "-cloud-amd64-unsigned";

/// The version part of a package name: `6.1.0-50` in `linux-image-6.1.0-50-cloud-amd64-unsigned`.
fn version_of(package: &str) -> Option<&str> {
    package.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)
}

/// Whether `package` is a cloud kernel image of `series` (`6.1` matches `6.1.0-50`, not
/// `6.12.113+deb12`).
fn is_series(package: &str, series: &str) -> bool {
    version_of(package).is_some_and(|v| {
        let mut parts = v.split(['.', '-', '+']);
        let major_minor = format!(
            "{}.{}",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        );
        major_minor == series
    })
}

/// Numeric components of a version, for ordering: `6.12.113+deb12` → [6, 12, 113, 12].
fn sort_key(package: &str) -> Vec<u64> {
    version_of(package)
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The newest package of `series` among `candidates`.
fn newest<'a>(candidates: impl IntoIterator<Item = &'a str>, series: &str) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|p| is_series(p, series))
        .max_by_key(|p| sort_key(p))
}

fn apt_packages() -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", PREFIX])
        .output()
        .context("failed to run apt-cache (the VM kernels come from Debian's archive)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Finds, downloads if needed, and returns the newest kernel of `series`.
pub(super) fn fetch(series: &str, cache: &Path) -> Result<Kernel> {
    let mut packages = apt_packages()?;
    if newest(packages.iter().map(String::as_str), series).is_none() && util::is_root() {
        eprintln!("vm: no {series} kernel in apt's lists; running apt-get update");
        util::apt_get_update()?;
        packages = apt_packages()?;
    }
    let Some(package) = newest(packages.iter().map(String::as_str), series) else {
        return cached(series, cache).with_context(|| {
            format!(
                "apt knows no package {PREFIX}{series}.*{SUFFIX} and none is cached in {}; \
                 add a Debian bookworm source to apt (or run apt-get update)",
                cache.display()
            )
        });
    };
    let dir = cache.join(package);
    let vmlinuz = dir.join("vmlinuz");
    if !vmlinuz.is_file() {
        download(package, &dir)?;
    }
    Ok(Kernel {
        series: series.to_string(),
        package: package.to_string(),
        vmlinuz,
    })
}

/// The newest kernel of `series` already in the cache (when apt cannot help).
fn cached(series: &str, cache: &Path) -> Result<Kernel> {
    let names: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("vmlinuz").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let Some(package) = newest(names.iter().map(String::as_str), series) else {
        bail!("no cached kernel");
    };
    Ok(Kernel {
        series: series.to_string(),
        package: package.to_string(),
        vmlinuz: cache.join(package).join("vmlinuz"),
    })
}

/// `apt-get download` + `dpkg-deb -x`, keeping only `boot/vmlinuz-*` as `dir/vmlinuz`.
fn download(package: &str, dir: &Path) -> Result<()> {
    let work = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    eprintln!("vm: downloading {package}");
    let apt_download = || {
        util::run_checked(
            Command::new("apt-get")
                .current_dir(&work)
                // apt's sandbox user cannot write into root's private directories.
                .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
                // Progress to stderr: stdout carries test results.
                .stdout(std::io::stderr()),
        )
    };
    if apt_download().is_err() {
        // Stale lists name a file the mirror no longer has: refresh them and try once more.
        util::apt_get_update()?;
        apt_download()?;
    }
    let deb = std::fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    let unpacked = work.join("root");
    util::run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let boot = unpacked.join("boot");
    let image = std::fs::read_dir(&boot)
        .with_context(|| format!("{package} has no /boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no /boot/vmlinuz-*"))?;
    std::fs::create_dir_all(dir)?;
    std::fs::rename(&image, dir.join("vmlinuz"))
        .with_context(|| format!("moving {} into the cache", image.display()))?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "linux-image-6.1.0-47-cloud-amd64-unsigned",
        "linux-image-6.1.0-50-cloud-amd64-unsigned",
        "linux-image-6.1.0-50-cloud-amd64-dbg",
        "linux-image-6.1.0-50-amd64-unsigned",
        "linux-image-6.12.107+deb12-cloud-amd64-unsigned",
        "linux-image-6.12.113+deb12-cloud-amd64-unsigned",
        "linux-image-6.12.111+deb12-cloud-amd64-unsigned",
    ];

    #[test]
    fn picks_the_newest_cloud_image_of_each_series() {
        assert_eq!(
            newest(NAMES.iter().copied(), "6.1"),
            Some("linux-image-6.1.0-50-cloud-amd64-unsigned")
        );
        assert_eq!(
            newest(NAMES.iter().copied(), "6.12"),
            Some("linux-image-6.12.113+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(newest(NAMES.iter().copied(), "6.6"), None);
    }
}
