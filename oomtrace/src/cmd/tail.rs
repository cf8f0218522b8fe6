//! `oomtrace tail`: live OOM kills as a table or JSON Lines.
use std::{
    io::{self, Write},
    time::Duration,
};

use log::{info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    capture::tracer::Tracer,
    cmd::args::{FilterArgs, HostLogArgs, KernelArgs, ProcessArgs},
    demo,
    output::{schema, table},
    stream::{EventStream, Item},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One aligned line per victim.
    Table,
    /// The table with Kubernetes names, scope, usage and incident.
    Wide,
    /// JSON Lines (schema v1), one object per victim, flushed per record.
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// After attaching, provoke one real OOM kill of a disposable child in a throwaway 32 MiB
    /// memory cgroup (created and removed by oomtrace), to see a record at once.
    #[arg(long)]
    pub demo: bool,
    /// Exit after N kill records (that pass the filters).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Do not show `memory_pressure` records (cgroups near their limit); kill records still
    /// carry their `pressure` section.
    #[arg(long)]
    pub hide_pressure: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub host_logs: HostLogArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Colour in tables: auto (a terminal, and NO_COLOR unset), always or never.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

impl ColorMode {
    fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && io::stdout().is_terminal()
            }
        }
    }
}

/// Writes one line to stdout and flushes it; `false` when stdout is closed.
fn emit(line: &str) -> bool {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// How long to wait for the demo's record after its child died.
const DEMO_RECORD_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    // Handle SIGTERM/SIGINT from the start, so a signal during attach still exits cleanly.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let tracer = Tracer::start(&args.kernel.tracer_options(true))?;
    info!("attached: {}", tracer.hooks_in_use().join(", "));
    let mut stream = EventStream::new(
        tracer,
        args.host_logs.namer(),
        None,
        args.kernel.pressure.settings(),
        args.process.cache(),
        args.kernel.sigkill.into(),
    );
    let color = args.color.enabled();
    let header = match args.output {
        Output::Table => Some(table::HEADER),
        Output::Wide => Some(table::WIDE_HEADER),
        Output::Json => None,
    };
    if header.is_some_and(|h| !emit(h)) {
        return Ok(());
    }

    let filter = args.filter.filter();
    let mut demo_task = args
        .demo
        .then(|| tokio::task::spawn_blocking(demo::provoke_one_kill));
    let mut demo_deadline: Option<tokio::time::Instant> = None;
    // Held until the loop ends: removing it earlier could beat the record's path lookup.
    let mut demo_cgroup = None;
    let mut printed = 0u64;
    'outer: loop {
        let deadline = demo_deadline;
        tokio::select! {
            batch = stream.next() => {
                for item in batch? {
                    let item = match item {
                        Ok(i) => i,
                        Err(e) => {
                            warn!("skipping malformed record: {e}");
                            continue;
                        }
                    };
                    let (line, kill) = match &item {
                        Item::Kill(k) if filter.matches(&k.event) => (match args.output {
                            Output::Table => table::with_verdict(table::row(&k.event, color), k),
                            Output::Wide => table::with_verdict(table::wide_row(&k.event, color), k),
                            Output::Json => schema::line(&item),
                        }, true),
                        Item::Pressure(ev) if !args.hide_pressure && filter.matches_pressure(ev) => (match args.output {
                            Output::Table | Output::Wide => table::pressure_row(ev, color),
                            Output::Json => schema::line(&item),
                        }, false),
                        Item::Sigkill(s) if filter.matches_sigkill(s) => (match args.output {
                            Output::Table | Output::Wide => table::sigkill_row(s, color),
                            Output::Json => schema::line(&item),
                        }, false),
                        _ => continue,
                    };
                    if !emit(&line) {
                        break 'outer;
                    }
                    if kill {
                        printed += 1;
                    }
                    if args.count.is_some_and(|n| printed >= n) {
                        break 'outer;
                    }
                }
            }
            done = async { demo_task.as_mut().expect("guarded").await }, if demo_task.is_some() => {
                demo_task = None;
                let kill = done??;
                info!("demo: child {} in {} ended with {}", kill.pid, kill.cgroup.path(), kill.status);
                demo_cgroup = Some(kill.cgroup);
                demo_deadline = Some(tokio::time::Instant::now() + DEMO_RECORD_GRACE);
            }
            () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() && printed == 0 => {
                anyhow::bail!("the demo child was OOM-killed but no record arrived within {DEMO_RECORD_GRACE:?}");
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    if let Some(task) = demo_task {
        // Let the demo finish so its cgroup is removed.
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Err(e))) => warn!("demo: {e}"),
            Ok(Ok(Ok(kill))) => drop(kill.cgroup),
            _ => {}
        }
    }
    drop(demo_cgroup);
    let lost = stream.tracer.events_lost();
    if lost > 0 {
        warn!("{lost} records were lost: the ring buffer was full");
    }
    Ok(())
}
