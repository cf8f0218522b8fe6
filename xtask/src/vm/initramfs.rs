//! The guest's root filesystem: busybox, the `/init` script, the test binaries at the paths
//! they were built for (so `CARGO_BIN_EXE_*` paths baked into them resolve), and every shared
//! library `ldd` says they need.

use std::collections::BTreeSet;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cpio::CpioWriter;
use crate::util;

pub(super) const BUSYBOX: &str = "/bin/busybox";

/// A host binary to place in the guest.
pub(super) struct Binary {
    pub host: PathBuf,
    pub guest: String,
}

/// Writes the archive to `out`; returns its size in bytes. Debug info is stripped from the
/// binaries (with `strip` when present) to keep the guest's RAM for the tests.
pub(super) fn build(out: &Path, init: &str, binaries: &[Binary], scratch: &Path) -> Result<u64> {
    check_static(Path::new(BUSYBOX))?;
    std::fs::create_dir_all(scratch)?;
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    for dir in ["/dev", "/proc", "/sys", "/tmp", "/run", "/root"] {
        w.dir(dir)?;
    }
    w.char_device("/dev/console", 5, 1)?;
    w.file("/init", 0o755, init.as_bytes())?;
    w.file(BUSYBOX, 0o755, &read(Path::new(BUSYBOX))?)?;
    let mut libraries = BTreeSet::new();
    for b in binaries {
        libraries.extend(crate::ldd::shared_libraries(&b.host)?);
        let data = stripped(&b.host, scratch)?;
        w.file(&b.guest, 0o755, &data)?;
    }
    for lib in &libraries {
        // Copy the file a symlink points to, under the name the loader looks for.
        w.file(&lib.to_string_lossy(), 0o755, &read(lib)?)?;
    }
    w.finish()?;
    Ok(std::fs::metadata(out)?.len())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn check_static(busybox: &Path) -> Result<()> {
    if !busybox.is_file() {
        bail!(
            "{} is missing: install Debian's busybox-static (cargo xtask bootstrap does)",
            busybox.display()
        );
    }
    if !crate::ldd::shared_libraries(busybox)?.is_empty() {
        bail!(
            "{} is dynamically linked: replace Debian's busybox with busybox-static",
            busybox.display()
        );
    }
    Ok(())
}

/// Absolute paths of the shared objects `ldd` resolves for `bin`, the loader included.
fn stripped(bin: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let Some(strip) = util::find_in_path("strip") else {
        return read(bin);
    };
    let name = bin.file_name().context("binary without a name")?;
    let out = scratch.join(name);
    util::run_checked(
        Command::new(strip)
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(bin),
    )?;
    read(&out)
}
