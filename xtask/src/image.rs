//! `cargo xtask image`: the container image of `deploy/Dockerfile`, built offline with buildah
//! from this host's release binary.
//!
//! No registry is reached. The runtime base is made here from the binary's own shared libraries
//! (what `ldd` resolves: glibc, libgcc_s and the dynamic loader), committed as
//! `localhost/oomtrace-base:<version>`; the Dockerfile then takes it through its
//! `RUNTIME_IMAGE` argument, the binary through `BINARY_FROM=prebuilt`, and its build stage is
//! never run. The image is tagged both `localhost/oomtrace:<version>` and with the name the
//! DaemonSet pulls (`ghcr.io/oomtrace/oomtrace:<version>`, `imagePullPolicy: IfNotPresent`), so
//! that `podman kube play` of the pod template finds it.
//!
//! Podman and buildah are given a `containers.conf` of their own (the `CONTAINERS_CONF` of
//! [`containers_conf`]): on hybrid cgroup hosts like this one, crun refuses to run, runc with the
//! cgroupfs manager works, and podman's default `nofile` ulimit fails there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::util;

/// The image's version tag, oomtrace's (the workspace's, which xtask shares).
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The local name of the image.
const LOCAL_NAME: &str = "localhost/oomtrace";
/// The name deploy/base/daemonset.yaml pulls.
const DAEMONSET_NAME: &str = "ghcr.io/oomtrace/oomtrace";
/// The base made from the binary's libraries.
const BASE_NAME: &str = "localhost/oomtrace-base";

/// The variable through which `cargo xtask test` tells tests/image.rs which image to run.
pub(crate) const IMAGE_ENV: &str = "OOMTRACE_TEST_IMAGE";

/// The podman/buildah settings this host needs (see the module's doc).
const CONTAINERS_CONF: &str = "\
# Written by `cargo xtask image`: podman and buildah settings for this host.
[containers]
# podman's default nofile ulimit cannot be set on every host; keep the runtime's own.
default_ulimits = []

[engine]
# Hybrid cgroup v1/v2 hosts: crun refuses them, runc with the cgroupfs manager works (the
# containers' cgroups are then /libpod_parent/libpod-<id>).
cgroup_manager = \"cgroupfs\"
runtime = \"runc\"
";

/// `cargo xtask image`'s options.
#[derive(clap::Args, Debug)]
pub(crate) struct ImageArgs {}

/// Builds the image and prints its local name on stdout.
pub(crate) fn run(_args: &ImageArgs) -> Result<()> {
    let image = build()?;
    println!("{image}");
    Ok(())
}

/// Where this build's files go: `target/image/`.
fn work_dir() -> PathBuf {
    util::host_target_dir(&util::workspace_root()).join("image")
}

/// Writes the podman/buildah settings file and returns its path, for `CONTAINERS_CONF`.
pub(crate) fn containers_conf() -> Result<PathBuf> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("containers.conf");
    std::fs::write(&path, CONTAINERS_CONF)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Builds the release binary, the base and the image; returns the image's local name.
pub(crate) fn build() -> Result<String> {
    crate::bootstrap::ensure_image_tools()?;
    let bin = crate::build()?;
    let conf = containers_conf()?;
    let work = work_dir();

    let context = work.join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context)
            .with_context(|| format!("cannot remove {}", context.display()))?;
    }
    std::fs::create_dir_all(&context)?;
    let staged = context.join("oomtrace");
    // The image carries the binary without its symbol table, as the .deb does.
    util::run_checked(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg("-o")
            .arg(&staged)
            .arg(&bin),
    )?;

    let dangling_before = dangling_images(&conf)?;
    let base = base_image(&staged, &work, &conf)?;
    let local = format!("{LOCAL_NAME}:{VERSION}");
    let daemonset = format!("{DAEMONSET_NAME}:{VERSION}");
    let dockerfile = util::workspace_root().join("deploy/Dockerfile");
    let mut cmd = Command::new("buildah");
    cmd.env("CONTAINERS_CONF", &conf)
        .args(["build", "--pull=never", "--network=none", "--layers=false"])
        .arg("-f")
        .arg(&dockerfile)
        .args(["--build-arg", "BINARY_FROM=prebuilt"])
        .arg("--build-arg")
        .arg(format!("RUNTIME_IMAGE={base}"))
        .arg("--build-arg")
        .arg(format!("VERSION={VERSION}"))
        .args(["-t", &local, "-t", &daemonset])
        .arg(&context)
        // buildah prints the image id on stdout: keep ours for the image's name alone.
        .stdout(std::io::stderr());
    eprintln!("==> {}", util::describe(&cmd));
    util::run_checked(&mut cmd)?;
    // The prebuilt stage and the images these tags named before are left untagged: remove
    // those this build left, and no one else's.
    let ours: Vec<String> = dangling_images(&conf)?
        .into_iter()
        .filter(|id| !dangling_before.contains(id))
        .collect();
    if !ours.is_empty() {
        let mut args = vec!["rmi", "--force"];
        args.extend(ours.iter().map(String::as_str));
        podman_output(&conf, &args)?;
    }
    let size = podman_output(
        &conf,
        &["image", "inspect", "--format", "{{.Size}}", &local],
    )?;
    eprintln!("image: {local} (also {daemonset}), {} bytes", size.trim());
    Ok(local)
}

/// The shared libraries `bin` loads, as `ldd` resolves them: path in the image → file on this
/// host (symlinks followed).
fn shared_libraries(bin: &Path) -> Result<BTreeMap<PathBuf, PathBuf>> {
    let paths = crate::ldd::shared_libraries(bin)?;
    ensure!(
        !paths.is_empty(),
        "ldd found no library for {}",
        bin.display()
    );
    paths
        .into_iter()
        .map(|path| {
            let real = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            Ok((path, real))
        })
        .collect()
}

/// Makes the runtime base (again each time: it takes a fraction of a second): the binary's shared libraries at
/// the paths ldd found them, nothing else. Returns its name.
fn base_image(bin: &Path, work: &Path, conf: &Path) -> Result<String> {
    let libs = shared_libraries(bin)?;
    let rootfs = work.join("base-rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    for (in_image, real) in &libs {
        let dest = rootfs.join(in_image.strip_prefix("/").unwrap_or(in_image));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(real, &dest)
            .with_context(|| format!("cannot copy {} to {}", real.display(), dest.display()))?;
    }
    let name = format!("{BASE_NAME}:{VERSION}");
    let ctr = buildah_output(conf, &["from", "scratch"])?;
    let ctr = ctr.trim();
    let result = (|| {
        let mut copy = Command::new("buildah");
        copy.env("CONTAINERS_CONF", conf)
            .args(["copy", ctr])
            .arg(&rootfs)
            .arg("/");
        util::run_checked(&mut copy)?;
        let listed: Vec<String> = libs.keys().map(|p| p.display().to_string()).collect();
        buildah_output(
            conf,
            &[
                "config",
                "--label",
                &format!(
                    "org.opencontainers.image.description=oomtrace runtime base: {}",
                    listed.join(" ")
                ),
                ctr,
            ],
        )?;
        buildah_output(conf, &["commit", "--rm", ctr, &name])
    })();
    if result.is_err() {
        let _ = Command::new("buildah")
            .env("CONTAINERS_CONF", conf)
            .args(["rm", ctr])
            .status();
    }
    result?;
    eprintln!("base: {name} ({} libraries)", libs.len());
    Ok(name)
}

/// The ids of the untagged images in the store.
fn dangling_images(conf: &Path) -> Result<Vec<String>> {
    let out = podman_output(conf, &["images", "--quiet", "--filter", "dangling=true"])?;
    Ok(out.lines().map(str::to_string).collect())
}

fn buildah_output(conf: &Path, args: &[&str]) -> Result<String> {
    tool_output("buildah", conf, args)
}

fn podman_output(conf: &Path, args: &[&str]) -> Result<String> {
    tool_output("podman", conf, args)
}

fn tool_output(tool: &str, conf: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .env("CONTAINERS_CONF", conf)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {tool}"))?;
    ensure!(
        out.status.success(),
        "`{tool} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).with_context(|| format!("{tool} printed non-UTF-8"))
}
