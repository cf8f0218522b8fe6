//! `oomtrace uninstall`: detaches the programs an agent left pinned and removes its pin
//! directory.
use std::path::PathBuf;

use crate::capture::pin;

#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// The agent's pin directory (its --pin-dir).
    #[arg(
        long,
        env = "OOMTRACE_PIN_DIR",
        default_value = pin::DEFAULT_PIN_DIR,
        value_name = "DIR"
    )]
    pub pin_dir: PathBuf,
}

pub fn run(args: &UninstallArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let dir = args.pin_dir.display();
    match pin::uninstall(&args.pin_dir)? {
        0 => writeln!(out, "nothing pinned at {dir}")?,
        n => writeln!(
            out,
            "removed {dir}: {n} pinned state{} detached",
            if n == 1 { "" } else { "s" }
        )?,
    }
    Ok(())
}
