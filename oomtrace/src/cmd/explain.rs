//! `oomtrace explain`: saved records (or the kernel's own OOM reports) as short reports on why
//! each kill happened.
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
};

use anyhow::Context;
use clap::ValueEnum;
use serde_json::Value;

use crate::{
    capture::kernel_log,
    output::{explain, schema::SCHEMA_VERSION},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainOutput {
    /// A short report per kill.
    Text,
    /// The kill records as JSON Lines (with --kernel-log: each kill as oomtrace builds it from
    /// the log, diagnosis included).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// JSON Lines saved from `oomtrace tail -o json` or the agent (its file, or `kubectl logs`
    /// of the DaemonSet piped in); `-` or nothing reads standard input. `sigkill` records get a
    /// report each: who sent it, the cause, and whether memory was why. Lines that are not
    /// oomtrace records are skipped and counted. With --kernel-log: a saved kernel log
    /// (`dmesg`, `dmesg -T`, `journalctl -k`, `/dev/kmsg` records; `-` reads standard input);
    /// nothing reads what /dev/kmsg still holds.
    pub file: Option<PathBuf>,
    /// Explain the kernel's own OOM reports instead, for kills that happened before oomtrace
    /// ran. Each report says which evidence the kernel log cannot give.
    #[arg(long)]
    pub kernel_log: bool,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// What a pass over the input found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub kills: usize,
    /// `sigkill` records (SIGKILLs other than the OOM killer's).
    pub sigkills: usize,
    /// `memory_pressure` records of a thrashing cgroup.
    pub thrashing: usize,
    /// Lines that were not JSON objects with an `event` key.
    pub skipped: usize,
}

fn open(file: Option<&PathBuf>) -> anyhow::Result<Box<dyn Read>> {
    match file {
        None => Ok(Box::new(std::io::stdin())),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(std::io::stdin())),
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| {
                format!(
                    "cannot read {}: check the path and permissions",
                    p.display()
                )
            })?;
            Ok(Box::new(f))
        }
    }
}

/// Reports every `oom_kill` record in `input`; other events are passed over, other lines
/// counted as skipped.
pub fn explain_records(
    input: impl Read,
    output: ExplainOutput,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for line in BufReader::new(input).lines() {
        let line = line.context("cannot read the input")?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        // `kubectl logs --timestamps` and log shippers may prefix the JSON.
        let json = trimmed.find('{').map_or(trimmed, |i| &trimmed[i..]);
        let Ok(v) = serde_json::from_str::<Value>(json) else {
            summary.skipped += 1;
            continue;
        };
        match v["event"].as_str() {
            Some("oom_kill") => {}
            Some("memory_pressure") if v["thrashing"].is_object() => {
                summary.thrashing += 1;
                match output {
                    ExplainOutput::Text => writeln!(out, "{}", explain::thrashing_report(&v)),
                    ExplainOutput::Json => writeln!(out, "{v}"),
                }
                .context("cannot write the report")?;
                continue;
            }
            Some("sigkill") => {
                summary.sigkills += 1;
                match output {
                    ExplainOutput::Text => writeln!(out, "{}", explain::sigkill_report(&v)),
                    ExplainOutput::Json => writeln!(out, "{v}"),
                }
                .context("cannot write the report")?;
                continue;
            }
            Some(_) => continue,
            None => {
                summary.skipped += 1;
                continue;
            }
        }
        if v["schema"]
            .as_u64()
            .is_some_and(|s| s > u64::from(SCHEMA_VERSION))
        {
            log::warn!(
                "a record has schema {}; this oomtrace reads schema {SCHEMA_VERSION}: some keys may be missed",
                v["schema"]
            );
        }
        summary.kills += 1;
        write_kill(&v, output, out)?;
    }
    Ok(summary)
}

/// Reports every kill in a kernel log: `file` (or standard input for `-`), else /dev/kmsg.
pub fn explain_kernel_log(
    file: Option<&PathBuf>,
    output: ExplainOutput,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let reports = match file {
        Some(_) => {
            let mut text = String::new();
            open(file)?
                .read_to_string(&mut text)
                .context("cannot read the kernel log (is it text?)")?;
            kernel_log::parse_log(&text)
        }
        None => kernel_log::collect_reports(&kernel_log::read_kmsg_all().context(
            "cannot read /dev/kmsg: run as root, or pass a saved log (dmesg > log; oomtrace explain --kernel-log log)",
        )?),
    };
    for r in &reports {
        write_kill(&explain::kernel_log_kill(r), output, out)?;
    }
    Ok(Summary {
        kills: reports.len(),
        sigkills: 0,
        thrashing: 0,
        skipped: 0,
    })
}

fn write_kill(v: &Value, output: ExplainOutput, out: &mut impl Write) -> anyhow::Result<()> {
    match output {
        ExplainOutput::Text => writeln!(out, "{}", explain::report(v)),
        ExplainOutput::Json => writeln!(out, "{v}"),
    }
    .context("cannot write the report")
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let what = args
        .file
        .as_ref()
        .map_or("standard input".to_string(), |p| p.display().to_string());
    let summary = if args.kernel_log {
        explain_kernel_log(args.file.as_ref(), args.output, &mut stdout)?
    } else {
        explain_records(open(args.file.as_ref())?, args.output, &mut stdout)?
    };
    if summary.skipped > 0 {
        log::info!(
            "skipped {} lines of {what} that are not oomtrace records",
            summary.skipped
        );
    }
    if summary.kills == 0 && summary.sigkills == 0 && summary.thrashing == 0 {
        log::warn!(
            "no OOM kill in {what}{}",
            if args.kernel_log {
                ""
            } else {
                " (for kills before oomtrace ran, try --kernel-log)"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_over_other_events_and_counts_non_records() {
        let input = concat!(
            "{\"event\":\"memory_pressure\",\"schema\":1}\n",
            "not json\n",
            "2026-11-26T09:00:00Z {\"event\":\"oom_kill\",\"schema\":1,\"victim\":{\"pid\":5}}\n",
            "{\"x\":1}\n",
        );
        let mut out = Vec::new();
        let s = explain_records(input.as_bytes(), ExplainOutput::Json, &mut out).expect("explain");
        assert_eq!(
            s,
            Summary {
                kills: 1,
                sigkills: 0,
                thrashing: 0,
                skipped: 2
            }
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"event\":\"oom_kill\",\"schema\":1,\"victim\":{\"pid\":5}}\n"
        );
    }
}
